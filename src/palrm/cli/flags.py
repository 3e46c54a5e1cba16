"""Flags and helpers shared by the subcommands (each flag group is defined here once).

Configuration reaches a command through one path: a YAML file (`--config`), `--set KEY=VALUE`
and the shortcut flags become one mapping of overrides, applied by `PALConfig.updated` /
`PALConfig.from_yaml` with the name -> key map of `palrm.config.OVERRIDE_NAMES`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterable
from typing import Any

import yaml

from palrm.config import PALConfig, dotted_key
from palrm.errors import ConfigError


def k_value(text: str) -> int | str:
    """--k: a positive integer or auto."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of prototypes or auto, got {text!r}") from None


# Shortcut flag (its name in palrm.config.OVERRIDE_NAMES) -> (type, help); `--set` covers every other field.
SHORTCUTS: dict[str, tuple[type, str]] = {
    "kind": (str, "model: pal-a, pal-b or btl"),
    "k": (k_value, "number of prototypes K, or auto (default: choose BTL / K / offsets on validation data, selection.json)"),
    "offset": (str, "personal offset: none, latent or input (models/offset.py)"),
    "d": (int, "latent preference dimension"),
    "link": (str, "euclidean or cosine"),
    "users": (str, "mixture or partition"),
    "epochs": (int, "maximum epochs"),
    "batch_size": (int, "pairs per minibatch"),
    "lr": (float, "learning rate of the shared parameters"),
    "seed": (int, "random seed"),
    "device": (str, "torch device (cpu, cuda, cuda:1, mps)"),
    "encoder": (str, "text encoder: minilm, hashing[:DIM], st:PATH, hf:PATH[:mean|last]"),
    "cache_dir": (str, "embedding cache directory"),
}


# ---------------------------------------------------------------------------------------------- configuration
def add_shortcut(group, name: str, typ: type | None, help_text: str, **kw: Any) -> None:
    """A flag that sets the config key of override name `name` (store_true when `typ` is None)."""
    flag = "--" + name.replace("_", "-")
    help_text = f"{help_text} (sets {dotted_key(name)})"
    if typ is None:
        group.add_argument(flag, dest=name, action="store_true", default=None, help=help_text, **kw)
    else:
        group.add_argument(flag, dest=name, type=typ, default=None, help=help_text, **kw)


def add_config_flags(p: argparse.ArgumentParser):
    """--config YAML, --set KEY=VALUE, the SHORTCUTS and --no-progress; returns the group for more shortcuts."""
    g = p.add_argument_group("configuration (YAML file, then overrides; every problem is reported at once)")
    g.add_argument("--config", metavar="YAML", help="YAML config with sections model, train, adapt, encoder, finetune, scale (see configs/)")
    g.add_argument("--set", metavar="SECTION.FIELD=VALUE", action="append", default=[],
                   help="override any config field, e.g. --set model.hidden=[512,256] (repeatable)")
    for name, (typ, help_text) in SHORTCUTS.items():
        add_shortcut(g, name, typ, help_text)
    add_progress_flag(g)
    return g


def add_progress_flag(p) -> None:
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_device_flag(p, help_text: str = "torch device (cpu, cuda, cuda:1, mps; default: as saved)") -> None:
    p.add_argument("--device", default=None, help=help_text)


def overrides_from_args(args, names: Iterable[str] = ()) -> tuple[dict[str, Any], list[str]]:
    """(overrides, problems) from --set, the shortcut flags `names` (plus SHORTCUTS) and --no-progress."""
    overrides: dict[str, Any] = {}
    problems: list[str] = []
    for item in getattr(args, "set", None) or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            problems.append(f"--set {item!r}: expected SECTION.FIELD=VALUE, e.g. --set model.k=4")
            continue
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            overrides[key.strip()] = value
    for name in (*SHORTCUTS, *names):
        if getattr(args, name, None) is not None:
            overrides[name] = getattr(args, name)
    if getattr(args, "no_progress", False):
        overrides["train.progress"] = False
    return overrides, problems


def config_from_args(args, names: Iterable[str] = ()) -> PALConfig:
    """The run's config: --config YAML (or the defaults), then the overrides; every problem at once."""
    overrides, problems = overrides_from_args(args, names)
    try:
        if getattr(args, "config", None):
            config = PALConfig.from_yaml(args.config, overrides)
        else:
            config = PALConfig().updated(overrides)
    except ConfigError as exc:
        if problems:
            raise ConfigError(str(exc) + "\n  - " + "\n  - ".join(problems)) from None
        raise
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    return config


def reconfigure(model, overrides: dict[str, Any]) -> None:
    """Apply validated `overrides` (names or dotted keys) to a loaded model's config."""
    if not overrides:
        return
    new = model.config_.updated(overrides)
    for f in dataclasses.fields(new):
        setattr(model.config_, f.name, getattr(new, f.name))


# ---------------------------------------------------------------------------------------------- saved model
def add_saved_model_flags(p: argparse.ArgumentParser, model_help: str, json_help: str = "print JSON", *,
                          data: bool = True, progress: bool = True) -> None:
    """The opening of a command that works on a saved model: --model DIR (required), the data flags
    (`add_data_flags`, unless `data` is False), --json, --device and --no-progress (unless `progress` is False)."""
    p.add_argument("--model", required=True, metavar="DIR", help=model_help)
    if data:
        add_data_flags(p)
    add_json_flag(p, json_help)
    add_device_flag(p)
    if progress:
        add_progress_flag(p)


# ---------------------------------------------------------------------------------------------- data
def add_data_flags(p: argparse.ArgumentParser, required: bool = True, many: bool = False) -> None:
    """--data (one FILE, or several with `many`), --embeddings, --on-invalid and the column-name flags of palrm.data.ColumnMap."""
    from palrm.data.io import ColumnMap

    p.add_argument("--data", required=required, metavar="FILE", nargs="+" if many else None,
                   help="pairs: JSONL, CSV or Parquet (user_id, prompt, chosen, rejected)" + ("; several files are read as one" if many else ""))
    p.add_argument("--on-invalid", choices=["error", "skip"], default=None,
                   help="invalid rows (empty or identical responses, missing user ids, ...): error = stop and list every kind "
                   "with counts and first rows (default); skip = drop them and write them to rejected.jsonl in the run directory")
    p.add_argument("--embeddings", metavar="FILE", help="precomputed vectors (.npy, .safetensors, .parquet); then prompt/chosen/rejected hold row ids")
    g = p.add_argument_group("column names (when your files use other names)")
    for field_name, flag in ColumnMap.CLI_FLAGS.items():
        g.add_argument(flag, dest=f"col_{field_name}", metavar="NAME", help=f"column holding {field_name} (default: {field_name})")


def column_map(args):
    from palrm.data.io import ColumnMap

    kw = {f: getattr(args, f"col_{f}") for f in ColumnMap.CLI_FLAGS if getattr(args, f"col_{f}", None)}
    return ColumnMap(**kw)


def load_data(args, path: str | None = None):
    """The pairs of `path` (default --data) with the command's column names, --embeddings and --on-invalid.

    Files that had invalid rows skipped are remembered on `args` for `write_rejected`.
    """
    from palrm.data.io import load_pairs

    data = load_pairs(path or args.data, columns=column_map(args), embeddings=getattr(args, "embeddings", None),
                      on_invalid=getattr(args, "on_invalid", None) or "error")
    if data.meta.get("rejected"):
        args.rejected_parts = [*(getattr(args, "rejected_parts", None) or []), data]
    return data


def write_rejected(args, run_dir) -> None:
    """With --on-invalid skip: write the skipped rows of every file loaded to RUN_DIR/rejected.jsonl (and say so).

    The per-reason counts were already logged by load_pairs (a warning on stderr).
    """
    from pathlib import Path

    from palrm.data.tables import save_rejected

    parts = getattr(args, "rejected_parts", None)
    if parts:
        path = save_rejected(parts, Path(run_dir) / "rejected.jsonl")
        n = sum(len(p.meta["rejected"]) for p in parts)
        print(f"skipped {n} invalid row{'s' if n != 1 else ''} (--on-invalid skip); written to {path}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- whose reward
def add_mixture_flags(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    """--user ID | --population | --group K | --weights W1,...,WK | --aggregate SPEC (mutually exclusive)."""
    who = p.add_mutually_exclusive_group(required=required)
    who.add_argument("--user", metavar="ID", help="a user the model knows")
    who.add_argument("--population", action="store_true", help="the mean user's weights")
    who.add_argument("--group", type=int, metavar="K", help="prototype K alone (one-hot weights)")
    who.add_argument("--weights", metavar="W1,...,WK", help="explicit mixture weights (normalised to sum 1)")
    who.add_argument("--aggregate", metavar="SPEC", help="one reward for the whole population: mean, mean:size, maxmin, "
                     "softmin:TAU, alpha:A, quantile:Q, optionally @users or @prototypes (see palrm.aggregate)")


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


# ---------------------------------------------------------------------------------------------- output
def add_json_flag(p, help_text: str = "print JSON") -> None:
    p.add_argument("--json", action="store_true", help=help_text)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=float))


def metrics_line(name: str, m: dict) -> str:
    acc = "n/a" if m.get("accuracy") is None else f"{m['accuracy']:.4f}"
    ll = "n/a" if m.get("log_loss") is None else f"{m['log_loss']:.4f}"
    uma = "n/a" if m.get("user_mean_accuracy") is None else f"{m['user_mean_accuracy']:.4f}"
    return f"{name:<12} accuracy {acc}  log-loss {ll}  user-mean accuracy {uma}  ({m.get('n_pairs', 0)} pairs, {m.get('n_users', 0)} users)"
