"""`palrm train`: one process, torchrun data-parallel, fine-tuning, checkpoints, `--resume`, `--memmap`.

A plain run (no --finetune, --checkpoint-every, --resume, --memmap, not under torchrun) writes
OUTPUT_DIR/{config.yaml, train_log.jsonl, metrics.json, model/}. Otherwise the run is resumable:
OUTPUT_DIR/checkpoint/ after every epoch (and every N steps when asked) and run_args.json with the
data arguments. Under `torchrun --nproc_per_node N -m palrm train ...` every rank trains on its
share of each batch and only rank 0 writes config, log, checkpoints, model and metrics.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from palrm import distributed as pdist
from palrm.cli.flags import (
    add_config_flags,
    add_data_flags,
    add_json_flag,
    add_shortcut,
    config_from_args,
    load_data,
    metrics_line,
    print_json,
    write_rejected,
)
from palrm.errors import ConfigError

logger = logging.getLogger(__name__)

RUN_ARGS = "run_args.json"
DATA_ARGS = ("data", "val", "embeddings", "val_frac", "memmap", "val_memmap", "on_invalid")
SCALE_SHORTCUTS = ("finetune", "grad_accum", "checkpoint_every")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train PAL-A / PAL-B / BTL on a pair file",
                              description="Train a reward model; writes OUTPUT_DIR/{config.yaml,train_log.jsonl,metrics.json,model/}.")
    add_data_flags(p, required=False)  # --data may come from RUN_DIR/run_args.json with --resume
    p.add_argument("--val", metavar="FILE", help="validation pairs, every row used for validation only (default: the split "
                   "column of --data, else --val-frac of each user's pairs); a split column in --data still decides "
                   "which of its rows are trained on (split=train) and tested on (split=test)")
    p.add_argument("--val-frac", type=float, default=0.1, help="fraction of each user's pairs held out for early stopping "
                   "when there is neither --val nor a split column (default 0.1)")
    p.add_argument("--output-dir", "-o", default="runs/train", help="run directory (default runs/train)")
    add_json_flag(p, "print the metrics as JSON")
    add_config_flags(p)
    g = p.add_argument_group("scale: fine-tuning, data-parallel (torchrun), checkpoints")
    add_shortcut(g, "finetune", None, "fine-tune the foundation model with the PAL heads (needs --encoder hf:DIR)")
    add_shortcut(g, "grad_accum", int, "micro-batches per optimizer step", metavar="N")
    add_shortcut(g, "checkpoint_every", int, "write RUN_DIR/checkpoint every N optimizer steps (always at epoch ends)", metavar="N")
    g.add_argument("--memmap", metavar="DIR",
                   help="train on a memory-mapped pair directory larger than memory (palrm.data.memmap) instead of --data")
    g.add_argument("--val-memmap", metavar="DIR", help="validation pairs as a memory-mapped directory (same users)")
    g.add_argument("--resume", metavar="RUN_DIR",
                   help="continue an interrupted run from RUN_DIR/checkpoint with the run's config and data arguments")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    if args.resume:
        _apply_resume(args)
    if not args.data and not args.memmap:
        raise ConfigError("give --data FILE, --memmap DIR, or --resume RUN_DIR to continue a run")
    if args.data and args.memmap:
        raise ConfigError("give either --data FILE or --memmap DIR, not both")
    config = config_from_args(args, SCALE_SHORTCUTS)
    if _resumable(args, config):
        return _train_resumable(args, config)
    from palrm import PALRewardModel

    out = Path(args.output_dir)
    data, val, test = train_splits(args, config)
    out.mkdir(parents=True, exist_ok=True)
    config.to_yaml(out / "config.yaml")
    log_path = out / "train_log.jsonl"
    log_path.unlink(missing_ok=True)
    model = PALRewardModel(config).fit(data, val, log_path=log_path)
    finish_run(args, config, model, data, val, test, out, log_path)
    return 0


def train_splits(args, config):
    """(train, validation or None, test or None) of --data and --val.

    A split column in --data assigns its rows (train / validation / test); --val FILE replaces the
    validation part (every row of FILE validates, whatever its own split column says), so split=test
    rows of --data are never trained on. Without either, --val-frac of each user's pairs validate.
    """
    from palrm.data.splits import split_pairs

    data = load_data(args)
    val = test = None
    if data.split is not None or not args.val:
        parts = split_pairs(data, val_frac=args.val_frac, test_frac=0.0, seed=config.train.seed)
        data, val, test = parts.train, parts.validation, parts.test
    if args.val:
        if val is not None and len(val):
            logger.warning("%s: its %d split=validation rows are not used; --val %s is the validation set",
                           args.data, len(val), args.val)
        val = load_data(args, args.val)
    if len(data) == 0:
        raise ConfigError(f"{args.data}: no pairs to train on (its split column assigns no row to train)")
    return data, (val if val is not None and len(val) else None), (test if test is not None and len(test) else None)


def finish_run(args, config, model, data, val, test, out: Path, log_path: Path, extra: dict | None = None, note: str = "") -> None:
    """Save the model, write metrics.json (and rejected.jsonl, group_labels.json when there are any) and
    print the summary (or the JSON) of a training run."""
    model.save(out / "model")
    write_rejected(args, out)
    if data.meta.get("group_labels"):
        (out / "group_labels.json").write_text(json.dumps(data.meta["group_labels"], indent=2))
    config = model.config_  # k="auto" resolved to the selected model
    selection = getattr(model, "selection_", None)
    if selection:
        from palrm.evaluation.selection import SELECTION_FILE, format_table

        record = {**selection, "resolved": {s: config.to_dict()[s] for s in ("model", "train", "adapt")}}
        (out / SELECTION_FILE).write_text(json.dumps(record, indent=2))
    metrics = {"train": model.evaluate(data), "validation": model.evaluate(val) if val is not None else None}
    if test is not None:
        metrics["test"] = model.evaluate(test)
    for m in metrics.values():
        if m:
            m.pop("per_user", None)
    metrics.update(extra or {})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if args.json:
        print_json(metrics)
        return
    if selection:
        print("model selection (validation log-loss of known users, and of held-out training users onboarded from n pairs):")
        print(format_table(selection))
        print(f"selection: {out / SELECTION_FILE}")
    offset = "" if config.model.offset == "none" else f" + {config.model.offset} offset"
    structure = f"{config.model.kind}{offset}" if config.model.kind == "btl" else f"{config.model.kind} (K={config.model.k}{offset})"
    print(f"trained {structure} on {len(data)} pairs of {len(model.users_)} users; "
          f"{len(model.history_)} epochs{note}")
    if model.prior_choice_ and model.net_.has_users:
        from palrm.evaluation.selection import describe_prior_choice

        print(describe_prior_choice(model.prior_choice_))
    for name, m in metrics.items():
        if isinstance(m, dict):
            print(metrics_line(name, m))
    print(f"model: {out / 'model'}   log: {log_path}   metrics: {out / 'metrics.json'}")


# ---------------------------------------------------------------------------------------------- resumable runs
def _resumable(args, config) -> bool:
    from palrm.core import needs_streaming_fit as needs_scaled_fit

    return bool(args.resume or args.checkpoint_every or args.memmap) or needs_scaled_fit(config)


def _apply_resume(args) -> None:
    run_dir = Path(args.resume)
    saved_path = run_dir / RUN_ARGS
    if not (run_dir / "config.yaml").is_file() or not saved_path.is_file():
        raise ConfigError(f"--resume {run_dir}: not a resumable run directory (config.yaml and {RUN_ARGS} are "
                          "written by palrm train with --checkpoint-every, --finetune or under torchrun)")
    if args.config or args.set:
        raise ConfigError("--resume uses the run's own config.yaml; drop --config / --set")
    saved = json.loads(saved_path.read_text())
    for key in (*DATA_ARGS, *[k for k in saved if k.startswith("col_")]):
        if getattr(args, key, None) in (None, 0.1) and saved.get(key) is not None:
            setattr(args, key, saved[key])
    args.config = str(run_dir / "config.yaml")
    args.output_dir = str(run_dir)


def _train_resumable(args, config) -> int:
    from palrm import PALRewardModel

    info = pdist.init_from_env(config.train.device)
    try:
        out = Path(args.output_dir)
        log_path = out / "train_log.jsonl"
        data = val = test = None
        if not args.memmap:
            data, val, test = train_splits(args, config)
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            if not args.resume:
                config.to_yaml(out / "config.yaml")
                saved = {k: getattr(args, k, None) for k in DATA_ARGS}
                saved.update({k: v for k, v in vars(args).items() if k.startswith("col_") and v})
                (out / RUN_ARGS).write_text(json.dumps(saved, indent=2))
                log_path.unlink(missing_ok=True)
        pdist.barrier()
        if not info.is_main:
            config.train.progress = False
        if args.memmap:
            model = PALRewardModel(config).fit_memmap(args.memmap, args.val_memmap, log_path=log_path, checkpoint_dir=out,
                                                      resume=bool(args.resume))
            if info.is_main:
                _finish_memmap_run(args, config, model, out, log_path)
            pdist.barrier()
            return 0
        model = PALRewardModel(config).fit(data, val, log_path=log_path, checkpoint_dir=out, resume=bool(args.resume))
        if info.is_main:
            finish_run(args, config, model, data, val, test, out, log_path, extra={"world_size": info.world_size},
                       note=f" on {info.world_size} process(es); checkpoint: {out / 'checkpoint'}")
        pdist.barrier()
    finally:
        pdist.shutdown()
    return 0


def _finish_memmap_run(args, config, model, out: Path, log_path: Path) -> None:
    """Save the model and report the last epoch's figures (memmap data is not loaded again for evaluation)."""
    model.save(out / "model")
    last = model.history_[-1] if model.history_ else {}
    metrics = {"history_last_epoch": last, "n_users": len(model.users_), "epochs": len(model.history_)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if args.json:
        print_json(metrics)
        return
    val = f", validation accuracy {last['val_accuracy']:.4f}" if "val_accuracy" in last else ""
    print(f"trained {config.model.kind} (K={config.model.k}) on memory-mapped pairs of {len(model.users_)} users; "
          f"{len(model.history_)} epochs, train loss {last.get('train_loss', float('nan')):.4f}{val}")
    print(f"model: {out / 'model'}   log: {log_path}   checkpoint: {out / 'checkpoint'}")
