"""Seeded, deterministic splits of preference pairs: per-user train / validation / test, seen vs
unseen users, and few-shot adaptation pools with nested shot sets.

Randomness: every per-user shuffle uses its own ``numpy.random.Generator`` seeded by
``(seed, hash(user id))`` (a stable BLAKE2 hash, not Python's salted ``hash``). A user's split
therefore depends only on the seed, the user's id and the user's pairs (in file order), not on
which other users are in the data or on their order.

The user list (``user_ids``) of the input is kept by `split_pairs`, `few_shot_split` and
`take_shots` (so user indices agree across the parts); `split_users` compacts each part to its own
users, since seen and unseen users are meant to be disjoint populations.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from palrm.data.schema import SPLITS, PairData
from palrm.errors import ConfigError, DataFormatError, UnknownUserError

logger = logging.getLogger(__name__)

__all__ = ["PairSplits", "few_shot_split", "split_pairs", "split_users", "take_shots"]


@dataclass
class PairSplits:
    """Train / validation / test parts of one PairData (all share its texts, embeddings and user list)."""

    train: PairData
    validation: PairData
    test: PairData

    def __getitem__(self, name: str) -> PairData:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def __iter__(self) -> Iterator[tuple[str, PairData]]:
        """Yield ``(name, part)`` for train, validation and test."""
        return iter([(name, getattr(self, name)) for name in SPLITS])

    def sizes(self) -> dict[str, int]:
        """Number of pairs in each part."""
        return {name: len(part) for name, part in self}


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}.")
    return int(seed)


def _user_rng(seed: int, user_id: str) -> np.random.Generator:
    """A generator that depends only on (seed, user_id)."""
    digest = hashlib.blake2b(user_id.encode("utf-8"), digest_size=8).digest()
    return np.random.default_rng([seed, int.from_bytes(digest, "little")])


def _pairs_by_user(data: PairData) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(user index, positions of the user's pairs in ascending order)`` for every user with pairs."""
    if len(data) == 0:
        return
    order = np.argsort(data.user, kind="stable")
    users, starts = np.unique(data.user[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    for user, start, end in zip(users, starts, ends):
        yield int(user), order[start:end]


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def split_pairs(
    data: PairData,
    *,
    val_frac: float = 0.1,
    test_frac: float = 0.2,
    seed: int = 0,
    honour_split_column: bool = True,
) -> PairSplits:
    """Split pairs into train / validation / test, each user's pairs separately.

    When ``data.split`` is present (a ``split`` column in the file) and `honour_split_column` is
    true, that assignment is used as is and the fractions and seed are ignored (logged at INFO).

    Otherwise, for a user with ``n`` pairs (shuffled with the user's own seeded generator):
    ``n_test = floor(test_frac * n + 1/2)`` and ``n_val = floor(val_frac * n + 1/2)`` (halves round
    up); if that leaves no training pair, validation and then test give pairs back until one
    training pair remains. So users with one or two pairs (at the default fractions) keep all
    their pairs in train, and every user with pairs has at least one training pair. Each part
    lists its pairs in their original order.

    Args:
        data: the pairs.
        val_frac: fraction of each user's pairs for validation, in [0, 1).
        test_frac: fraction of each user's pairs for test, in [0, 1); ``val_frac + test_frac < 1``.
        seed: non-negative seed; the same seed gives the same split.
        honour_split_column: use ``data.split`` when present.

    Raises:
        ConfigError: fractions or seed out of range.
        DataFormatError: ``data.split`` holds a value other than train / validation / test.
    """
    seed = _check_seed(seed)
    if data.split is not None and honour_split_column:
        values = np.asarray(data.split, dtype=object)
        unknown = sorted({str(v) for v in values} - set(SPLITS))
        if unknown:
            raise DataFormatError(
                f"{data.source}: the split column holds {', '.join(repr(u) for u in unknown)}; expected "
                f"{', '.join(SPLITS)}. Fix the column or call split_pairs(..., honour_split_column=False)."
            )
        parts = PairSplits(*(data.select(values == name) for name in SPLITS))
        logger.info(
            "Using the split column of %s (%s); val_frac, test_frac and seed are not used",
            data.source, ", ".join(f"{k} {v}" for k, v in parts.sizes().items()),
        )
        if len(parts.train) == 0:
            logger.warning("%s: the split column assigns no pairs to train", data.source)
        return parts

    problems = [
        f"{name} must be in [0, 1), got {value!r}"
        for name, value in (("val_frac", val_frac), ("test_frac", test_frac))
        if not 0.0 <= value < 1.0
    ]
    if not problems and val_frac + test_frac >= 1.0:
        problems.append(f"val_frac + test_frac must be below 1 (no training pairs otherwise), got {val_frac + test_frac:g}")
    if problems:
        raise ConfigError("Invalid split fractions: " + "; ".join(problems) + ".")

    assignment = np.empty(len(data), dtype=np.int8)  # 0 train, 1 validation, 2 test
    for user, positions in _pairs_by_user(data):
        n = len(positions)
        n_test = _round_half_up(test_frac * n)
        n_val = _round_half_up(val_frac * n)
        while n - n_test - n_val < 1:
            if n_val > 0:
                n_val -= 1
            else:
                n_test -= 1
        shuffled = _user_rng(seed, data.user_ids[user]).permutation(positions)
        assignment[shuffled[:n_test]] = 2
        assignment[shuffled[n_test : n_test + n_val]] = 1
        assignment[shuffled[n_test + n_val :]] = 0
    parts = PairSplits(*(data.select(assignment == code) for code in range(3)))
    logger.info(
        "Split %d pairs per user (val_frac %g, test_frac %g, seed %d): %s",
        len(data), val_frac, test_frac, seed, ", ".join(f"{k} {v}" for k, v in parts.sizes().items()),
    )
    return parts


def split_users(
    data: PairData,
    *,
    unseen_frac: float = 0.2,
    unseen_users: Iterable[str] | None = None,
    seed: int = 0,
) -> tuple[PairData, PairData]:
    """Split users into seen users (for training) and unseen users (for few-shot adaptation).

    With `unseen_users` those users are unseen and everybody else is seen. Otherwise
    ``floor(unseen_frac * n_users + 1/2)`` users, drawn with ``default_rng(seed)`` from the sorted
    user ids that have pairs, are unseen; when ``unseen_frac > 0`` at least one user is unseen and
    at least one stays seen (given two or more users).

    Returns:
        ``(seen, unseen)``: all pairs of the seen and of the unseen users, each with its user list
        compacted to its own users.

    Raises:
        UnknownUserError: an id in `unseen_users` has no pairs in `data`.
        ConfigError: `unseen_frac` outside [0, 1), or `unseen_users` would leave no seen user.
    """
    seed = _check_seed(seed)
    present = sorted(data.users_present())
    if unseen_users is not None:
        wanted = [str(u) for u in unseen_users]
        known = set(present)
        missing = [u for u in wanted if u not in known]
        if missing:
            raise UnknownUserError(
                f"{data.source}: unseen user{'s' if len(missing) > 1 else ''} "
                f"{', '.join(repr(u) for u in missing[:5])} ha{'ve' if len(missing) > 1 else 's'} no pairs; "
                f"users present are e.g. {', '.join(repr(u) for u in present[:5])} ({len(present)} in all). "
                "Check the ids (they are compared as strings)."
            )
        unseen = set(wanted)
        if unseen >= known:
            raise ConfigError(f"unseen_users lists every user of {data.source}; leave at least one user seen for training.")
    else:
        if not 0.0 <= unseen_frac < 1.0:
            raise ConfigError(f"unseen_frac must be in [0, 1), got {unseen_frac!r}.")
        n_users = len(present)
        n_unseen = _round_half_up(unseen_frac * n_users)
        if unseen_frac > 0 and n_users >= 2:
            n_unseen = min(max(n_unseen, 1), n_users - 1)
        else:
            n_unseen = min(n_unseen, max(n_users - 1, 0))
        if unseen_frac > 0 and n_unseen == 0:
            logger.warning("%s: only %d user(s); no user left for the unseen set", data.source, n_users)
        chosen = np.random.default_rng(seed).choice(n_users, size=n_unseen, replace=False) if n_unseen else []
        unseen = {present[i] for i in chosen}
    is_unseen_user = np.array([u in unseen for u in data.user_ids], dtype=bool)
    mask = is_unseen_user[data.user] if len(data) else np.zeros(0, dtype=bool)
    seen_part = data.select(~mask).compact_users()
    unseen_part = data.select(mask).compact_users()
    logger.info(
        "Split users of %s: %d seen (%d pairs), %d unseen (%d pairs)",
        data.source, len(seen_part.user_ids), len(seen_part), len(unseen_part.user_ids), len(unseen_part),
    )
    return seen_part, unseen_part


def few_shot_split(
    data: PairData, *, max_shots: int = 50, seed: int = 0, min_test: int = 1
) -> tuple[PairData, PairData]:
    """Split each user's pairs into an adaptation pool and test pairs, for few-shot curves.

    Per user, the pairs are shuffled with the user's own seeded generator; the first
    ``min(max_shots, n_user - min_test)`` (at least 0) form the adaptation pool, the rest are test
    pairs. A user with at most `min_test` pairs has an empty pool (all pairs are test pairs).

    The pool (``shots``) is ordered by user, then by the shuffled order, so `take_shots` can take
    each user's first ``n`` pool pairs and the sets are nested (the 5-shot set contains the 2-shot
    set). The test pairs keep their original order.

    Returns:
        ``(shots, test)``, both with the user list of `data`.

    Raises:
        ConfigError: negative `max_shots` / `min_test` or an invalid seed.
    """
    seed = _check_seed(seed)
    for name, value in (("max_shots", max_shots), ("min_test", min_test)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ConfigError(f"{name} must be a non-negative integer, got {value!r}.")
    pool_parts: list[np.ndarray] = []
    in_pool = np.zeros(len(data), dtype=bool)
    short = 0
    for user, positions in _pairs_by_user(data):
        n_pool = max(0, min(int(max_shots), len(positions) - int(min_test)))
        short += n_pool < max_shots
        pool = _user_rng(seed, data.user_ids[user]).permutation(positions)[:n_pool]
        pool_parts.append(pool)
        in_pool[pool] = True
    pool_index = np.concatenate(pool_parts) if pool_parts else np.zeros(0, dtype=np.int64)
    shots, test = data.select(pool_index), data.select(~in_pool)
    if short:
        logger.info(
            "%s: %d user(s) have fewer than max_shots + min_test = %d pairs; their adaptation pools are smaller",
            data.source, short, max_shots + min_test,
        )
    logger.info("Few-shot split of %s: %d pool pairs, %d test pairs (seed %d)", data.source, len(shots), len(test), seed)
    return shots, test


def take_shots(shots: PairData, n: int) -> PairData:
    """The first `n` pairs of each user in `shots` (in the order of `shots`), keeping that order.

    Applied to the pool of `few_shot_split`, the sets are nested: ``take_shots(pool, 2)`` is a
    subset of ``take_shots(pool, 5)``. Users with fewer than `n` pool pairs contribute all they have.

    Raises:
        ConfigError: negative `n`.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError(f"the number of shots must be a non-negative integer, got {n!r}.")
    rank = np.empty(len(shots), dtype=np.int64)
    counts: dict[int, int] = {}
    for i, user in enumerate(shots.user.tolist()):
        rank[i] = counts.get(user, 0)
        counts[user] = rank[i] + 1
    short = sum(c < n for c in counts.values())
    if short:
        logger.info("%d of %d users have fewer than %d adaptation pairs; they use all they have", short, len(counts), n)
    return shots.select(rank < n)
