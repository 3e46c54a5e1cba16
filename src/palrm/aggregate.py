"""Pluralistic aggregation: one reward for a population, from the rewards of its groups.

A single reward has to come out when one policy serves everybody; how it aggregates the groups
decides who the policy serves. A plain BTL reward follows the majority. Here the aggregation is
explicit, chosen by a spec string (`parse_aggregate`), and computed from the K per-prototype scores
of one forward pass (`prototype_scores`).

Groups. G groups, each a weight vector v_g on the simplex over the K prototypes:
    "@prototypes" (default)  the K prototypes / learned groups themselves: V = I_K (G = K)
    "@users"                 every known user: row u of V is w_u (G = U; partition users one-hot)

Common scale. The raw per-prototype reward is PAL's score under prototype k's one-hot weights,
s_k(t, x) = score(e_k, t, x). Prototypes' rewards have different offsets and spreads, so each is
standardised on a reference set Ref of (prompt, response) items:

    z_k(t, x) = (s_k(t, x) - mu_k) / sigma_k          mu_k, sigma_k: mean and std of s_k over Ref

Ref is by default the distinct (prompt, response) items of the training pairs (chosen and rejected
responses alike; at most `MAX_REFERENCE_ITEMS`, drawn with a fixed seed) and (mu, sigma) are stored
with the model (`ReferenceStats`). A group's reward on this common scale is the mixture of its
prototypes' standardised rewards:

    z_g(t, x) = sum_k v_gk z_k(t, x)           i.e.  Z_groups (n, G) = Z (n, K) @ V^T (K, G)

Why a mixture: for the euclidean link, s_w(t, x) = sum_k w_k s_k(t, x) + c_w(t) with
c_w(t) = sum_k w_k ||a_k(t)||^2 - ||a_w(t)||^2, which does not depend on the response: a mixture's
reward IS the mixture of its prototypes' rewards up to a per-prompt constant, so z_g ranks the
responses of one prompt as user g's own reward does whenever the prototypes' spreads agree (for the
cosine link, and for unequal spreads, it is the definition). It also makes every aggregate cost one
(n, K) forward plus O(n G) arithmetic, and `mean@users` exactly equal to `mean:size`.

Aggregates (Z (n, G) -> (n,); pi_g = 1/G unless said; on the z scale: G equal values give that value):
    mean          sum_g pi_g z_g                                   utilitarian, each group once
    mean:size     sum_g m_g z_g, m_g = group size / population     utilitarian, each user once
                  (prototypes: m_k = mean_u w_uk; users: 1/U)
    maxmin        min_g z_g                                        egalitarian (Rawls; MaxMin-RLHF)
    softmin:TAU   -TAU log sum_g pi_g exp(-z_g / TAU)              TAU > 0; TAU -> 0: maxmin, TAU -> inf: mean
    alpha:A       logit(M_{1-A}(u)), u_g = sigmoid(z_g),           A >= 0, alpha-fairness (Mo & Walrand 2000):
                  M_p(u) = (sum_g pi_g u_g^p)^(1/p), M_0 = prod_g u_g^pi_g
                  A = 0: utilitarian on u, A = 1: proportional fairness (Nash welfare, geometric mean),
                  A -> inf: maxmin (logit(min_g sigmoid(z_g)) = min_g z_g). The utility u_g in (0, 1)
                  is the BTL probability that group g prefers x to a response of reference-average
                  reward, reading one standard deviation as one logit; the power mean needs positive
                  utilities, and its diminishing returns are what make A > 0 favour worse-off groups.
                  z is clipped to [-30, 30] (30 std) for float64 precision.
    quantile:Q    the Q-quantile of z_g over the groups            0 <= Q <= 1, linear interpolation;
                  over the users unless "@prototypes" is given (Q = 0: the worst-off user)

A BTL model has one reward for everybody: one group, every aggregate is its standardised reward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from palrm.data.schema import NO_PROMPT
from palrm.errors import ConfigError

__all__ = [
    "AGGREGATE_FORMS",
    "Aggregate",
    "MAX_REFERENCE_ITEMS",
    "ReferenceStats",
    "aggregate_rewards",
    "population_reward",
    "alpha_fair",
    "group_weights",
    "maxmin",
    "mean",
    "needs_users",
    "parse_aggregate",
    "prototype_scores",
    "quantile",
    "reference_items",
    "reference_scores",
    "reference_stats",
    "softmin",
    "standardise",
]

#: The valid spec forms, as listed in every parsing error.
AGGREGATE_FORMS = (
    "mean", "mean:size", "maxmin", "softmin:TAU (TAU > 0)", "alpha:A (A >= 0)", "quantile:Q (0 <= Q <= 1)",
)
_OVER = ("prototypes", "users")
MAX_REFERENCE_ITEMS = 4096
_Z_CLIP = 30.0
_STD_FLOOR = 1e-8
_MAX_CELLS = 1 << 24  # items x groups per chunk when aggregating over many users


def _forms() -> str:
    return (", ".join(AGGREGATE_FORMS) + "; optionally followed by @prototypes (the K learned groups, the default) "
            "or @users (every known user; the default for quantile), e.g. 'maxmin', 'softmin:0.5', 'quantile:0.1@users'")


@dataclass(frozen=True)
class Aggregate:
    """A parsed aggregate: `name` (mean, maxmin, softmin, alpha, quantile), its parameter, the
    weighting of `mean` ("equal" or "size") and the groups it runs `over` ("prototypes" or "users")."""

    name: str
    param: float | None = None
    over: str = "prototypes"
    weighting: str = "equal"

    def __str__(self) -> str:
        head = self.name
        if self.name == "mean" and self.weighting == "size":
            head = "mean:size"
        elif self.param is not None:
            short = f"{self.param:g}"
            head = f"{self.name}:{short if float(short) == self.param else repr(self.param)}"  # exact round trip
        return f"{head}@{self.over}"


def parse_aggregate(spec: str | Aggregate) -> Aggregate:
    """Parse an aggregate spec ("mean", "mean:size", "maxmin", "softmin:TAU", "alpha:A", "quantile:Q",
    each optionally followed by "@prototypes" or "@users"). Raises ConfigError listing the valid forms."""
    if isinstance(spec, Aggregate):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"aggregate={spec!r}: expected a string; valid forms: {_forms()}")
    text = spec.strip()
    body, at, over = text.partition("@")
    if at and over not in _OVER:
        raise ConfigError(f"aggregate={spec!r}: unknown groups '@{over}'; valid forms: {_forms()}")
    name, colon, arg = body.partition(":")
    name = name.strip().lower()

    def number(what: str) -> float:
        try:
            value = float(arg)
        except ValueError:
            value = math.nan
        if not colon or not math.isfinite(value):
            raise ConfigError(f"aggregate={spec!r}: {name} needs a finite number {what}; valid forms: {_forms()}")
        return value

    if name == "mean":
        if colon and arg != "size":
            raise ConfigError(f"aggregate={spec!r}: mean takes no parameter or ':size'; valid forms: {_forms()}")
        return Aggregate("mean", None, over or "prototypes", "size" if colon else "equal")
    if name == "maxmin":
        if colon:
            raise ConfigError(f"aggregate={spec!r}: maxmin takes no parameter; valid forms: {_forms()}")
        return Aggregate("maxmin", None, over or "prototypes")
    if name == "softmin":
        tau = number("TAU > 0 (e.g. softmin:0.5)")
        if tau <= 0:
            raise ConfigError(f"aggregate={spec!r}: softmin's TAU must be > 0 (TAU -> 0 is maxmin); valid forms: {_forms()}")
        return Aggregate("softmin", tau, over or "prototypes")
    if name == "alpha":
        a = number("A >= 0 (e.g. alpha:1)")
        if a < 0:
            raise ConfigError(f"aggregate={spec!r}: alpha's A must be >= 0 (0 = utilitarian, 1 = proportional "
                              f"fairness, large = maxmin); valid forms: {_forms()}")
        return Aggregate("alpha", a, over or "prototypes")
    if name == "quantile":
        q = number("Q in [0, 1] (e.g. quantile:0.1)")
        if not 0 <= q <= 1:
            raise ConfigError(f"aggregate={spec!r}: quantile's Q must be in [0, 1]; valid forms: {_forms()}")
        return Aggregate("quantile", q, over or "users")
    raise ConfigError(f"aggregate={spec!r}: unknown aggregate {name!r}; valid forms: {_forms()}")


# ---------------------------------------------------------------------------------------- the aggregates
def _pi(pi: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor:
    """Group weights (G,) summing to 1: `pi` normalised, or uniform."""
    g = z.shape[1]
    if pi is None:
        return torch.full((g,), 1.0 / g, dtype=z.dtype, device=z.device)
    pi = pi.to(z)
    return pi / pi.sum()


def mean(z: torch.Tensor, pi: torch.Tensor | None = None) -> torch.Tensor:
    """sum_g pi_g z_g: (n, G) -> (n,)."""
    return z @ _pi(pi, z)


def maxmin(z: torch.Tensor) -> torch.Tensor:
    """min_g z_g: (n, G) -> (n,)."""
    return z.min(dim=1).values


def softmin(z: torch.Tensor, tau: float, pi: torch.Tensor | None = None) -> torch.Tensor:
    """-tau log sum_g pi_g exp(-z_g / tau): (n, G) -> (n,); between min_g z_g and the pi-mean.

    Computed as min_g z_g - tau log sum_g pi_g exp(-(z_g - min) / tau), finite for any tau > 0."""
    low = z.min(dim=1, keepdim=True).values  # (n, 1)
    return low.squeeze(1) - tau * torch.logsumexp(-(z - low) / tau + _pi(pi, z).log(), dim=1)


def alpha_fair(z: torch.Tensor, a: float, pi: torch.Tensor | None = None) -> torch.Tensor:
    """logit of the power mean M_{1-a} of u = sigmoid(z): (n, G) -> (n,) (see the module docstring)."""
    z64 = z.double().clamp(-_Z_CLIP, _Z_CLIP)
    log_u = -torch.nn.functional.softplus(-z64)  # (n, G) log sigmoid(z), stable
    log_pi = _pi(pi, z64).log()  # (G,)
    p = 1.0 - a
    if abs(p) < 1e-12:  # the geometric mean (Nash welfare)
        log_m = log_u @ log_pi.exp()
    else:  # (1/p) log sum_g pi_g u_g^p, shifted by the dominant log u so that no term overflows for any finite A
        ref = (log_u.min(dim=1, keepdim=True) if p < 0 else log_u.max(dim=1, keepdim=True)).values  # (n, 1)
        log_m = ref.squeeze(1) + torch.logsumexp(p * (log_u - ref) + log_pi, dim=1) / p  # (n,)
    log_m = log_m.clamp(max=-1e-300)  # M < 1 in exact arithmetic
    return (log_m - torch.log(-torch.expm1(log_m))).to(z.dtype)  # logit(M) = log M - log(1 - M)


def quantile(z: torch.Tensor, q: float) -> torch.Tensor:
    """The q-quantile of each row over the groups (linear interpolation, as torch.quantile): (n, G) -> (n,).

    Only the two order statistics around position q (G - 1) are found (top-k from the nearer end),
    which is several times faster than sorting every row when G is the number of users."""
    g = z.shape[1]
    pos = q * (g - 1)
    lo = min(int(math.floor(pos)), g - 1)
    hi = min(lo + 1, g - 1)
    if lo < g / 2:  # ascending order statistics lo and hi: the hi + 1 smallest
        v = z.topk(hi + 1, dim=1, largest=False, sorted=True).values  # (n, hi + 1)
        a, b = v[:, lo], v[:, hi]
    else:  # from the top: ascending index i is the (g - 1 - i)-th largest
        v = z.topk(g - lo, dim=1, largest=True, sorted=True).values  # (n, g - lo)
        a, b = v[:, g - 1 - lo], v[:, g - 1 - hi]
    return a + (pos - lo) * (b - a)


# ---------------------------------------------------------------------------------------- common scale
@dataclass
class ReferenceStats:
    """mu_k, sigma_k (K,) of each prototype's raw reward over the reference set; stored with the model."""

    mean: np.ndarray
    std: np.ndarray
    n_items: int
    source: str = "training pairs"

    def to_dict(self) -> dict:
        return {"mean": [float(x) for x in self.mean], "std": [float(x) for x in self.std],
                "n_items": int(self.n_items), "source": self.source}

    @classmethod
    def from_dict(cls, data: dict) -> "ReferenceStats":
        return cls(np.asarray(data["mean"], dtype=np.float64), np.asarray(data["std"], dtype=np.float64),
                   int(data["n_items"]), str(data.get("source", "")))


def reference_items(data: Any, max_items: int = MAX_REFERENCE_ITEMS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The reference set of `data` (PairData, or any pairs with prompt / chosen / rejected row arrays,
    e.g. memory-mapped ones): its distinct (prompt row, response row) items, chosen and rejected alike;
    at most `max_items`, drawn with `seed`. Returns (prompt rows, response rows), NO_PROMPT = none.
    Data with more than 16 x max_items pairs is first thinned to that many pairs (seeded)."""
    n = len(data.prompt)
    pick = slice(None)
    if n > 16 * max_items:  # do not sort tens of millions of rows to keep a few thousand
        pick = np.unique(np.random.default_rng(seed).integers(0, n, 16 * max_items))
    p, c, r = (np.asarray(a[pick]) for a in (data.prompt, data.chosen, data.rejected))
    prompt = np.concatenate([p, p]).astype(np.int64)
    response = np.concatenate([c, r]).astype(np.int64)
    items = np.unique(np.stack([prompt, response], 1), axis=0)  # (n_distinct, 2), sorted: deterministic
    if len(items) > max_items:
        items = items[np.sort(np.random.default_rng(seed).choice(len(items), max_items, replace=False))]
    return items[:, 0], items[:, 1]


def reference_stats(scores: torch.Tensor | np.ndarray, source: str = "training pairs") -> ReferenceStats:
    """(mu, sigma) of raw per-prototype scores (n_ref, K) over the reference set (sigma floored at 1e-8)."""
    s = torch.as_tensor(scores).double()
    if s.ndim != 2 or s.shape[0] < 2:
        raise ConfigError(f"reference statistics need at least 2 reference items, got scores of shape {tuple(s.shape)}")
    std = s.std(0, unbiased=False).clamp(min=_STD_FLOOR)
    return ReferenceStats(s.mean(0).cpu().numpy(), std.cpu().numpy(), int(s.shape[0]), source)


def standardise(scores: torch.Tensor, stats: ReferenceStats) -> torch.Tensor:
    """z_k = (s_k - mu_k) / sigma_k: (n, K) -> (n, K)."""
    if scores.shape[-1] != len(stats.mean):
        raise ConfigError(f"reference statistics are for {len(stats.mean)} prototypes, the scores have "
                          f"{scores.shape[-1]}; recompute them for this model")
    mu = torch.as_tensor(stats.mean, dtype=scores.dtype, device=scores.device)
    sigma = torch.as_tensor(stats.std, dtype=scores.dtype, device=scores.device)
    return (scores - mu) / sigma


# ---------------------------------------------------------------------------------------- groups
def group_weights(agg: Aggregate, k: int, user_weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(V (G, K), pi (G,) or None = uniform) of the groups `agg` runs over.

    user_weights: (U, K) w_u of the known users (needed for "@users" and "mean:size"); None for BTL.
    """
    if user_weights is None or k == 1:  # BTL, or a one-prototype model: one group
        return torch.eye(k), None
    if agg.over == "users":
        if user_weights.shape[0] == 0:
            raise ConfigError(f"aggregate {agg}: the model knows no users; aggregate @prototypes instead")
        return user_weights, None
    pi = user_weights.mean(0) if agg.name == "mean" and agg.weighting == "size" else None  # (K,) population mass
    return torch.eye(k, dtype=user_weights.dtype, device=user_weights.device), pi


def aggregate_rewards(scores: torch.Tensor, stats: ReferenceStats, agg: str | Aggregate,
                      user_weights: torch.Tensor | None) -> torch.Tensor:
    """One reward per item from raw per-prototype scores (n, K): standardise, mix into groups, aggregate.

    user_weights: (U, K) the known users' w_u (eval-mode weights; None for BTL). Returns (n,).
    """
    agg = parse_aggregate(agg)
    z = standardise(scores.double(), stats)  # (n, K)
    v, pi = group_weights(agg, z.shape[1], None if user_weights is None else user_weights.double().to(z.device))
    v = v.to(z)
    step = max(1, _MAX_CELLS // v.shape[0])  # bounded memory for (n, U) over many users
    return torch.cat([_aggregate(z[i:i + step] @ v.T, agg, pi) for i in range(0, len(z), step)]).to(scores.dtype)


def _aggregate(zg: torch.Tensor, agg: Aggregate, pi: torch.Tensor | None) -> torch.Tensor:
    """The aggregate `agg` of group rewards (n, G) -> (n,)."""
    if agg.name == "mean":
        return mean(zg, pi)
    if agg.name == "maxmin":
        return maxmin(zg)
    if agg.name == "softmin":
        return softmin(zg, agg.param, pi)
    if agg.name == "alpha":
        return alpha_fair(zg, agg.param, pi)
    return quantile(zg, agg.param)


# ---------------------------------------------------------------------------------------- one forward pass
def prototype_scores(net: Any, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """Raw per-prototype rewards s_k(t, x) = score(e_k, t, x): prompt, response (n, D) -> (n, K).

    One pass: f(x) and the K anchors are computed once, then the link against each anchor (the links
    reduce over the last axis, so they broadcast: no (n, K, d) copies). A BTL net has one reward: (n, 1).
    """
    n = response.shape[0]
    if not net.mixture:  # BTL (personal heads, if any, are not prototypes)
        return net.score(response.new_ones(n, 1), prompt, response).unsqueeze(1)  # (n, 1)
    fx = net.embed_response(response)  # (n, d)
    anchors = net.anchors(prompt)  # (n, K, d) or (1, K, d)
    return net.link(fx.unsqueeze(1), anchors).expand(n, -1)  # (n, 1, d) against (n|1, K, d) -> (n, K)


def reference_scores(net: Any, table: torch.Tensor, prompt_rows: np.ndarray, response_rows: np.ndarray,
                     batch_size: int = 1024) -> torch.Tensor:
    """prototype_scores of reference items given as rows of an embedding table (T, D): (n_ref, K).

    A prompt row NO_PROMPT (-1) stands for no prompt (the zero vector)."""
    out = []
    dev = table.device
    was_training = net.training
    net.eval()
    with torch.no_grad():
        for start in range(0, len(response_rows), batch_size):
            p = torch.as_tensor(prompt_rows[start:start + batch_size], device=dev)
            x = torch.as_tensor(response_rows[start:start + batch_size], device=dev)
            pv = torch.where((p != NO_PROMPT)[:, None], table[p.clamp(min=0)], torch.zeros((), device=dev))
            out.append(prototype_scores(net, pv, table[x]))
    net.train(was_training)
    return torch.cat(out, 0)


def population_reward(net: Any, stats: ReferenceStats | None, agg: str | Aggregate, prompt: torch.Tensor,
                      response: torch.Tensor, user_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Aggregated rewards (n,) of items given as prompt and response vectors (n, D), on the CPU.

    One forward pass for the K per-prototype scores. The groups' users are `user_weights` (U, K) when
    given (an exported model carries them), else the net's known users, read only when the aggregate
    needs them ("@users", "mean:size")."""
    agg = parse_aggregate(agg)
    if stats is None:
        raise ConfigError("this model has no reference statistics for aggregates (saved by an older palrm): "
                          "compute them with model.set_reference(training_pairs)")
    net.eval()
    with torch.no_grad():
        scores = prototype_scores(net, prompt, response)  # (n, K)
        if needs_users(agg, net.has_users) and user_weights is None:
            user_weights = net.user_weights(torch.arange(net.num_users, device=scores.device))[:, : net.k]  # (U, K): mixtures
        return aggregate_rewards(scores, stats, agg, user_weights if net.has_users else None).cpu()


def needs_users(agg: str | Aggregate, has_users: bool = True) -> bool:
    """Whether `agg` reads the users' weights (over users, or the mean weighted by group size)."""
    agg = parse_aggregate(agg)
    return has_users and (agg.over == "users" or agg.weighting == "size")
