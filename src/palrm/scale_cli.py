"""`palrm train` at scale: fine-tuning, torchrun data-parallel runs, checkpoints and `--resume RUN_DIR`.

This module extends the existing `train` subcommand (through cli.COMMAND_MODULES) with:

    --finetune                 fine-tune the backbone (finetune.enabled; --encoder hf:DIR[:mean|last])
    --grad-accum N             micro-batches per optimizer step (scale.grad_accum_steps)
    --checkpoint-every N       a resumable checkpoint every N optimizer steps (scale.checkpoint_every)
    --resume RUN_DIR           continue the run in RUN_DIR with its config.yaml and its data arguments

A plain single-process run without these options is the unchanged `palrm train`. Otherwise the run
is resumable (RUN_DIR/checkpoint/ after every epoch, and every N steps when asked). Under
`torchrun --nproc_per_node N -m palrm train ...` every rank trains on its share of each batch and
only rank 0 writes config, log, checkpoints, model and metrics.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from palrm import distributed as pdist
from palrm.errors import ConfigError

logger = logging.getLogger(__name__)

RUN_ARGS = "run_args.json"
_DATA_ARGS = ("data", "val", "embeddings", "val_frac", "memmap", "val_memmap")


def add_parser(subparsers) -> None:
    p = subparsers.choices["train"]
    for action in p._actions:  # --data may come from RUN_DIR/run_args.json with --resume
        if action.dest == "data":
            action.required = False
    g = p.add_argument_group("scale: fine-tuning, data-parallel (torchrun), checkpoints")
    g.add_argument("--finetune", action="store_true",
                   help="fine-tune the foundation model with the PAL heads (sets finetune.enabled; needs --encoder hf:DIR)")
    g.add_argument("--grad-accum", type=int, metavar="N", help="micro-batches per optimizer step (scale.grad_accum_steps)")
    g.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="write RUN_DIR/checkpoint every N optimizer steps (scale.checkpoint_every; always at epoch ends)")
    g.add_argument("--memmap", metavar="DIR",
                   help="train on a memory-mapped pair directory larger than memory (palrm.data.memmap) instead of --data")
    g.add_argument("--val-memmap", metavar="DIR", help="validation pairs as a memory-mapped directory (same users)")
    g.add_argument("--resume", metavar="RUN_DIR",
                   help="continue an interrupted run from RUN_DIR/checkpoint with the run's config and data arguments")
    p.set_defaults(func=cmd_train)


def _scaled(args, config) -> bool:
    from palrm.training.scaled import needs_scaled_fit

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
    for key in (*_DATA_ARGS, *[k for k in saved if k.startswith("col_")]):
        if getattr(args, key, None) in (None, 0.1) and saved.get(key) is not None:
            setattr(args, key, saved[key])
    args.config = str(run_dir / "config.yaml")
    args.output_dir = str(run_dir)


def cmd_train(args) -> int:
    from palrm import cli

    if args.resume:
        _apply_resume(args)
    if not args.data and not args.memmap:
        raise ConfigError("give --data FILE, --memmap DIR, or --resume RUN_DIR to continue a run")
    if args.data and args.memmap:
        raise ConfigError("give either --data FILE or --memmap DIR, not both")
    for name, dotted in (("finetune", "finetune.enabled"), ("grad_accum", "scale.grad_accum_steps"),
                         ("checkpoint_every", "scale.checkpoint_every")):
        value = getattr(args, name)
        if value not in (None, False):
            args.set = [*args.set, f"{dotted}={json.dumps(value)}"]
    config = cli._build_config(args)
    if not _scaled(args, config):
        return cli.cmd_train(args)
    return _train_scaled(args, config)


def _train_scaled(args, config) -> int:
    from palrm import PALRewardModel, cli

    info = pdist.init_from_env(config.train.device)
    try:
        out = Path(args.output_dir)
        log_path = out / "train_log.jsonl"
        data = val = test = None
        if not args.memmap:
            data, val, test = cli.train_splits(args, config)
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            if not args.resume:
                config.to_yaml(out / "config.yaml")
                saved = {k: getattr(args, k, None) for k in _DATA_ARGS}
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
            cli.finish_run(args, config, model, data, val, test, out, log_path, extra={"world_size": info.world_size},
                           note=f" on {info.world_size} process(es); checkpoint: {out / 'checkpoint'}")
        pdist.barrier()
    finally:
        pdist.shutdown()
    return 0


def _finish_memmap_run(args, config, model, out: Path, log_path: Path) -> None:
    """Save the model and report the last epoch's figures (memmap data is not loaded again for evaluation)."""
    from palrm import cli

    model.save(out / "model")
    last = model.history_[-1] if model.history_ else {}
    metrics = {"history_last_epoch": last, "n_users": len(model.users_), "epochs": len(model.history_)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if args.json:
        cli._print_json(metrics)
        return
    val = f", validation accuracy {last['val_accuracy']:.4f}" if "val_accuracy" in last else ""
    print(f"trained {config.model.kind} (K={config.model.k}) on memory-mapped pairs of {len(model.users_)} users; "
          f"{len(model.history_)} epochs, train loss {last.get('train_loss', float('nan')):.4f}{val}")
    print(f"model: {out / 'model'}   log: {log_path}   checkpoint: {out / 'checkpoint'}")
