"""Synthetic Gaussian preferences drawn from PAL's own ideal point model (the paper's "Synthetic" set).

Recipe (see docs/datasets.md, "Synthetic Gaussian"):

* items x_i ~ N(0, I_d), i = 1..n_items; prototypes p_k = prototype_scale * z_k, z_k ~ N(0, I_d);
* users: ``"partition"`` (each user is one prototype, groups balanced) or ``"mixture"``
  (w_u ~ Dirichlet(alpha * 1_K));
* ideal point a_u = sum_k w_uk p_k; score s_u(x) = -||x - a_u||^2;
* each user gets ``pairs_per_user`` pairs of two distinct items drawn uniformly; the first item is
  preferred with probability sigmoid((s_u(x1) - s_u(x2)) / noise) (``noise=0``: deterministic).

There are no prompts (the PAL-A setting). The items *are* their embeddings, so
``PairData.embeddings`` is the item matrix and ``PairData.texts`` are the item ids ``"0", "1", ...``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from palrm.data.schema import NO_PROMPT, PairData
from palrm.errors import ConfigError, DataFormatError

logger = logging.getLogger(__name__)

USER_MODES = ("partition", "mixture")


@dataclass
class SyntheticDataset:
    """A planted PAL-A problem and its ground truth.

    Attributes:
        pairs: all pairs (seen users first, then unseen users); ``group`` is each pair's user's true
            group (its prototype for partitions, the argmax of its weights for mixtures).
        seen_users: ids of the users meant for training.
        unseen_users: ids of held-out users drawn from the same population (few-shot adaptation).
        prototypes: (k, d) true prototypes p_k.
        user_weights: (n_users + n_unseen_users, k) true simplex weights, rows aligned with
            ``pairs.user_ids``.
        items: (n_items, d) float64 item vectors (``pairs.embeddings`` holds them as float32).
        noise: the BTL noise scale the labels were drawn with (0 = deterministic).
    """

    pairs: PairData
    seen_users: list[str]
    unseen_users: list[str]
    prototypes: np.ndarray
    user_weights: np.ndarray
    items: np.ndarray
    noise: float

    @property
    def ideal_points(self) -> np.ndarray:
        """(n_users_total, d) true ideal points a_u = W P, rows aligned with ``pairs.user_ids``."""
        return self.user_weights @ self.prototypes

    def scores(self, user_ids: list[str] | np.ndarray, item_index: np.ndarray) -> np.ndarray:
        """True scores s_u(x) = -||x - a_u||^2 for aligned arrays of user ids and item indices."""
        rows = self._user_rows(user_ids)
        diff = self.items[np.asarray(item_index, dtype=np.int64)] - self.ideal_points[rows]  # (n, d)
        return -np.einsum("nd,nd->n", diff, diff)

    def true_probability(self, pairs: PairData) -> np.ndarray:
        """(n,) true probability that each pair's user prefers ``chosen`` over ``rejected``.

        ``pairs`` may be this dataset's pairs or any subset/re-indexing of them: users are matched
        by id and items by their text (the item id), so ``select``/``compact_users`` results work.
        With ``noise == 0`` the probability is 1, 0, or 0.5 for an exact tie.
        """
        users = pairs.pair_user_ids
        chosen = self._item_index(pairs, pairs.chosen)
        rejected = self._item_index(pairs, pairs.rejected)
        margin = self.scores(users, chosen) - self.scores(users, rejected)  # (n,)
        if self.noise == 0:
            return np.where(margin > 0, 1.0, np.where(margin < 0, 0.0, 0.5))
        return _sigmoid(margin / self.noise)

    def bayes_accuracy(self, pairs: PairData) -> float:
        """Expected accuracy of the Bayes-optimal predictor that knows the true model.

        The mean over pairs of max(p, 1 - p), p = ``true_probability``: the ceiling that no model
        can beat in expectation on labels drawn from the model.
        """
        if len(pairs) == 0:
            raise ValueError("bayes_accuracy needs at least one pair; got an empty PairData")
        p = self.true_probability(pairs)
        return float(np.mean(np.maximum(p, 1.0 - p)))

    def _user_rows(self, user_ids) -> np.ndarray:
        row_of = {u: i for i, u in enumerate(self.pairs.user_ids)}
        try:
            return np.array([row_of[u] for u in user_ids], dtype=np.int64)
        except KeyError as exc:
            raise DataFormatError(
                f"user id {exc.args[0]!r} is not a user of this synthetic dataset "
                f"(it has {len(row_of)} users, e.g. {self.pairs.user_ids[:3]}); pass pairs built by "
                "build_synthetic, or a subset of them"
            ) from None

    def _item_index(self, pairs: PairData, index: np.ndarray) -> np.ndarray:
        if pairs.texts is self.pairs.texts:
            return index
        n_items = len(self.items)
        out = np.empty(len(index), dtype=np.int64)
        for j, i in enumerate(index):
            text = pairs.texts[i]
            if not (text.isdigit() and int(text) < n_items):
                raise DataFormatError(
                    f"pair {j}: response text {text!r} is not an item id of this synthetic dataset "
                    f"(expected '0'..'{n_items - 1}'); pass pairs built by build_synthetic"
                )
            out[j] = int(text)
        return out


def build_synthetic(
    d: int = 16,
    k: int = 3,
    n_users: int = 100,
    n_items: int = 500,
    pairs_per_user: int = 100,
    users: str = "partition",
    alpha: float = 1.0,
    noise: float = 1.0,
    n_unseen_users: int = 0,
    seed: int = 0,
    prototype_scale: float = 1.0,
) -> SyntheticDataset:
    """Draw a synthetic PAL-A preference data set with K* = ``k`` planted prototypes.

    Args:
        d: dimension of items and prototypes.
        k: true number of prototypes K*.
        n_users: number of seen users.
        n_items: number of items.
        pairs_per_user: pairs drawn for every user (seen and unseen).
        users: ``"partition"`` (each user is exactly one prototype; group sizes differ by at most
            one) or ``"mixture"`` (weights ~ Dirichlet(alpha)).
        alpha: Dirichlet concentration for ``"mixture"`` (small: near-partitions; large: every user
            near the population mean).
        noise: BTL noise scale; P(x1 > x2) = sigmoid((s(x1) - s(x2)) / noise); 0 = deterministic.
        n_unseen_users: extra users from the same population, for few-shot adaptation.
        seed: random seed. Items and prototypes, seen users and unseen users use independent
            streams, so changing ``n_unseen_users`` leaves the seen users' data unchanged.
        prototype_scale: prototypes are ``prototype_scale`` times a standard normal draw. With 1.0
            the user-specific part of a score difference, 2 (x1 - x2)·a_u, has about twice the
            variance of the part all users share, -(||x1||^2 - ||x2||^2): two partition groups
            agree on only about 60-68% of pairs, so a single BTL model cannot fit them.

    Returns:
        A :class:`SyntheticDataset`; user ids are ``user_0000`` ... (seen) then ``unseen_0000`` ....
    """
    _check_args(d=d, k=k, n_users=n_users, n_items=n_items, pairs_per_user=pairs_per_user, users=users,
                alpha=alpha, noise=noise, n_unseen_users=n_unseen_users, prototype_scale=prototype_scale)
    world_seq, seen_seq, unseen_seq = np.random.SeedSequence(seed).spawn(3)
    world = np.random.default_rng(world_seq)
    items = world.standard_normal((n_items, d))  # (n_items, d)
    prototypes = prototype_scale * world.standard_normal((k, d))  # (k, d)

    weights, user_list, user_index, first_items, second_items, first_wins = [], [], [], [], [], []
    for prefix, count, seq in (("user", n_users, seen_seq), ("unseen", n_unseen_users, unseen_seq)):
        if count == 0:
            continue
        rng = np.random.default_rng(seq)
        w = _draw_weights(rng, count, k, users, alpha)  # (count, k)
        ideal = w @ prototypes  # (count, d)
        offset = len(user_list)
        user_list.extend(f"{prefix}_{i:04d}" for i in range(count))
        u = np.repeat(np.arange(count), pairs_per_user)  # (count * ppu,)
        a = rng.integers(0, n_items, size=len(u))
        b = (a + rng.integers(1, n_items, size=len(u))) % n_items  # distinct from a, uniform
        margin = _score(items[a], ideal[u]) - _score(items[b], ideal[u])
        if noise == 0:
            wins = margin > 0
            ties = margin == 0
            wins[ties] = rng.random(int(ties.sum())) < 0.5
        else:
            wins = rng.random(len(u)) < _sigmoid(margin / noise)
        weights.append(w)
        user_index.append(u + offset)
        first_items.append(a)
        second_items.append(b)
        first_wins.append(wins)

    user_weights = np.concatenate(weights)
    u_all = np.concatenate(user_index)
    a_all, b_all, w_all = (np.concatenate(x) for x in (first_items, second_items, first_wins))
    group_of_user = np.argmax(user_weights, axis=1)
    pairs = PairData(
        texts=[str(i) for i in range(n_items)],
        user_ids=user_list,
        user=u_all,
        prompt=np.full(len(u_all), NO_PROMPT, dtype=np.int64),
        chosen=np.where(w_all, a_all, b_all),
        rejected=np.where(w_all, b_all, a_all),
        group=group_of_user[u_all],
        embeddings=items.astype(np.float32),
        source="<synthetic>",
        meta={
            "dataset": "synthetic",
            "params": dict(d=d, k=k, n_users=n_users, n_items=n_items, pairs_per_user=pairs_per_user,
                           users=users, alpha=alpha, noise=noise, n_unseen_users=n_unseen_users,
                           seed=seed, prototype_scale=prototype_scale),
        },
    )
    logger.info("built synthetic data: %d users (%d unseen), %d items, %d pairs, K*=%d (%s)",
                len(user_list), n_unseen_users, n_items, len(pairs), k, users)
    return SyntheticDataset(
        pairs=pairs,
        seen_users=user_list[:n_users],
        unseen_users=user_list[n_users:],
        prototypes=prototypes,
        user_weights=user_weights,
        items=items,
        noise=float(noise),
    )


def _draw_weights(rng: np.random.Generator, count: int, k: int, users: str, alpha: float) -> np.ndarray:
    """(count, k) simplex weights: balanced one-hot rows, or Dirichlet(alpha) rows."""
    if users == "partition":
        groups = rng.permutation(np.arange(count) % k)
        return np.eye(k)[groups]
    return rng.dirichlet(np.full(k, alpha), size=count)


def _score(x: np.ndarray, ideal: np.ndarray) -> np.ndarray:
    diff = x - ideal  # (n, d)
    return -np.einsum("nd,nd->n", diff, diff)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


def _check_args(**kw) -> None:
    problems = []
    for name in ("d", "k", "n_users", "n_items", "pairs_per_user"):
        if not isinstance(kw[name], (int, np.integer)) or kw[name] < 1:
            problems.append(f"{name} must be a positive integer, got {kw[name]!r}")
    if isinstance(kw["n_items"], (int, np.integer)) and kw["n_items"] < 2:
        problems.append(f"n_items must be at least 2 to form pairs, got {kw['n_items']}")
    if not isinstance(kw["n_unseen_users"], (int, np.integer)) or kw["n_unseen_users"] < 0:
        problems.append(f"n_unseen_users must be a non-negative integer, got {kw['n_unseen_users']!r}")
    if kw["users"] not in USER_MODES:
        problems.append(f"users must be one of {USER_MODES}, got {kw['users']!r}")
    if not kw["alpha"] > 0:
        problems.append(f"alpha must be > 0, got {kw['alpha']!r}")
    if not kw["noise"] >= 0:
        problems.append(f"noise must be >= 0 (0 = deterministic labels), got {kw['noise']!r}")
    if not kw["prototype_scale"] > 0:
        problems.append(f"prototype_scale must be > 0, got {kw['prototype_scale']!r}")
    if problems:
        raise ConfigError("build_synthetic: invalid arguments:\n  - " + "\n  - ".join(problems))
