"""Few-shot onboarding: learn only new users' K weight logits, every shared parameter frozen.

For each new user u the objective is (divided by the user's pair count n_u so users are independent
and equally scaled in the batched sum):

    L_u(theta_u) = (1/n_u) * sum_{pairs of u} softplus(-z(theta_u))
                   + (lambda / n_u) * R(theta_u - mean_k theta_uk)

z is PAL's preference logit with w_u = softmax(theta_u). R is the negative log prior density of the
centred logits, fitted to the known users:
    prior="none":      R = 0, maximum likelihood (the paper's protocol);
    prior="gaussian":  R = 0.5 * sum_k (c_k - mu_k)^2 / sigma_k^2      (`LogitPrior`);
    prior="mixture":   R = -log sum_m exp(-||c - c_m||^2 / (2 h^2))     (`MixturePrior`: a kernel density
                       over the known users' centred logits c_m, so a population of distinct groups
                       keeps its modes instead of being pulled to its mean).

The pair features (f of both responses, the K anchors) are computed once under no_grad, so the
shared network is never touched. For the euclidean link the logit is affine in w:

    z = ||f(r)||^2 - ||f(c)||^2 + sum_k w_k * 2 <anchor_k, f(c) - f(r)>,

so those K + 1 numbers per pair are precomputed too and each step costs O(K) per pair (other links
use the network's own `logits_from_features`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from palrm.config import AdaptConfig
from palrm.errors import ConfigError
from palrm.losses import per_pair_nll
from palrm.models.base import PairFeatures, RewardNet
from palrm.models.links import neg_sq_euclidean
from palrm.models.offset import OFFSET_VARS, input_features, map_offsets
from palrm.training.pairs import IndexedPairs


def _centre(logits: torch.Tensor) -> torch.Tensor:
    return logits - logits.mean(-1, keepdim=True)  # softmax is invariant to a shift of theta


@dataclass
class LogitPrior:
    """Gaussian prior on a user's centred logits (mean (K,), variance (K,))."""

    mean: torch.Tensor
    var: torch.Tensor

    @classmethod
    def fit(cls, logits: torch.Tensor, min_var: float = 1e-2) -> "LogitPrior":
        centred = _centre(logits)
        var = centred.var(0, unbiased=False).clamp(min=min_var) if len(logits) > 1 else torch.ones_like(centred[0])
        return cls(mean=centred.mean(0), var=var)

    def penalty(self, centred: torch.Tensor) -> torch.Tensor:
        """Negative log density (up to a constant) of centred logits (U, K) -> (U,)."""
        return 0.5 * ((centred - self.mean) ** 2 / self.var).sum(-1)


@dataclass
class MixturePrior:
    """Kernel density over the known users' centred logits: equal-weight isotropic Gaussians of
    bandwidth h centred on each known user (Scott's rule on the mean per-coordinate variance)."""

    centres: torch.Tensor  # (M, K)
    bandwidth: float

    @classmethod
    def fit(cls, logits: torch.Tensor, min_var: float = 1e-2, max_centres: int = 2048) -> "MixturePrior":
        centred = _centre(logits.detach().float())
        if len(centred) > max_centres:  # a fixed, evenly spaced subset keeps every step cheap
            centred = centred[torch.linspace(0, len(centred) - 1, max_centres).long()]
        m, k = centred.shape
        var = float(centred.var(0, unbiased=False).mean()) if m > 1 else 1.0
        h = math.sqrt(max(var, min_var)) * max(m, 1) ** (-1.0 / (k + 4))
        return cls(centres=centred, bandwidth=h)

    def penalty(self, centred: torch.Tensor) -> torch.Tensor:
        sq = torch.cdist(centred, self.centres.to(centred)) ** 2  # (U, M)
        return -torch.logsumexp(-sq / (2 * self.bandwidth**2), -1)


def fit_prior(kind: str, logits: torch.Tensor) -> LogitPrior | MixturePrior | None:
    """The prior named by `AdaptConfig.prior`, fitted to the known users' logits (U, K)."""
    if kind == "gaussian":
        return LogitPrior.fit(logits)
    if kind == "mixture":
        return MixturePrior.fit(logits)
    return None


def affine_logit_terms(net: RewardNet, feats: PairFeatures) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(c0 (n,), C (n, K)) with logit = c0 + (w * C).sum(-1), for nets with the euclidean link; else None."""
    if not net.has_users or getattr(net, "cosine", True) is not None or type(net).link is RewardNet.link:
        return None
    probe = feats.chosen[:1]
    if probe.shape[0] and not torch.equal(net.link(probe, probe), neg_sq_euclidean(probe, probe)):
        return None
    diff = feats.chosen - feats.rejected  # (n, d)
    c0 = (feats.rejected**2).sum(-1) - (feats.chosen**2).sum(-1)  # (n,)
    coef = 2 * torch.einsum("bkd,bd->bk", feats.anchors.expand(diff.shape[0], -1, -1), diff)  # (n, K)
    return c0, coef


def distinct_pair_features(net: RewardNet, table: torch.Tensor, pairs: IndexedPairs) -> PairFeatures:
    """`net.pair_features` of the pairs, with f and the anchors run once per distinct table row.

    Pairs share texts (many users compare the same responses), so running the networks on the
    distinct rows and gathering is exact and much cheaper. Nets that override `pair_features`
    (BTL) are called directly.
    """
    if type(net).pair_features is not RewardNet.pair_features:
        return net.pair_features(table[pairs.prompt], table[pairs.chosen], table[pairs.rejected])
    n = len(pairs)
    rows, inverse = torch.unique(torch.cat([pairs.chosen, pairs.rejected]), return_inverse=True)
    f = net.embed_response(table[rows])  # (R, d)
    prompts, p_inverse = torch.unique(pairs.prompt, return_inverse=True)
    anchors = net.anchors(table[prompts])  # (P, K, d) or (1, K, d)
    if anchors.shape[0] != 1 or len(prompts) != 1:
        anchors = anchors[p_inverse] if anchors.shape[0] == len(prompts) else anchors
    return PairFeatures(chosen=f[inverse[:n]], rejected=f[inverse[n:]], anchors=anchors)


def adapt_user_logits(
    net: RewardNet,
    table: torch.Tensor,
    pairs: IndexedPairs,
    n_users: int,
    cfg: AdaptConfig,
    init: torch.Tensor,
    prior: LogitPrior | MixturePrior | None = None,
) -> torch.Tensor:
    """Learn logits (n_users, K) for users 0..n_users-1 (`pairs.user` holds these local indices).

    Returns the new logits; `net` is left exactly as it was (no parameter is written).
    `cfg.prior_strength` must be a number ("auto" is resolved when a model is fitted).
    """
    if not isinstance(cfg.prior_strength, (int, float)):
        raise ConfigError(f"adapt.prior_strength = {cfg.prior_strength!r}: onboarding needs a number; \"auto\" is "
                          "chosen when a model is fitted (PALRewardModel.fit / palrm train), or pass e.g. 0.3")
    was_training = net.training
    net.eval()
    with torch.no_grad():
        feats = distinct_pair_features(net, table, pairs)
        affine = affine_logit_terms(net, feats)
    net.train(was_training)
    counts = torch.bincount(pairs.user, minlength=n_users).clamp(min=1).to(table.dtype)  # (U,)
    theta = init.detach().clone().to(table.dtype).requires_grad_(True)  # (U, K)
    if net.k == 1 or len(pairs) == 0:  # one prototype (or BTL): its weight is 1 whatever the logit
        return theta.detach()
    use_prior = prior is not None and cfg.prior != "none" and cfg.prior_strength > 0
    if affine is not None:
        return _adam_affine(affine[0], affine[1], pairs.user, counts, theta.detach(), cfg, prior if use_prior else None)
    opt = torch.optim.Adam([theta], lr=cfg.lr)
    for _ in range(cfg.steps):
        w = torch.softmax(theta, -1)[pairs.user]  # (n, K): soft weights while learning, as in fit
        nll = per_pair_nll(net.logits_from_features(feats, w))  # (n,)
        per_user = torch.zeros(n_users, dtype=nll.dtype, device=nll.device).index_add_(0, pairs.user, nll) / counts  # (U,)
        loss = per_user.sum()
        if use_prior:
            loss = loss + (cfg.prior_strength * prior.penalty(_centre(theta)) / counts).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return theta.detach()


@torch.no_grad()
def _adam_affine(c0, coef, user, counts, theta, cfg: AdaptConfig, prior) -> torch.Tensor:
    """The same objective and the same Adam updates as the autograd loop, with the gradient written
    out (logit z = c0 + C w is affine in w), so each step is a handful of small tensor operations.

    d loss / d z_i = -sigmoid(-z_i) / n_u;  d loss / d w_u = sum_i (d loss / d z_i) C_i;
    d loss / d theta_u = w_u * (g_u - <w_u, g_u>)   (softmax Jacobian);  plus the prior's gradient.
    Adam exactly as torch.optim.Adam (betas 0.9 / 0.999, eps 1e-8, no weight decay).
    """
    n_users, k = theta.shape
    if n_users == 1:
        return _adam_affine_one(c0, coef, counts, theta, cfg, prior)
    b1, b2, eps = 0.9, 0.999, 1e-8
    m, v = torch.zeros_like(theta), torch.zeros_like(theta)
    inv_count = (1.0 / counts)[user]  # (n,)
    for step in range(1, cfg.steps + 1):
        w = torch.softmax(theta, -1)  # (U, K)
        z = c0 + (coef * w[user]).sum(-1)
        dz = torch.sigmoid(-z).mul_(inv_count).neg_()
        g = torch.zeros_like(theta).index_add_(0, user, coef * dz[:, None])  # (U, K)
        grad = w * (g - (w * g).sum(-1, keepdim=True))
        if prior is not None:
            grad += _prior_grad(prior, theta) * (cfg.prior_strength / counts)[:, None]
        m.mul_(b1).add_(grad, alpha=1 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (v.sqrt() / math.sqrt(1 - b2**step)).add_(eps)
        theta.addcdiv_(m, denom, value=-cfg.lr / (1 - b1**step))
    return theta


def _adam_affine_one(c0, coef, counts, theta, cfg: AdaptConfig, prior) -> torch.Tensor:
    """`_adam_affine` for a single user in float64 NumPy: a few microseconds per step instead of
    tens (torch's per-operation overhead dominates on K + 1 numbers per pair), same updates."""
    import numpy as np

    c0n, cn = c0.double().cpu().numpy(), coef.double().cpu().numpy()  # (n,), (n, K)
    th = theta[0].double().cpu().numpy().copy()
    scale = 1.0 / float(counts[0])
    m, v = np.zeros_like(th), np.zeros_like(th)
    b1, b2, eps = 0.9, 0.999, 1e-8
    if isinstance(prior, LogitPrior):
        p_mean, p_var = prior.mean.double().cpu().numpy(), prior.var.double().cpu().numpy()
    elif isinstance(prior, MixturePrior):
        centres, h2 = prior.centres.double().cpu().numpy(), prior.bandwidth**2
    strength = cfg.prior_strength * scale
    for step in range(1, cfg.steps + 1):
        e = np.exp(th - th.max())
        w = e / e.sum()
        z = c0n + cn @ w
        dz = -scale * np.exp(-np.logaddexp(0.0, z))  # -sigmoid(-z) / n
        g = cn.T @ dz
        grad = w * (g - w @ g)
        if prior is not None:
            c = th - th.mean()
            if isinstance(prior, LogitPrior):
                gc = (c - p_mean) / p_var
            elif isinstance(prior, MixturePrior):
                logits = -((c - centres) ** 2).sum(1) / (2 * h2)
                r = np.exp(logits - logits.max())
                gc = (c - (r / r.sum()) @ centres) / h2
            else:
                gc = _prior_grad(prior, torch.from_numpy(th[None]).to(theta))[0].double().cpu().numpy()  # centred
            grad = grad + strength * (gc - gc.mean())
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad * grad
        th = th - (cfg.lr / (1 - b1**step)) * m / (np.sqrt(v) / math.sqrt(1 - b2**step) + eps)
    return torch.from_numpy(th[None]).to(theta)  # back on theta's device and dtype


def _prior_grad(prior, theta: torch.Tensor) -> torch.Tensor:
    """Gradient of prior.penalty(centre(theta)) with respect to theta (U, K)."""
    c = _centre(theta)
    if isinstance(prior, LogitPrior):
        gc = (c - prior.mean) / prior.var
    elif isinstance(prior, MixturePrior):
        h2 = prior.bandwidth**2
        centres = prior.centres.to(c)
        r = torch.softmax(-torch.cdist(c, centres) ** 2 / (2 * h2), -1)  # (U, M) responsibilities
        gc = (c - r @ centres) / h2
    else:  # any other prior: let autograd differentiate its penalty
        with torch.enable_grad():
            t = theta.detach().requires_grad_(True)
            prior.penalty(_centre(t)).sum().backward()
        return t.grad
    return gc - gc.mean(-1, keepdim=True)  # chain rule through the centring


# ---- personal offsets (models/offset.py) ---------------------------------------------------------
@torch.no_grad()
def offset_terms(net: RewardNet, table: torch.Tensor, pairs: IndexedPairs, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(b (n,), x (n, r)): PAL's logit of each pair under its user's mixture (logits (U, K), local rows
    `pairs.user`) and the offset features, so that z = b + <delta_u, x> (models/offset.py)."""
    was_training = net.training
    net.eval()
    feats = distinct_pair_features(net, table, pairs)
    w = net.weights_from_logits(logits.to(table.dtype))[pairs.user]  # (n, K): offset 0
    base = net.logits_from_features(feats, w)  # (n,)
    if net.offset_kind == "latent":
        x = 2 * (feats.chosen - feats.rejected)  # (n, d)
    else:
        x = input_features(table[pairs.chosen]) - input_features(table[pairs.rejected])  # (n, D + 1)
    net.train(was_training)
    return base, x


def fit_user_offsets(net: RewardNet, table: torch.Tensor, pairs: IndexedPairs, n_users: int, logits: torch.Tensor,
                     var: float) -> torch.Tensor:
    """MAP offsets (n_users, r) of users 0..n_users-1 given their mixture logits (n_users, K)."""
    base, x = offset_terms(net, table, pairs, logits)
    return map_offsets(base, x, pairs.user, n_users, var).to(table)


def offset_var_grid(net: RewardNet, table: torch.Tensor, pairs: IndexedPairs, logits: torch.Tensor) -> list[float]:
    """`OFFSET_VARS` in units of 1 / mean ||x||^2 over `pairs` (so the grid fits any feature scale)."""
    _, x = offset_terms(net, table, pairs, logits)
    scale = float((x.double() ** 2).sum(-1).mean()) if len(x) else 1.0
    return [v / max(scale, 1e-12) for v in OFFSET_VARS]


def choose_offset_var(net: RewardNet, table: torch.Tensor, train: IndexedPairs, val: IndexedPairs | None,
                      logits: torch.Tensor) -> tuple[float, list[dict]]:
    """sigma^2 of the offset prior by validation log-loss of the known users (train / val rows index
    the net's user table, `logits` = its user logits). Returns (sigma^2, [{var, val_log_loss}])."""
    grid = offset_var_grid(net, table, train, logits)
    if val is None or len(val) == 0:
        return grid[len(grid) // 2], []
    n_users = logits.shape[0]
    vb, vx = offset_terms(net, table, val, logits)
    scores = []
    for var in grid:
        delta = fit_user_offsets(net, table, train, n_users, logits, var)
        z = vb + (delta.to(vx)[val.user] * vx).sum(-1)
        scores.append({"var": var, "val_log_loss": float(per_pair_nll(z).mean())})
    best = min(scores, key=lambda s: s["val_log_loss"])
    return best["var"], scores
