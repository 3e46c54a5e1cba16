"""Baselines a reviewer asks for, on the same embeddings, splits and budget as PAL.

- `LinearHeads`: one linear reward per user on the frozen features, r_u(x) = v_u . psi(x) with
  psi(x) = [phi(x), ||phi(x)||^2] (the squared norm lets a linear head express any ideal-point
  reward -||phi(x) - a||^2 in the embedding space itself). Two variants:
    * ``shrinkage=False``: every user is fitted alone (ridge penalty lambda ||v_u||^2);
    * ``shrinkage=True``: v_u = v_0 + delta_u, a shared head v_0 fitted on all seen users and a
      ridge penalty lambda ||delta_u||^2 pulling each user towards it (hierarchical / multi-task).
  lambda is chosen on the seen users' validation pairs. New users are fitted the same way on their
  shots (alone, or around the frozen shared head).
- `OracleGroups`: the true group of every user is known; one BTL reward model per group, trained on
  that group's pairs. The ceiling the embeddings allow for partition users (synthetic, Persona).

Every method exposes ``predict_logits(pairs) -> (n,)`` for pairs with precomputed embeddings
(prompt-independent heads: the prompt cancels in a pairwise difference of a linear reward).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from palrm.data.schema import PairData
from palrm.evaluation.metrics import pair_metrics

logger = logging.getLogger(__name__)

LAMBDAS = (1e-2, 1e-1, 1.0, 10.0)


def _pair_diff(pairs: PairData) -> torch.Tensor:
    """psi(chosen) - psi(rejected): (n, D + 1) float64."""
    emb = np.asarray(pairs.embeddings, dtype=np.float64)
    psi = np.concatenate([emb, (emb**2).sum(1, keepdims=True)], 1)
    return torch.from_numpy(psi[pairs.chosen] - psi[pairs.rejected])


def _fit_linear(diff: torch.Tensor, user: torch.Tensor, n_users: int, lam: float, base: torch.Tensor | None,
                fit_base: bool, max_iter: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise sum_u (1/n_u) [sum_i softplus(-(v0 + delta_u) . x_i) + lam ||delta_u||^2] (+ 1e-4 ||v0||^2).

    `base` None and not `fit_base`: v0 = 0 (independent heads). Returns (v0, delta)."""
    dim = diff.shape[1]
    counts = torch.bincount(user, minlength=n_users).clamp(min=1).double()
    delta = torch.zeros(n_users, dim, dtype=torch.float64, requires_grad=True)
    v0 = (base.clone() if base is not None else torch.zeros(dim, dtype=torch.float64)).requires_grad_(fit_base)
    params = [delta, v0] if fit_base else [delta]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_grad=1e-7)

    def closure():
        opt.zero_grad()
        z = ((delta[user] + v0) * diff).sum(-1)
        nll = torch.nn.functional.softplus(-z)
        per_user = torch.zeros(n_users, dtype=torch.float64).index_add(0, user, nll)
        loss = ((per_user + lam * (delta**2).sum(-1)) / counts).sum()
        if fit_base:
            loss = loss + 1e-4 * (v0**2).sum() * n_users
        loss.backward()
        return loss

    opt.step(closure)
    return v0.detach(), delta.detach()


@dataclass
class LinearHeads:
    """Per-user linear reward heads on frozen features (see the module docstring)."""

    shrinkage: bool = False
    lambdas: tuple = LAMBDAS
    lam_: float = field(default=1.0, init=False)
    base_: torch.Tensor | None = field(default=None, init=False)
    heads_: dict = field(default_factory=dict, init=False)
    selection_: dict = field(default_factory=dict, init=False)

    @property
    def name(self) -> str:
        return "per-user heads + shrinkage" if self.shrinkage else "per-user heads"

    def _fit_users(self, pairs: PairData, lam: float, fit_base: bool) -> dict:
        pairs = pairs.compact_users()
        user = torch.from_numpy(pairs.user)
        v0, delta = _fit_linear(_pair_diff(pairs), user, len(pairs.user_ids), lam,
                                self.base_ if not fit_base else None, fit_base)
        if fit_base:
            self.base_ = v0
        base = self.base_ if self.shrinkage else None
        return {u: (delta[i] + base if base is not None else delta[i]) for i, u in enumerate(pairs.user_ids)}

    def fit(self, train: PairData, val: PairData) -> "LinearHeads":
        """Fit the seen users; lambda is picked by validation accuracy (ties: validation log-loss)."""
        best = None
        for lam in self.lambdas:
            heads = self._fit_users(train, lam, fit_base=self.shrinkage)
            m = pair_metrics(self._logits(val, heads), val.pair_user_ids)
            self.selection_[str(lam)] = {"val_accuracy": m["accuracy"], "val_log_loss": m["log_loss"]}
            key = (m["accuracy"], -m["log_loss"])
            if best is None or key > best[0]:
                best = (key, lam, heads, self.base_)
        _, self.lam_, self.heads_, self.base_ = best
        logger.info("%s: lambda = %g", self.name, self.lam_)
        return self

    def adapt(self, shots: PairData) -> dict:
        """Heads of new users fitted on their shots (the seen users' lambda; shared head frozen)."""
        if len(shots) == 0:
            return {}
        return self._fit_users(shots, self.lam_, fit_base=False)

    def _logits(self, pairs: PairData, heads: dict) -> np.ndarray:
        diff = _pair_diff(pairs)
        default = self.base_ if (self.shrinkage and self.base_ is not None) else torch.zeros(diff.shape[1], dtype=torch.float64)
        ids = pairs.pair_user_ids
        v = torch.stack([heads.get(u, default) for u in pairs.user_ids]) if pairs.user_ids else torch.zeros(0, diff.shape[1])
        return (v[torch.from_numpy(pairs.user)] * diff).sum(-1).numpy() if len(ids) else np.zeros(0)

    def predict_logits(self, pairs: PairData, heads: dict | None = None) -> np.ndarray:
        """Logits with the seen users' heads (or `heads`); unknown users get the shared head (or 0)."""
        return self._logits(pairs, self.heads_ if heads is None else heads)


class OracleGroups:
    """One BTL reward model per true group (users' groups known; `pairs.group` must be set)."""

    name = "oracle groups"

    def __init__(self, **model_kwargs) -> None:
        self.model_kwargs = model_kwargs
        self.models_: dict[int, object] = {}

    def fit(self, train: PairData, val: PairData) -> "OracleGroups":
        from palrm.reward_model import PALRewardModel

        if train.group is None:
            raise ValueError("OracleGroups needs pairs.group (the true group of each pair's user)")
        for g in np.unique(train.group):
            tr, va = train.select(train.group == g), val.select(val.group == g)
            model = PALRewardModel(kind="btl", **self.model_kwargs)
            self.models_[int(g)] = model.fit(tr, va if len(va) else None)
        return self

    def predict_logits(self, pairs: PairData) -> np.ndarray:
        out = np.full(len(pairs), np.nan)
        for g, model in self.models_.items():
            mask = pairs.group == g
            if mask.any():
                out[mask] = model.predict_logits(pairs.select(mask))
        return out


def accuracy(logits: np.ndarray, pairs: PairData) -> dict:
    """pair_metrics without the per-user table."""
    m = pair_metrics(logits, pairs.pair_user_ids)
    m.pop("per_user", None)
    return m
