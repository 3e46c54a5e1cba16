"""Few-shot onboarding: learn only new users' K weight logits, every shared parameter frozen.

For each new user u the objective is (divided by the user's pair count n_u so users are independent
and equally scaled in the batched sum):

    L_u(theta_u) = (1/n_u) * sum_{pairs of u} softplus(-z(theta_u))
                   + (lambda / n_u) * 0.5 * sum_k (theta_uk - mu_k)^2 / sigma_k^2      (prior="gaussian")

z is PAL's preference logit with w_u = softmax(theta_u). With prior="none" this is maximum
likelihood, the paper's protocol. The pair features (f of both responses, the K anchors) are
computed once under no_grad, so the shared network is never touched and each step costs only a
weighted sum of K anchors per pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from palrm.config import AdaptConfig
from palrm.losses import per_pair_nll
from palrm.models.base import RewardNet
from palrm.training.loop import IndexedPairs


@dataclass
class LogitPrior:
    """Gaussian prior on a user's centred logits (mean (K,), variance (K,))."""

    mean: torch.Tensor
    var: torch.Tensor

    @classmethod
    def fit(cls, logits: torch.Tensor, min_var: float = 1e-2) -> "LogitPrior":
        centred = logits - logits.mean(-1, keepdim=True)  # softmax is invariant to a shift of theta
        var = centred.var(0, unbiased=False).clamp(min=min_var) if len(logits) > 1 else torch.ones(logits.shape[1])
        return cls(mean=centred.mean(0), var=var)


def adapt_user_logits(
    net: RewardNet,
    table: torch.Tensor,
    pairs: IndexedPairs,
    n_users: int,
    cfg: AdaptConfig,
    init: torch.Tensor,
    prior: LogitPrior | None = None,
) -> torch.Tensor:
    """Learn logits (n_users, K) for users 0..n_users-1 (`pairs.user` holds these local indices).

    Returns the new logits; `net` is left exactly as it was (no parameter is written).
    """
    was_training = net.training
    net.eval()
    with torch.no_grad():
        feats = net.pair_features(table[pairs.prompt], table[pairs.chosen], table[pairs.rejected])
    net.train(was_training)
    counts = torch.bincount(pairs.user, minlength=n_users).clamp(min=1).to(table.dtype)  # (U,)
    theta = init.detach().clone().to(table.dtype).requires_grad_(True)  # (U, K)
    if not net.has_users or len(pairs) == 0:
        return theta.detach()
    opt = torch.optim.Adam([theta], lr=cfg.lr)
    use_prior = prior is not None and cfg.prior == "gaussian" and cfg.prior_strength > 0
    for _ in range(cfg.steps):
        w = torch.softmax(theta, -1)[pairs.user]  # (n, K): soft weights while learning, as in fit
        nll = per_pair_nll(net.logits_from_features(feats, w))  # (n,)
        per_user = torch.zeros(n_users, dtype=nll.dtype).index_add_(0, pairs.user, nll) / counts  # (U,)
        loss = per_user.sum()
        if use_prior:
            centred = theta - theta.mean(-1, keepdim=True)
            loss = loss + (cfg.prior_strength * 0.5 * ((centred - prior.mean) ** 2 / prior.var).sum(-1) / counts).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return theta.detach()
