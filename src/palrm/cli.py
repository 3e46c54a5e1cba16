"""`palrm` command line: train, evaluate, adapt, score, quickstart.

`main(argv) -> int` runs in-process (tests call it directly). Errors reach the user as one clear line
and a non-zero exit; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from palrm.errors import ConfigError, PalrmError

logger = logging.getLogger("palrm.cli")

EXIT_ERROR = 2

# Modules that add more subcommands: each defines add_parser(subparsers) and sets `func` defaults.
COMMAND_MODULES: list[str] = [
    "palrm.export",
    "palrm.serve.cli",
    "palrm.scale_cli",  # extends `train` (--finetune, --resume, torchrun)
    "palrm.bench.cli",
]

# CLI shortcut flag -> dotted config key (everything else: --set SECTION.FIELD=VALUE)
SHORTCUTS = {
    "kind": ("model.kind", str, "model: pal-a, pal-b or btl"),
    "k": ("model.k", int, "number of prototypes K"),
    "d": ("model.d", int, "latent preference dimension"),
    "link": ("model.link", str, "euclidean or cosine"),
    "users": ("model.users", str, "mixture or partition"),
    "epochs": ("train.epochs", int, "maximum epochs"),
    "batch_size": ("train.batch_size", int, "pairs per minibatch"),
    "lr": ("train.lr", float, "learning rate of the shared parameters"),
    "seed": ("train.seed", int, "random seed"),
    "device": ("train.device", str, "torch device (cpu, cuda, ...)"),
    "encoder": ("encoder.spec", str, "text encoder: minilm, hashing[:DIM], st:PATH, hf:PATH[:mean|last]"),
    "cache_dir": ("encoder.cache_dir", str, "embedding cache directory"),
}


# ---------------------------------------------------------------------------------------------- helpers
def _add_config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("configuration (YAML file, then overrides; every problem is reported at once)")
    g.add_argument("--config", metavar="YAML", help="YAML config with sections model, train, adapt, encoder (see configs/)")
    g.add_argument("--set", metavar="SECTION.FIELD=VALUE", action="append", default=[],
                   help="override any config field, e.g. --set model.hidden=[512,256] (repeatable)")
    for name, (_, typ, help_text) in SHORTCUTS.items():
        g.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None, help=f"{help_text} (sets {SHORTCUTS[name][0]})")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    from palrm.data.io import ColumnMap

    p.add_argument("--data", required=required, metavar="FILE", help="pairs: JSONL, CSV or Parquet (user_id, prompt, chosen, rejected)")
    p.add_argument("--embeddings", metavar="FILE", help="precomputed vectors (.npy, .safetensors, .parquet); then prompt/chosen/rejected hold row ids")
    g = p.add_argument_group("column names (when your files use other names)")
    for field_name, flag in ColumnMap.CLI_FLAGS.items():
        g.add_argument(flag, dest=f"col_{field_name}", metavar="NAME", help=f"column holding {field_name} (default: {field_name})")


def _columns(args):
    from palrm.data.io import ColumnMap

    kw = {f: getattr(args, f"col_{f}") for f in ColumnMap.CLI_FLAGS if getattr(args, f"col_{f}", None)}
    return ColumnMap(**kw)


def _load(args, path: str | None = None):
    from palrm.data.io import load_pairs

    return load_pairs(path or args.data, columns=_columns(args), embeddings=getattr(args, "embeddings", None))


def _build_config(args):
    from palrm.config import PALConfig

    raw: dict[str, Any] = {}
    problems: list[str] = []
    if getattr(args, "config", None):
        path = Path(args.config)
        if not path.is_file():
            raise ConfigError(f"--config {path}: file not found")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"--config {path}: not valid YAML ({exc})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"--config {path}: expected a mapping of sections (model, train, adapt, encoder)")
    overrides: dict[str, Any] = {}
    for item in getattr(args, "set", []) or []:
        key, eq, value = item.partition("=")
        if not eq or "." not in key:
            problems.append(f"--set {item!r}: expected SECTION.FIELD=VALUE, e.g. --set model.k=4")
            continue
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            overrides[key.strip()] = value
    for name, (dotted, _, _) in SHORTCUTS.items():
        if getattr(args, name, None) is not None:
            overrides[dotted] = getattr(args, name)
    if getattr(args, "no_progress", False):
        overrides["train.progress"] = False
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if not isinstance(raw.get(section, {}), dict):
            problems.append(f"section {section!r} of the config is not a mapping")
            continue
        raw.setdefault(section, {})[key] = value
    try:
        config = PALConfig.from_dict(raw, where=args.config or "config")
    except ConfigError as exc:
        if problems:
            raise ConfigError(str(exc) + "\n  - " + "\n  - ".join(problems)) from None
        raise
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    return config


def _read_rows(path: str):
    """Rows to score from JSONL / CSV / Parquet; must have a `response` column."""
    import pandas as pd

    from palrm.errors import DataFormatError

    p = Path(path)
    readers = {".jsonl": lambda: pd.read_json(p, lines=True), ".json": lambda: pd.read_json(p, lines=True),
               ".csv": lambda: pd.read_csv(p), ".parquet": lambda: pd.read_parquet(p)}
    if not p.is_file():
        raise DataFormatError(f"--input {p}: file not found")
    if p.suffix.lower() not in readers:
        raise DataFormatError(f"--input {p}: unknown file type {p.suffix!r}; use .jsonl, .csv or .parquet")
    try:
        rows = readers[p.suffix.lower()]()
    except Exception as exc:  # pandas raises many types for unreadable files
        raise DataFormatError(f"--input {p}: could not be read ({exc})") from None
    if "response" not in rows:
        raise DataFormatError(f"--input {p}: no 'response' column (found: {', '.join(map(str, rows.columns))})")
    if rows["response"].isna().any():
        bad = [int(i) + 1 for i in rows.index[rows["response"].isna()][:5]]
        raise DataFormatError(f"--input {p}: empty response in rows {bad}")
    return rows


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=float))


def _metrics_line(name: str, m: dict) -> str:
    acc = "n/a" if m.get("accuracy") is None else f"{m['accuracy']:.4f}"
    ll = "n/a" if m.get("log_loss") is None else f"{m['log_loss']:.4f}"
    uma = "n/a" if m.get("user_mean_accuracy") is None else f"{m['user_mean_accuracy']:.4f}"
    return f"{name:<12} accuracy {acc}  log-loss {ll}  user-mean accuracy {uma}  ({m.get('n_pairs', 0)} pairs, {m.get('n_users', 0)} users)"


# ---------------------------------------------------------------------------------------------- commands
def train_splits(args, config):
    """(train, validation or None, test or None) from --data / --val, a split column, or --val-frac."""
    from palrm.data.splits import split_pairs

    data = _load(args)
    val = _load(args, args.val) if args.val else None
    test = None
    if val is None:
        splits = split_pairs(data, val_frac=args.val_frac, test_frac=0.0 if data.split is None else 0.2, seed=config.train.seed)
        data, val = splits.train, splits.validation
        test = splits.test if len(splits.test) else None
    return data, (val if val is not None and len(val) else None), test


def finish_run(args, config, model, data, val, test, out: Path, log_path: Path, extra: dict | None = None, note: str = "") -> None:
    """Save the model, write metrics.json and print the summary (or the JSON) of a training run."""
    model.save(out / "model")
    metrics = {"train": model.evaluate(data), "validation": model.evaluate(val) if val is not None else None}
    if test is not None:
        metrics["test"] = model.evaluate(test)
    for m in metrics.values():
        if m:
            m.pop("per_user", None)
    metrics.update(extra or {})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if args.json:
        _print_json(metrics)
        return
    print(f"trained {config.model.kind} (K={config.model.k}) on {len(data)} pairs of {len(model.users_)} users; "
          f"{len(model.history_)} epochs{note}")
    for name, m in metrics.items():
        if isinstance(m, dict):
            print(_metrics_line(name, m))
    print(f"model: {out / 'model'}   log: {log_path}   metrics: {out / 'metrics.json'}")


def cmd_train(args) -> int:
    from palrm import PALRewardModel

    config = _build_config(args)
    out = Path(args.output_dir)
    data, val, test = train_splits(args, config)
    out.mkdir(parents=True, exist_ok=True)
    config.to_yaml(out / "config.yaml")
    log_path = out / "train_log.jsonl"
    log_path.unlink(missing_ok=True)
    model = PALRewardModel(config).fit(data, val, log_path=log_path)
    finish_run(args, config, model, data, val, test, out, log_path)
    return 0


def cmd_evaluate(args) -> int:
    from palrm import PALRewardModel

    model = PALRewardModel.load(args.model)
    if args.no_progress:
        model.config_.train.progress = False
    metrics = model.evaluate(_load(args))
    if not args.per_user:
        metrics.pop("per_user", None)
    if args.json:
        _print_json(metrics)
    else:
        print(_metrics_line("evaluation", metrics))
        unk = metrics["unknown_users"]
        if unk["n_pairs"]:
            print(f"not scored: {unk['n_pairs']} pairs of {unk['n_users']} unknown users ({', '.join(unk['user_ids'][:5])}...); "
                  "onboard them with `palrm adapt`")
    return 0


def cmd_adapt(args) -> int:
    from palrm import PALRewardModel

    model = PALRewardModel.load(args.model)
    config = model.config_
    for dotted, value in (("adapt.steps", args.steps), ("adapt.lr", args.adapt_lr), ("adapt.prior", args.prior)):
        if value is not None:
            section, _, key = dotted.partition(".")
            setattr(getattr(config, section), key, value)
    problems = config.problems()
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    config.train.progress = not args.no_progress
    data = _load(args)
    held_out = None
    if data.split is not None:  # a split column: adapt on the non-test rows, report accuracy on the test rows
        is_test = data.split == "test"
        held_out = data.select(is_test) if is_test.any() else None
        data = data.select(~is_test)
        if len(data) == 0:
            raise ConfigError(f"{args.data}: every row has split=test; nothing is left to adapt on")
    before = set(model.users_)
    model.adapt(data, reset=args.reset)
    target = Path(args.output or args.model)
    model.save(target)
    users = data.users_present()
    result = {
        "model": str(target),
        "n_pairs": len(data),
        "new_users": [u for u in users if u not in before],
        "updated_users": [u for u in users if u in before],
        "weights": {u: [round(float(x), 6) for x in model.user_weights(u)] for u in users[:1000]},
    }
    if held_out is not None:
        result["held_out"] = {k: v for k, v in model.evaluate(held_out).items() if k != "per_user"}
    if args.json:
        _print_json(result)
    else:
        print(f"adapted {len(users)} users ({len(result['new_users'])} new, {len(result['updated_users'])} updated) "
              f"on {len(data)} pairs; model saved to {target}")
        if held_out is not None:
            print(_metrics_line("held out", result["held_out"]) + "  (rows with split=test, not used to adapt)")
    return 0


def mixture_from_args(args):
    """Explicit mixture weights from --population / --group K / --weights w1,..,wK (None: use --user)."""
    if getattr(args, "population", False):
        return "population"
    if getattr(args, "group", None) is not None:
        return f"group:{args.group}"
    if getattr(args, "weights", None):
        try:
            return [float(x) for x in args.weights.split(",")]
        except ValueError:
            raise ConfigError(f"--weights {args.weights!r}: expected comma-separated numbers, e.g. 0.5,0.3,0.2") from None
    return None


def cmd_score(args) -> int:
    import pandas as pd

    from palrm import PALRewardModel

    model = PALRewardModel.load(args.model)
    model.config_.train.progress = False
    weights = mixture_from_args(args)
    if args.input:
        rows = _read_rows(args.input)
    else:
        if not args.response:
            raise ConfigError("give --response TEXT (repeatable) or --input FILE with response[, prompt, user_id] columns")
        rows = pd.DataFrame({"prompt": args.prompt or "", "response": args.response})
    rows["prompt"] = rows["prompt"].fillna("").astype(str) if "prompt" in rows else ""
    rows["user_id"] = rows["user_id"].astype(object).where(rows["user_id"].notna(), args.user) if "user_id" in rows else args.user
    if model.net_.has_users and weights is None and rows["user_id"].isna().any():
        raise ConfigError("say whose reward: --user ID, --population, --group K, --weights w1,...,wK, or a user_id column")
    results = []
    for (user, prompt), group in rows.groupby(["user_id", "prompt"], sort=False, dropna=False):
        user = None if pd.isna(user) else str(user)
        rewards = model.reward(user, prompt, [str(r) for r in group["response"]], weights=weights)
        results += [{"user_id": user, "prompt": prompt, "response": str(x), "reward": r} for x, r in zip(group["response"], rewards)]
    if args.json:
        _print_json(results)
    else:
        for r in results:
            print(f"{r['reward']:+.4f}\t{r['response']}")
    return 0


def cmd_quickstart(args) -> int:
    from palrm.quickstart import run_quickstart

    run_quickstart(output_dir=args.output_dir, encoder=args.encoder, seed=args.seed, progress=not args.no_progress,
                   small=args.small, printer=print)
    return 0


# ---------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="palrm", description="Personalized reward models with PAL (pluralistic alignment).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--version", action="version", version=f"palrm {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train PAL-A / PAL-B / BTL on a pair file", description="Train a reward model; writes OUTPUT_DIR/{config.yaml,train_log.jsonl,metrics.json,model/}.")
    _add_data_args(p)
    p.add_argument("--val", metavar="FILE", help="validation pairs (default: a split column in --data, else --val-frac of each user's pairs)")
    p.add_argument("--val-frac", type=float, default=0.1, help="fraction of each user's pairs held out for early stopping when there is no --val (default 0.1)")
    p.add_argument("--output-dir", "-o", default="runs/train", help="run directory (default runs/train)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    _add_config_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="accuracy and log-loss of a saved model on a pair file")
    p.add_argument("--model", required=True, metavar="DIR", help="model directory (RUN_DIR/model)")
    _add_data_args(p)
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--per-user", action="store_true", help="include per-user accuracy")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("adapt", help="onboard new users (or update known ones) from a few pairs; shared weights stay fixed")
    p.add_argument("--model", required=True, metavar="DIR", help="model directory to start from")
    _add_data_args(p)
    p.add_argument("--output", metavar="DIR", help="where to save the adapted model (default: overwrite --model, atomically)")
    p.add_argument("--reset", action="store_true", help="re-learn known users from the population instead of their current weights")
    p.add_argument("--steps", type=int, help="optimisation steps (adapt.steps)")
    p.add_argument("--adapt-lr", type=float, help="learning rate (adapt.lr)")
    p.add_argument("--prior", choices=["none", "gaussian", "mixture"], help="none = maximum likelihood (paper); gaussian or mixture = MAP toward the known users")
    p.add_argument("--json", action="store_true", help="print the learned weights as JSON")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=cmd_adapt)

    p = sub.add_parser("score", help="rewards r(user, prompt, response)")
    p.add_argument("--model", required=True, metavar="DIR", help="model directory")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--user", metavar="ID", help="a known user")
    who.add_argument("--population", action="store_true", help="the mean user's weights")
    who.add_argument("--group", type=int, metavar="K", help="prototype K alone (one-hot weights)")
    who.add_argument("--weights", metavar="W1,...,WK", help="explicit mixture weights")
    p.add_argument("--prompt", default="", help="the prompt (default: none)")
    p.add_argument("--response", action="append", metavar="TEXT", help="a response to score (repeatable)")
    p.add_argument("--input", metavar="FILE", help="JSONL/CSV/Parquet with response[, prompt, user_id] columns")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("quickstart", help="the main job: Persona benchmark, MiniLM, PAL vs BTL, seen and unseen users")
    p.add_argument("--output-dir", "-o", default="runs/quickstart", help="where results.json, the plot and model/ go")
    p.add_argument("--encoder", default="minilm", help="text encoder (default minilm; 'hashing' needs no model weights)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--small", action="store_true", help="a smaller set (fewer users), for smoke tests")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=cmd_quickstart)
    for module_name in COMMAND_MODULES:  # subcommands that live beside the code they drive
        importlib.import_module(module_name).add_parser(sub)
    return parser


def _version() -> str:
    from palrm import __version__

    return __version__


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the record (not the stream of the first call)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_ERROR
    root = logging.getLogger("palrm")
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if args.debug else logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return args.func(args)
    except PalrmError as exc:
        if args.debug:
            raise
        print(f"palrm {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entrypoint() -> None:  # console script
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
