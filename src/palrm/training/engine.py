"""The streaming training loop: batches from any `BatchSource`, data-parallel, accumulating, resumable.

This is palrm's one training loop: `train_net` and `train_memmap` (loop.py) call it with a
`TableSource` / `ArraySource`, fine-tuning with a `TextPairSource`, the scaled fit with either. It
does what scale needs without knowing a model's internals. A source turns positions into a batch and a batch into preference
logits; the loop only orders positions, shards them over ranks, steps the optimizer and keeps the
books:

* **Same math at any scale.** Each epoch draws one permutation from a generator seeded with
  `train.seed`. Global batch b is positions
  `order[b*G:(b+1)*G]` (G = train.batch_size); rank r of N takes every N-th of them (what
  `torch.utils.data.DistributedSampler` does, batch by batch) and splits its share into
  `scale.grad_accum_steps` micro-batches. Each micro-batch loss is weighted by (its size x N / G),
  so after DDP averages gradients over ranks the update is the gradient of the mean loss over the
  global batch: 1 process, N processes and any accumulation give the same step up to float rounding.
  One process without accumulation reproduces the plain minibatch loop bit for bit.
* **Data-parallel** through `torch.nn.parallel.DistributedDataParallel` (dense gradients, so the
  user-logit rows of users that only one rank saw are all-reduced like any other parameter).
  Training loss and validation metrics are summed over ranks; only rank 0 writes logs and checkpoints.
* **Checkpoints** (checkpoint.py) every `scale.checkpoint_every` steps and at every epoch's end;
  `resume=True` restores model, optimizer, the batch-order generator, torch's RNG, the position
  inside the epoch and the early-stopping state, so an interrupted CPU run ends bit-identical to an
  uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from tqdm.auto import tqdm

from palrm import distributed as pdist
from palrm.config import ScaleConfig, TrainConfig
from palrm.errors import PalrmError
from palrm.losses import LOSSES, per_pair_nll
from palrm.training.checkpoint import (
    find_checkpoint,
    load_checkpoint,
    restore_optimizer,
    save_checkpoint,
)

logger = logging.getLogger(__name__)

# Testing aid: SIGKILL this process right after optimizer step N (after any checkpoint of that step).
KILL_ENV = "PALRM_DEBUG_SIGKILL_AT_STEP"


@runtime_checkable
class BatchSource(Protocol):
    """Where batches come from: an in-memory table, memory-mapped arrays, tokenised text, ..."""

    def __len__(self) -> int:
        """Number of pairs."""
        ...

    def batch(self, positions: torch.Tensor) -> Any:
        """Materialise the pairs at `positions` (int64, (B,)) as whatever `forward` consumes."""
        ...

    def forward(self, module: nn.Module, batch: Any) -> torch.Tensor:
        """Preference logits (B,) of a batch under `module` (the model being trained)."""
        ...


class _Forward(nn.Module):
    """Routes DDP's forward through a source, so gradient hooks fire for whatever the source touches."""

    def __init__(self, inner: nn.Module, source: BatchSource) -> None:
        super().__init__()
        self.inner = inner
        self.source = source

    def forward(self, batch: Any) -> torch.Tensor:
        return self.source.forward(self.inner, batch)


def _set_warmup_lr(opt: torch.optim.Optimizer, step: int) -> None:
    """Linear warm-up of the groups that ask for it (`warmup_steps` > 0); `step` counts from 0."""
    for g in opt.param_groups:
        w = int(g.get("warmup_steps", 0) or 0)
        g["lr"] = g["base_lr"] * min(1.0, (step + 1) / w) if w > 0 else g["base_lr"]


@torch.no_grad()
def evaluate_source(module: nn.Module, source: BatchSource, *, batch_size: int = 8192,
                    info: pdist.DistInfo | None = None) -> dict:
    """Validation loss and accuracy of `source`, sharded over ranks and summed (eval mode, no grad)."""
    info = info or pdist.current()
    was_training = module.training
    module.eval()
    positions = torch.arange(len(source))[info.rank::info.world_size]
    zs = [source.forward(module, source.batch(positions[i:i + batch_size])).float()
          for i in range(0, len(positions), batch_size)]
    module.train(was_training)
    z = torch.cat(zs) if zs else torch.empty(0)
    if not info.active:  # single process: the mean over all pairs in one reduction
        return {"val_loss": float(per_pair_nll(z).mean()),
                "val_accuracy": float(((z > 0).float() + 0.5 * (z == 0).float()).mean())}
    nll, correct, n = pdist.all_reduce_sum(
        [float(per_pair_nll(z).double().sum()), float(((z > 0).double() + 0.5 * (z == 0).double()).sum()), float(len(z))],
        device=info.device)
    return {"val_loss": nll / n, "val_accuracy": correct / n}


def train_stream(
    module: nn.Module,
    train: BatchSource,
    val: BatchSource | None,
    cfg: TrainConfig,
    *,
    param_groups: list[dict],
    scale: ScaleConfig | None = None,
    log_path: str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    info: pdist.DistInfo | None = None,
    fingerprint: str = "",
    desc: str = "train",
    extra_validation: Callable[[nn.Module, dict], dict] | None = None,
) -> list[dict]:
    """Minibatch AdamW over `train`, early stopping on `val` loss; returns the per-epoch metrics.

    Args:
        module: the model; `train.forward(module, batch)` gives logits. It ends with the parameters
            of the best validation epoch (the last one without validation) and in eval mode.
        param_groups: AdamW parameter groups; a group may carry `warmup_steps` (linear warm-up).
        scale: accumulation, checkpoint frequency, validation batch size (defaults when None).
        log_path: JSON lines, one per epoch (rank 0 only; appended).
        checkpoint_dir: the run directory that receives `checkpoint/` (rank 0 only); None = no checkpoints.
        resume: continue from the checkpoint in `checkpoint_dir` when there is one.
        info: this process's rank and world (default: the current process group, if any).
        fingerprint: a string identifying data and configuration; resuming refuses another one.
        desc: the progress bar's label (shown when `cfg.progress`).
        extra_validation: called after each epoch's validation with the module (in eval mode) and the
            epoch's row so far (train_loss, val_loss, ...); the metrics it returns are added to the row. When they include `stop_loss`, early
            stopping (and the choice of the best epoch) minimises it instead of `val_loss`: model
            selection stops on a user-level criterion this way (evaluation/selection.py).
    """
    scale = scale or ScaleConfig()
    info = info or pdist.current()
    n = len(train)
    if n == 0:
        raise ValueError("no training pairs")
    loss_fn = LOSSES[cfg.loss]
    big, world, rank, accum = cfg.batch_size, info.world_size, info.rank, scale.grad_accum_steps
    for g in param_groups:
        g.setdefault("warmup_steps", 0)
        g["base_lr"] = g["lr"]
    opt = torch.optim.AdamW(param_groups)
    gen = torch.Generator().manual_seed(cfg.seed)
    n_batches = (n + big - 1) // big
    history: list[dict] = []
    best_loss, best_state, best_epoch, bad_epochs = float("inf"), None, -1, 0
    start_epoch, start_batch, step = 1, 0, 0
    epoch_gen_state = gen.get_state()
    total, seen, finished = 0.0, 0, False

    if resume and checkpoint_dir is not None and (found := find_checkpoint(checkpoint_dir)) is not None:
        ck = load_checkpoint(found)
        meta = ck["meta"]
        if fingerprint and meta.get("fingerprint") and meta["fingerprint"] != fingerprint:
            raise PalrmError(f"checkpoint {found} was written for other data or another configuration "
                             f"({meta['fingerprint'][:12]} vs {fingerprint[:12]}); resume with the same data and "
                             "config, or start a new run directory")
        if meta.get("batch_size") != big:
            raise PalrmError(f"checkpoint {found} used train.batch_size {meta.get('batch_size')}, now {big}; "
                             "the data position would not match")
        if meta.get("world_size", 1) != world:
            logger.warning("resuming a %d-process run on %d processes: same global batches, other reduction order",
                           meta.get("world_size", 1), world)
        module.load_state_dict(ck["model"])
        restore_optimizer(opt, ck["optimizer_tensors"], ck["optimizer_groups"])
        epoch_gen_state = ck["rng"]["epoch_generator"]
        torch.set_rng_state(ck["rng"]["torch"])
        start_epoch, start_batch, step = meta["epoch"], meta["next_batch"], meta["step"]
        history = meta["history"]
        total, seen = meta["total"], meta["seen"]
        best_loss, best_epoch, bad_epochs = meta["best_loss"], meta["best_epoch"], meta["bad_epochs"]
        best_state = ck["best"]
        finished = meta.get("finished", False)
        if log_path and info.is_main:  # the log ends where the checkpoint does (a killed run may have logged more)
            Path(log_path).write_text("".join(json.dumps(r) + "\n" for r in history))
        logger.info("resumed from %s: epoch %d, batch %d, step %d", found, start_epoch, start_batch, step)

    fwd: nn.Module = _Forward(module, train)
    if info.active:
        from torch.nn.parallel import DistributedDataParallel as DDP

        fwd = DDP(fwd, device_ids=[info.local_rank] if info.device.startswith("cuda") else None,
                  find_unused_parameters=False)
    kill_at = int(os.environ.get(KILL_ENV, "0") or 0)
    log_file = open(log_path, "a") if log_path and info.is_main else None  # noqa: SIM115 - closed in finally

    def checkpoint(epoch: int, next_batch: int, gen_state: torch.Tensor, done: bool = False) -> None:
        if checkpoint_dir is None or not info.is_main:
            return
        meta = {"epoch": epoch, "next_batch": next_batch, "step": step, "history": history, "total": total,
                "seen": seen, "best_loss": best_loss, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                "batch_size": big, "world_size": world, "fingerprint": fingerprint, "finished": done}
        save_checkpoint(checkpoint_dir, model_state=module.state_dict(), optimizer=opt, best_state=best_state,
                        meta=meta, rng={"epoch_generator": gen_state, "torch": torch.get_rng_state()})

    bar = tqdm(total=cfg.epochs, initial=start_epoch - 1, desc=desc, unit="epoch",
               disable=not (cfg.progress and info.is_main), leave=False)
    try:
        epoch = start_epoch
        while not finished and epoch <= cfg.epochs:
            t0 = time.perf_counter()
            gen.set_state(epoch_gen_state)
            order = torch.randperm(n, generator=gen)
            module.train()
            for b in range(start_batch, n_batches):
                glob = order[b * big:(b + 1) * big]
                local = glob[rank::world]
                weight_of = (lambda m: (m * world) / len(glob))
                if len(local) == 0:  # a last global batch smaller than the world: join the all-reduce with 0
                    local, weight_of = glob[:1], (lambda m: 0.0)
                chunks = [c for c in local.tensor_split(min(accum, len(local))) if len(c)]
                _set_warmup_lr(opt, step)
                opt.zero_grad(set_to_none=True)
                for i, chunk in enumerate(chunks):
                    sync = contextlib.nullcontext() if (not info.active or i == len(chunks) - 1) else fwd.no_sync()
                    with sync:
                        z = fwd(train.batch(chunk))
                        loss = loss_fn(z.float())
                        w = weight_of(len(chunk))
                        (loss * w if w != 1.0 else loss).backward()
                    if w:
                        total += loss.item() * len(chunk)
                        seen += len(chunk)
                opt.step()
                step += 1
                if scale.checkpoint_every and step % scale.checkpoint_every == 0 and b + 1 < n_batches:
                    checkpoint(epoch, b + 1, epoch_gen_state)
                if kill_at and step == kill_at:
                    logger.warning("%s=%d: killing this process (testing aid)", KILL_ENV, kill_at)
                    os.kill(os.getpid(), signal.SIGKILL)
            tot, cnt = pdist.all_reduce_sum([total, float(seen)], device=info.device) if info.active else (total, seen)
            row = {"epoch": epoch, "train_loss": tot / max(cnt, 1), "seconds": round(time.perf_counter() - t0, 4)}
            if val is not None and len(val):
                row.update(evaluate_source(module, val, batch_size=scale.val_batch_size, info=info))
            if extra_validation is not None:
                module.eval()
                row.update(extra_validation(module, dict(row)))
            history.append(row)
            if log_file:
                log_file.write(json.dumps(row) + "\n")
                log_file.flush()
            bar.update(1)
            bar.set_postfix({k: round(v, 4) for k, v in row.items() if k in ("train_loss", "val_loss", "val_accuracy")})
            logger.debug("epoch %s", row)
            stop_key = "stop_loss" if "stop_loss" in row else "val_loss"
            if stop_key in row:
                if row[stop_key] < best_loss - 1e-6:
                    best_loss, best_state, best_epoch, bad_epochs = row[stop_key], copy.deepcopy(module.state_dict()), epoch, 0
                else:
                    bad_epochs += 1
                    if cfg.patience and bad_epochs >= cfg.patience:
                        logger.info("early stopping after epoch %d (best validation loss %.4f at epoch %d)",
                                    epoch, best_loss, best_epoch)
                        finished = True
            epoch += 1
            start_batch, total, seen = 0, 0.0, 0
            epoch_gen_state = gen.get_state()
            finished = finished or epoch > cfg.epochs
            checkpoint(epoch, 0, epoch_gen_state, done=finished)
    finally:
        bar.close()
        if log_file:
            log_file.close()
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return history


def load_run_history(log_path: str | Path) -> list[dict]:
    """The per-epoch rows of a JSONL training log (for reporting after a resumed run)."""
    path = Path(log_path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
