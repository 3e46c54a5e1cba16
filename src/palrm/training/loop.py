"""Training of all users (`train_net`) and prediction, on embeddings already in memory.

The loop knows nothing of a network's internals: it calls `net.user_weights`, `net.pair_logits`
and `net.shared_parameters()` only (the RewardNet contract).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from palrm.config import TrainConfig
from palrm.losses import LOSSES, per_pair_nll
from palrm.models.base import RewardNet

logger = logging.getLogger(__name__)


@dataclass
class IndexedPairs:
    """Pairs as tensors of row indices: `user` into the net's user table, the rest into an embedding table.

    The embedding table's last row is all zeros and stands for "no prompt".
    """

    user: torch.Tensor  # (n,) int64
    prompt: torch.Tensor  # (n,) int64
    chosen: torch.Tensor  # (n,) int64
    rejected: torch.Tensor  # (n,) int64

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def take(self, idx: torch.Tensor) -> "IndexedPairs":
        return IndexedPairs(self.user[idx], self.prompt[idx], self.chosen[idx], self.rejected[idx])

    def to(self, device) -> "IndexedPairs":
        return IndexedPairs(*(t.to(device) for t in (self.user, self.prompt, self.chosen, self.rejected)))


def batch_logits(net: RewardNet, table: torch.Tensor, batch: IndexedPairs, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Preference logits of a batch; `weights` (B, K) overrides the users' own weights."""
    w = net.user_weights(batch.user) if weights is None else weights  # (B, K)
    return net.pair_logits(w, table[batch.prompt], table[batch.chosen], table[batch.rejected])  # (B,)


@torch.no_grad()
def predict_logits(net: RewardNet, table: torch.Tensor, pairs: IndexedPairs, batch_size: int = 8192) -> torch.Tensor:
    """Logits of every pair (eval mode, no gradients), in order."""
    was_training = net.training
    net.eval()
    out = [batch_logits(net, table, pairs.take(torch.arange(i, min(i + batch_size, len(pairs)))))
           for i in range(0, len(pairs), batch_size)]
    net.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def _param_groups(net: RewardNet, cfg: TrainConfig) -> list[dict]:
    groups = [{"params": [p for p in net.shared_parameters() if p.requires_grad], "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
    if net.has_users:
        groups.append({"params": [net.user_logits.weight], "lr": cfg.user_lr, "weight_decay": 0.0})
    return groups


def train_net(
    net: RewardNet,
    table: torch.Tensor,
    train: IndexedPairs,
    val: IndexedPairs | None,
    cfg: TrainConfig,
    log_path: str | Path | None = None,
) -> list[dict]:
    """Minibatch AdamW on all pairs of all users, early stopping on validation loss.

    Returns the per-epoch metrics (also appended as JSON lines to `log_path` when given). The net ends
    with the parameters of the best validation epoch (the last epoch when there is no validation set).

    `table` may instead be a `BatchSource` (training/sources.py: memory-mapped arrays, tokenised text
    through a backbone, ...): then `train` is ignored, `val` is a BatchSource or None, and the
    streaming loop of training/engine.py runs (same batches and updates as below for a table source).
    """
    if not isinstance(table, torch.Tensor):
        from palrm.training.engine import train_stream

        return train_stream(net, table, val, cfg, param_groups=_param_groups(net, cfg), log_path=log_path)
    if len(train) == 0:
        raise ValueError("no training pairs")
    loss_fn = LOSSES[cfg.loss]
    opt = torch.optim.AdamW(_param_groups(net, cfg))
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    best = (float("inf"), None, -1)  # (val loss, state, epoch)
    bad_epochs = 0
    log_file = open(log_path, "a") if log_path else None  # noqa: SIM115 - closed in finally
    n_batches = (len(train) + cfg.batch_size - 1) // cfg.batch_size
    bar = tqdm(total=cfg.epochs, desc=f"train {net.kind}", unit="epoch", disable=not cfg.progress, leave=False)
    try:
        for epoch in range(1, cfg.epochs + 1):
            start = time.perf_counter()
            net.train()
            order = torch.randperm(len(train), generator=gen)
            total, seen = 0.0, 0
            for b in range(n_batches):
                batch = train.take(order[b * cfg.batch_size:(b + 1) * cfg.batch_size])
                loss = loss_fn(batch_logits(net, table, batch))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(batch)
                seen += len(batch)
            row = {"epoch": epoch, "train_loss": total / seen, "seconds": round(time.perf_counter() - start, 4)}
            if val is not None and len(val):
                z = predict_logits(net, table, val)
                row["val_loss"] = float(per_pair_nll(z).mean())
                row["val_accuracy"] = float(((z > 0).float() + 0.5 * (z == 0).float()).mean())
            history.append(row)
            if log_file:
                log_file.write(json.dumps(row) + "\n")
                log_file.flush()
            bar.update(1)
            bar.set_postfix({k: round(v, 4) for k, v in row.items() if k in ("train_loss", "val_loss", "val_accuracy")})
            logger.debug("epoch %s", row)
            if "val_loss" in row:
                if row["val_loss"] < best[0] - 1e-6:
                    best = (row["val_loss"], copy.deepcopy(net.state_dict()), epoch)
                    bad_epochs = 0
                else:
                    bad_epochs += 1
                    if cfg.patience and bad_epochs >= cfg.patience:
                        logger.info("early stopping after epoch %d (best validation loss %.4f at epoch %d)", epoch, best[0], best[2])
                        break
    finally:
        bar.close()
        if log_file:
            log_file.close()
    if best[1] is not None:
        net.load_state_dict(best[1])
    net.eval()
    return history


def indexed(user: np.ndarray, prompt: np.ndarray, chosen: np.ndarray, rejected: np.ndarray, no_prompt_row: int) -> IndexedPairs:
    """IndexedPairs from numpy arrays; prompt -1 (no prompt) is mapped to the zero row `no_prompt_row`."""
    prompt = np.where(prompt < 0, no_prompt_row, prompt)
    return IndexedPairs(*(torch.as_tensor(np.asarray(a, dtype=np.int64)) for a in (user, prompt, chosen, rejected)))
