"""`FittedModel`: everything a fitted PAL reward model is, and the user-table operations on it.

    net          RewardNet: shared parameters + the user table theta (U, K), w_u = softmax(theta_u)
    users        user ids, row u of theta is users[u]; user_index maps id -> row
    input_dim    D, the length of the input vectors
    precomputed  True when the model was trained on precomputed embeddings (no text encoder)
    embedder     the text encoder and its embedding cache (`palrm.core.table.Embedder`)
    backbone     the fine-tuned backbone (PAL-Large) or None; it is also the embedder's encoder
    config       the full PALConfig (train.device is where net lives)
    reference_stats  mean and std of each prototype's reward on the reference set (palrm.aggregate)
    posteriors   user id -> UserPosterior of the user's weights (`palrm.core.posterior`), where known
    posterior_prior  the prior of those posteriors, fitted to the training users (or None)
    prior_choice the onboarding prior's record: adapt.prior_strength chosen on known users (every
                 strength's log-loss), by the model selection, configured, or a fallback and why

The facade (`PALRewardModel`) holds one of these; serve, export, bench and the integrations use
these functions instead of reaching into the facade.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from palrm.config import PALConfig
from palrm.core.table import Embedder
from palrm.data import load_pairs
from palrm.data.schema import PairData
from palrm.errors import ConfigError, DataFormatError, UnknownUserError
from palrm.models import RewardNet
from palrm.normalization import RewardNormalizer

logger = logging.getLogger(__name__)

PairsLike = PairData | pd.DataFrame | str | os.PathLike

__all__ = ["FittedModel", "PairsLike", "as_pairs"]


def as_pairs(pairs: PairsLike, what: str) -> PairData:
    """PairData from PairData, a DataFrame or a file path; a clear error for anything else."""
    if isinstance(pairs, PairData):
        return pairs
    if isinstance(pairs, (pd.DataFrame, str, os.PathLike)):
        return load_pairs(pairs)
    raise DataFormatError(f"{what}: expected PairData, a pandas DataFrame or a file path, got {type(pairs).__name__}")


@dataclass
class FittedModel:
    """The fitted state of a PAL model (see the module docstring)."""

    net: RewardNet
    users: list[str]
    config: PALConfig
    input_dim: int
    precomputed: bool
    embedder: Embedder
    backbone: Any = None
    history: list = field(default_factory=list)
    user_index: dict[str, int] = field(default_factory=dict)
    reference_stats: Any = None  # palrm.aggregate.ReferenceStats: the prototypes' common scale for aggregates
    selection: dict | None = None  # the k="auto" report (evaluation/selection.py), when the fit selected
    reward_stats: RewardNormalizer | None = None  # mean / std of users' rewards on the reference set (normalize=True)
    posteriors: dict = field(default_factory=dict)
    posterior_prior: Any = None
    prior_choice: dict | None = None  # how adapt.prior_strength was set (chosen on known users, selection, configured)

    def __post_init__(self) -> None:
        self.users = [str(u) for u in self.users]
        if not self.user_index:
            self.user_index = {u: i for i, u in enumerate(self.users)}

    @property
    def device(self) -> str:
        return self.config.train.device

    @property
    def k(self) -> int:
        return self.net.k

    def copy_users(self) -> "FittedModel":
        """A copy whose network and user table can change without touching this one (encoder shared)."""
        return FittedModel(copy.deepcopy(self.net), list(self.users), self.config, self.input_dim, self.precomputed,
                           self.embedder, self.backbone, list(self.history), dict(self.user_index),
                           self.reference_stats, self.selection, self.reward_stats, dict(self.posteriors), self.posterior_prior,
                           self.prior_choice)

    # ------------------------------------------------------------------ users
    def user_row(self, user_id: str | None) -> int:
        try:
            return self.user_index[str(user_id)]
        except KeyError:
            raise UnknownUserError(
                f"unknown user {user_id!r}: the model has weights for {len(self.users)} users. Onboard the user "
                "with model.adapt(pairs_of_that_user) (CLI: palrm adapt), or pass explicit mixture weights "
                "(weights=[...] of length K, or weights='population')"
            ) from None

    def known_rows(self, data: PairData, positions: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(known mask (n,), model row per pair (n,), -1 where the user is unknown); `positions`: only
        these pairs of `data` (PairData, or memory-mapped pairs: only their rows are read)."""
        rows_of_users = np.array([self.user_index.get(u, -1) for u in data.user_ids], dtype=np.int64)
        users = data.user if positions is None else np.asarray(data.user[positions])
        rows = rows_of_users[users] if len(users) else np.empty(0, dtype=np.int64)
        if not self.net.has_users:  # BTL: one reward for everybody, every user is "known"
            rows = np.zeros_like(rows)
        return rows >= 0, rows

    def user_weights(self, user_id: str) -> np.ndarray:
        """w_u (K,) of a known user."""
        row = self.user_row(user_id)
        with torch.no_grad():
            w = self.net.user_weights(torch.tensor([row], device=self.device))[0]  # (K [+ r])
            return w[: self.net.k].cpu().numpy()  # the mixture; a personal offset is net.user_offsets[row]

    def population_weights(self) -> np.ndarray:
        """Mean w_u over the known users (K,)."""
        with torch.no_grad():
            return torch.softmax(self.net.user_logits.weight, -1).mean(0).cpu().numpy()

    def resolve_weights(self, weights: Any) -> torch.Tensor:
        """Mixture weights (K,) on the model's device from K numbers, "population" or "group:k"."""
        k = self.net.k
        if isinstance(weights, str):
            if weights == "population":
                w = self.population_weights()
            elif weights.startswith("group:"):
                try:
                    g = int(weights.split(":", 1)[1])
                except ValueError:
                    raise ConfigError(f"weights={weights!r}: expected 'group:N' with an integer N in 0..{k - 1}") from None
                if not 0 <= g < k:
                    raise ConfigError(f"weights={weights!r}: group must be in 0..{k - 1}")
                w = np.eye(k)[g]
            else:
                raise ConfigError(f"weights={weights!r}: expected 'population', 'group:N' or a list of {k} numbers")
        else:
            w = np.asarray(weights, dtype=np.float64).reshape(-1)
            if w.shape != (k,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
                raise ConfigError(f"weights={list(np.round(w, 4))}: expected {k} non-negative numbers with a positive sum")
            w = w / w.sum()
        return torch.as_tensor(w, dtype=torch.float32, device=self.device)

    def item_weights(self, n: int, user_ids: Sequence[str | None] | None, weights: Sequence[Any] | None) -> torch.Tensor:
        """Mixture weights (n, K) per item: `weights[i]` when given, else the known user `user_ids[i]`'s.

        Puts the network in eval mode, so partition users are scored with their argmax prototype.
        """
        self.net.eval()
        dev = self.device
        k = self.net.k
        w = torch.ones(n, k + self.net.offset_dim, device=dev)  # (n, K [+ r]); BTL ignores the weights
        explicit = [i for i in range(n) if weights is not None and weights[i] is not None]
        for i in explicit:  # an explicit mixture carries no personal offset
            w[i, :k], w[i, k:] = self.resolve_weights(weights[i]), 0.0
        by_user = sorted(set(range(n)) - set(explicit)) if self.net.has_users else []
        if by_user:
            rows = [self.user_row(None if user_ids is None else user_ids[i]) for i in by_user]
            with torch.no_grad():  # one lookup for all items scored for known users
                w[by_user] = self.net.user_weights(torch.tensor(rows, device=dev))
        return w

    def user_logits(self, user_id: str) -> torch.Tensor:
        """theta_u (K,), or [theta_u, delta_u] (K + r,) with personal offsets: a detached copy on the CPU
        (what `set_user_logits` takes back)."""
        row = self.user_row(user_id)
        theta = self.net.user_logits.weight[row].detach().cpu().clone()
        return torch.cat([theta, self.net.user_offsets[row].detach().cpu()]) if self.net.offset_dim else theta

    def set_user_logits(self, user_ids: Sequence[str], logits: torch.Tensor) -> list[str]:
        """Write theta (n, K) (or (n, K + r): theta then the personal offsets) for `user_ids`, adding the
        unknown ones in ONE growth of the table.

        Returns the ids that were new.
        """
        ids = [str(u) for u in user_ids]
        new = list(dict.fromkeys(u for u in ids if u not in self.user_index))
        with torch.no_grad():
            if new:
                self.net.grow_users(len(new))
            for u in new:
                self.user_index[u] = len(self.users)
                self.users.append(u)
            table = self.net.user_logits.weight
            rows = torch.tensor([self.user_index[u] for u in ids], device=table.device)
            table[rows] = logits[:, : self.net.k].to(table)
            if self.net.offset_dim and logits.shape[1] > self.net.k:  # (n, K + r): the offsets follow the K logits
                self.net.user_offsets[rows] = logits[:, self.net.k:].to(table)
        return new

    def remove_last_users(self, user_ids: Sequence[str]) -> None:
        """Undo `set_user_logits` for users it just added (they must be the last rows of the table)."""
        n = len(user_ids)
        if n == 0:
            return
        if self.users[-n:] != list(user_ids):
            raise ValueError(f"remove_last_users: {list(user_ids)} are not the last users of the table")
        with torch.no_grad():
            keep = self.net.user_logits.weight[: len(self.users) - n].detach().clone()
            self.net.user_logits = torch.nn.Embedding.from_pretrained(keep, freeze=False).to(keep.device)
            if self.net.offset_dim:
                self.net.user_offsets = self.net.user_offsets[: len(self.users) - n].clone()
        for u in user_ids:
            self.user_index.pop(u)
            self.posteriors.pop(u, None)
        del self.users[-n:]
