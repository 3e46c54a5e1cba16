"""Training all users of a `RewardNet`: the entry points over the one streaming loop (engine.py).

* `train_net`: embeddings in memory (an embedding table and `IndexedPairs`), PAL-Tiny's path;
* `train_memmap`: pairs and embeddings memory-mapped from disk (`palrm.data.memmap`);
* `param_groups`: the AdamW groups every path uses (shared parameters, user logits).

Both run `train_stream` with a batch source (sources.py); the loop itself is written once. It knows
nothing of a network's internals: it calls `net.user_weights`, `net.pair_logits` and
`net.shared_parameters()` only (the RewardNet contract).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from palrm.config import TrainConfig
from palrm.models.base import RewardNet
from palrm.training.engine import BatchSource, train_stream
from palrm.training.pairs import IndexedPairs
from palrm.training.sources import ArraySource, TableSource

__all__ = ["param_groups", "train_memmap", "train_net"]


def param_groups(net: RewardNet, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: shared parameters at `cfg.lr` with weight decay, user logits at `cfg.user_lr` without."""
    groups = [{"params": [p for p in net.shared_parameters() if p.requires_grad], "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
    if net.mixture:  # BTL's one weight is fixed (offsets are fitted after training)
        groups.append({"params": [net.user_logits.weight], "lr": cfg.user_lr, "weight_decay": 0.0})
    return groups


def train_net(
    net: RewardNet,
    table: torch.Tensor | BatchSource,
    train: IndexedPairs | None,
    val: IndexedPairs | BatchSource | None,
    cfg: TrainConfig,
    log_path: str | Path | None = None,
    extra_validation=None,
) -> list[dict]:
    """Minibatch AdamW on all pairs of all users, early stopping on validation loss (or on the
    `stop_loss` that `extra_validation(net, row)` returns each epoch, see `train_stream`).

    Returns the per-epoch metrics (also appended as JSON lines to `log_path` when given). The net ends
    with the parameters of the best validation epoch (the last epoch when there is no validation set).

    `table` (T + 1, D) holds the embeddings with the zero "no prompt" row last; `train` / `val` index
    into it. `table` may instead be a `BatchSource` (memory-mapped arrays, tokenised text through a
    backbone, ...): then `train` is ignored and `val` is a BatchSource or None.
    """
    if isinstance(table, torch.Tensor):
        if train is None:
            raise ValueError("train_net: `train` pairs are required with an embedding table")
        source: BatchSource = TableSource(table, train)
        val_source = TableSource(table, val) if val is not None else None
    else:
        source, val_source = table, val
    return train_stream(net, source, val_source, cfg, param_groups=param_groups(net, cfg), log_path=log_path,
                        desc=f"train {getattr(net, 'kind', '')}".strip(), extra_validation=extra_validation)


def train_memmap(train_dir: str | os.PathLike, config, *, val_dir: str | os.PathLike | None = None,
                 log_path=None, checkpoint_dir=None, resume: bool = False):
    """Train a RewardNet on memory-mapped pairs with the streaming loop; returns (net, history).

    Users are the rows 0..n_users-1 of the directory's user array (named by users.json when present).
    `PALRewardModel.fit_memmap` wraps this and gives a model that can be saved, adapted and served.
    """
    from palrm.data.memmap import open_memmap_pairs
    from palrm.models import build_net

    data = open_memmap_pairs(train_dir)
    val = open_memmap_pairs(val_dir) if val_dir is not None else None
    device = config.train.device
    torch.manual_seed(config.train.seed)
    net = build_net(config.model, int(data.embeddings.shape[1]), data.n_users).to(device)
    history = train_stream(net, ArraySource.from_memmap(data, device),
                           ArraySource.from_memmap(val, device) if val is not None else None,
                           config.train, param_groups=param_groups(net, config.train), scale=config.scale,
                           log_path=log_path, checkpoint_dir=checkpoint_dir, resume=resume)
    return net, history
