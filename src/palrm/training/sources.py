"""Batch sources for the streaming loop (engine.py): where the embeddings of a batch come from.

* `TableSource`: an embedding table in memory and `IndexedPairs` (the PAL-Tiny path of `train_net`).
* `ArraySource`: pair index arrays and an embedding table that may be numpy memmaps (data larger
  than memory): a batch reads only its own rows from disk, so memory is bounded by the batch.
* `palrm.finetune.TextPairSource`: tokenised texts through a trainable backbone (PAL-Large).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from palrm.training.pairs import IndexedPairs, batch_logits


@dataclass
class TableSource:
    """Pairs as row indices into an in-memory (T + 1, D) table whose last row is the zero "no prompt" row."""

    table: torch.Tensor
    pairs: IndexedPairs

    def __len__(self) -> int:
        return len(self.pairs)

    def batch(self, positions: torch.Tensor) -> IndexedPairs:
        return self.pairs.take(positions.to(self.pairs.user.device))

    def forward(self, module: nn.Module, batch: IndexedPairs) -> torch.Tensor:
        return batch_logits(module, self.table, batch)


class ArraySource:
    """Pairs and embeddings in numpy arrays, typically memory-mapped from disk (`palrm.data.memmap`).

    Args:
        user, prompt, chosen, rejected: (n,) integer arrays; `prompt` < 0 means no prompt (zero vector).
        embeddings: (T, D) float array (float32 or float16); rows are read per batch and cast to float32.
        device: where batches go.
    """

    def __init__(self, user: np.ndarray, prompt: np.ndarray, chosen: np.ndarray, rejected: np.ndarray,
                 embeddings: np.ndarray, device: str = "cpu") -> None:
        n = len(user)
        for name, arr in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
            if len(arr) != n:
                raise ValueError(f"ArraySource: {name} has {len(arr)} rows, user has {n}")
        self.user, self.prompt, self.chosen, self.rejected = user, prompt, chosen, rejected
        self.embeddings = embeddings
        self.device = device

    @classmethod
    def from_memmap(cls, pairs, device: str = "cpu") -> ArraySource:
        """The source over a `palrm.data.memmap.MemmapPairs` (its arrays stay memory-mapped)."""
        return cls(pairs.user, pairs.prompt, pairs.chosen, pairs.rejected, pairs.embeddings, device)

    def __len__(self) -> int:
        return len(self.user)

    def batch(self, positions: torch.Tensor) -> tuple[torch.Tensor, IndexedPairs]:
        pos = positions.cpu().numpy()
        p = np.asarray(self.prompt[pos], dtype=np.int64)
        c = np.asarray(self.chosen[pos], dtype=np.int64)
        r = np.asarray(self.rejected[pos], dtype=np.int64)
        rows, inverse = np.unique(np.concatenate([c, r, p[p >= 0]]), return_inverse=True)
        local = np.zeros((len(rows) + 1, self.embeddings.shape[1]), dtype=np.float32)  # last row: no prompt
        local[:-1] = self.embeddings[rows]  # reads only these rows of a memmap
        b = len(pos)
        pl = np.full(b, len(rows), dtype=np.int64)
        pl[p >= 0] = inverse[2 * b:]
        pairs = IndexedPairs(torch.as_tensor(np.asarray(self.user[pos], dtype=np.int64)), torch.from_numpy(pl),
                             torch.from_numpy(inverse[:b].astype(np.int64)), torch.from_numpy(inverse[b:2 * b].astype(np.int64)))
        return torch.from_numpy(local).to(self.device), pairs.to(self.device)

    def forward(self, module: nn.Module, batch: tuple[torch.Tensor, IndexedPairs]) -> torch.Tensor:
        table, pairs = batch
        return batch_logits(module, table, pairs)
