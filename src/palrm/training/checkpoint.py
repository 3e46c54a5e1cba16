"""Resumable training checkpoints: model, optimizer, RNG states and data position, written atomically.

Layout of `RUN_DIR/checkpoint/` (safetensors + JSON only; nothing is unpickled on resume):

    state.json            epoch, next batch, optimizer step, history, early-stopping state, fingerprint
    model.safetensors     the trained module's state_dict (heads, user logits, backbone when fine-tuning)
    best.safetensors      the best-validation state so far (early stopping), when there is one
    optimizer.safetensors the optimizer's per-parameter tensors ("state.<param>.<name>")
    optimizer.json        the optimizer's parameter groups (learning rates, warm-up, ...)
    rng.safetensors       the batch-order generator's state at the start of the epoch, torch's global RNG

The folder is written with `palrm.atomic.atomic_directory` (a fsynced temporary sibling swapped in
by rename), so a crash (even SIGKILL) at any moment leaves either the previous complete checkpoint or
the new one (then possibly under the backup name `atomic.backups` lists).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from palrm.atomic import atomic_directory, backups
from palrm.errors import PalrmError

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
FORMAT = "palrm-checkpoint-v1"


def _tensors(state: dict) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = opt.state_dict()
    tensors = {}
    for pid, pstate in sd["state"].items():
        for name, value in pstate.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"state.{pid}.{name}"] = t.detach().cpu().contiguous()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def save_checkpoint(run_dir: str | os.PathLike, *, model_state: dict, optimizer: torch.optim.Optimizer,
                    best_state: dict | None, meta: dict, rng: dict[str, torch.Tensor]) -> Path:
    """Write RUN_DIR/checkpoint atomically; returns its path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / CHECKPOINT_DIR
    with atomic_directory(target, fsync=True) as tmp:  # durable before it becomes visible
        save_file(_tensors(model_state), str(tmp / "model.safetensors"))
        if best_state is not None:
            save_file(_tensors(best_state), str(tmp / "best.safetensors"))
        opt_tensors, groups = _optimizer_tensors(optimizer)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(groups))
        save_file({k: v.contiguous() for k, v in rng.items()}, str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps({"format": FORMAT, **meta}, indent=1))
    return target


def find_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """RUN_DIR/checkpoint, or the previous one a crash left between the two renames; None if neither."""
    run_dir = Path(run_dir)
    target = run_dir / CHECKPOINT_DIR
    if (target / "state.json").is_file():
        return target
    for old in backups(target):
        if (old / "state.json").is_file():
            logger.warning("resuming from %s (a save was interrupted between renames)", old)
            return old
    return None


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint folder: {"meta", "model", "best", "optimizer_tensors", "optimizer_groups", "rng"}."""
    path = Path(path)
    try:
        meta = json.loads((path / "state.json").read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
        out = {
            "meta": meta,
            "model": load_file(str(path / "model.safetensors")),
            "best": load_file(str(path / "best.safetensors")) if (path / "best.safetensors").is_file() else None,
            "optimizer_tensors": load_file(str(path / "optimizer.safetensors")),
            "optimizer_groups": json.loads((path / "optimizer.json").read_text()),
            "rng": load_file(str(path / "rng.safetensors")),
        }
    except Exception as exc:  # safetensors / json raise their own types
        raise PalrmError(f"checkpoint {path} could not be read ({exc}); delete it to start the run afresh") from None
    return out


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    """Load optimizer state saved by `save_checkpoint` (groups must match the optimizer's)."""
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
    current = opt.state_dict()["param_groups"]
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in current]:
        raise PalrmError("the checkpoint's optimizer has other parameter groups than this model (different "
                         "configuration?); resume with the configuration the run was started with")
    opt.load_state_dict({"state": state, "param_groups": groups})
