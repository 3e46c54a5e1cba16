"""Pairs as row indices into an embedding table, and the logits of a network on them.

The embedding table's last row is all zeros and stands for "no prompt" (`indexed` maps prompt -1
to it). These are the shared vocabulary of the training loop, its batch sources and adaptation;
this module knows nothing of how a network is trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from palrm.models.base import RewardNet

__all__ = ["IndexedPairs", "batch_logits", "indexed", "predict_logits"]


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

    def take(self, idx: torch.Tensor) -> IndexedPairs:
        return IndexedPairs(self.user[idx], self.prompt[idx], self.chosen[idx], self.rejected[idx])

    def to(self, device) -> IndexedPairs:
        return IndexedPairs(*(t.to(device) for t in (self.user, self.prompt, self.chosen, self.rejected)))


def batch_logits(net: RewardNet, table: torch.Tensor, batch: IndexedPairs, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Preference logits (B,) of a batch; `weights` (B, K) overrides the users' own weights."""
    w = net.user_weights(batch.user) if weights is None else weights  # (B, K)
    return net.pair_logits(w, table[batch.prompt], table[batch.chosen], table[batch.rejected])  # (B,)


@torch.no_grad()
def predict_logits(net: RewardNet, table: torch.Tensor, pairs: IndexedPairs, batch_size: int = 8192) -> torch.Tensor:
    """Logits (n,) of every pair (eval mode, no gradients), in order."""
    was_training = net.training
    net.eval()
    out = [batch_logits(net, table, pairs.take(torch.arange(i, min(i + batch_size, len(pairs)))))
           for i in range(0, len(pairs), batch_size)]
    net.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def indexed(user: np.ndarray, prompt: np.ndarray, chosen: np.ndarray, rejected: np.ndarray, no_prompt_row: int) -> IndexedPairs:
    """IndexedPairs from numpy arrays; prompt -1 (no prompt) is mapped to the zero row `no_prompt_row`."""
    prompt = np.where(prompt < 0, no_prompt_row, prompt)
    return IndexedPairs(*(torch.as_tensor(np.asarray(a, dtype=np.int64)) for a in (user, prompt, chosen, rejected)))
