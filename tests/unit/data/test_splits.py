"""Tests of palrm.data.splits: per-user pair splits, seen / unseen users, few-shot pools."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from palrm.data import PairData, few_shot_split, split_pairs, split_users, take_shots
from palrm.errors import ConfigError, DataFormatError, UnknownUserError


def make_data(pairs_per_user: list[int], split: list[str] | None = None, shuffle_users: bool = True) -> PairData:
    """Pairs whose `chosen` index is the pair's original position (a unique pair id)."""
    users = np.repeat(np.arange(len(pairs_per_user)), pairs_per_user)
    if shuffle_users:  # interleave users so splits cannot rely on contiguous rows
        users = np.random.default_rng(123).permutation(users)
    n = len(users)
    return PairData(
        texts=[f"t{i}" for i in range(n + 1)],
        user_ids=[f"user{u}" for u in range(len(pairs_per_user))],
        user=users,
        prompt=np.full(n, -1),
        chosen=np.arange(n),
        rejected=np.full(n, n),
        split=split,
        source="<test>",
    )


def pair_ids(data: PairData) -> list[int]:
    return data.chosen.tolist()


def per_user_counts(data: PairData, n_users: int) -> np.ndarray:
    return np.bincount(data.user, minlength=n_users)


# ---------------------------------------------------------------------------------------------
# split_pairs


def test_split_pairs_is_deterministic_for_a_seed() -> None:
    data = make_data([30, 20, 50])
    first, again = split_pairs(data, seed=3), split_pairs(data, seed=3)
    for (name, a), (_, b) in zip(first, again):
        assert pair_ids(a) == pair_ids(b), name
    other = split_pairs(data, seed=4)
    assert pair_ids(other.test) != pair_ids(first.test)


def test_split_pairs_is_disjoint_covering_and_ordered() -> None:
    data = make_data([30, 20, 50, 7])
    parts = split_pairs(data, seed=0)
    ids = [set(pair_ids(part)) for _, part in parts]
    assert sum(len(i) for i in ids) == len(data)
    assert set.union(*ids) == set(range(len(data)))
    for _, part in parts:
        assert pair_ids(part) == sorted(pair_ids(part))  # original order kept
        assert part.user_ids == data.user_ids  # user indices agree across parts
        assert part.split is None


def test_split_pairs_proportions_per_user() -> None:
    data = make_data([100, 40, 10])
    parts = split_pairs(data, val_frac=0.1, test_frac=0.2, seed=0)
    assert per_user_counts(parts.validation, 3).tolist() == [10, 4, 1]
    assert per_user_counts(parts.test, 3).tolist() == [20, 8, 2]
    assert per_user_counts(parts.train, 3).tolist() == [70, 28, 7]
    assert parts.sizes() == {"train": 105, "validation": 15, "test": 30}


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, (1, 0, 0)), (2, (2, 0, 0)), (3, (2, 0, 1)), (5, (3, 1, 1))],  # documented half-up rounding
)
def test_split_pairs_rounding_for_small_users(n: int, expected: tuple[int, int, int]) -> None:
    parts = split_pairs(make_data([n]), val_frac=0.1, test_frac=0.2)
    assert (len(parts.train), len(parts.validation), len(parts.test)) == expected


def test_split_pairs_keeps_a_train_pair_when_fractions_are_large() -> None:
    parts = split_pairs(make_data([1, 2, 3]), val_frac=0.45, test_frac=0.45)
    assert per_user_counts(parts.train, 3).min() >= 1
    assert per_user_counts(parts.train, 3).tolist() == [1, 1, 1]


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(1, 25), min_size=1, max_size=6),
    val=st.floats(0, 0.45),
    test=st.floats(0, 0.5),
    seed=st.integers(0, 2**32),
)
def test_split_pairs_properties(counts: list[int], val: float, test: float, seed: int) -> None:
    data = make_data(counts)
    parts = split_pairs(data, val_frac=val, test_frac=test, seed=seed)
    assert sorted(sum((pair_ids(p) for _, p in parts), [])) == list(range(len(data)))
    train_counts = per_user_counts(parts.train, len(counts))
    assert (train_counts >= 1).all()
    for u, n in enumerate(counts):
        n_test = per_user_counts(parts.test, len(counts))[u]
        assert abs(n_test - test * n) <= 0.5 + 1e-9 or train_counts[u] == 1


def test_a_users_split_does_not_depend_on_other_users() -> None:
    alone = make_data([40], shuffle_users=False)
    with_others = make_data([40, 25], shuffle_users=False)  # user0's pairs are still rows 0..39
    a, b = split_pairs(alone, seed=9), split_pairs(with_others, seed=9)
    assert pair_ids(a.test) == [i for i in pair_ids(b.test) if i < 40]


def test_split_column_is_honoured(caplog: pytest.LogCaptureFixture) -> None:
    split = ["train", "test", "validation", "train", "test", "train"]
    data = make_data([3, 3], split=split, shuffle_users=False)
    with caplog.at_level(logging.INFO, logger="palrm.data.splits"):
        parts = split_pairs(data, val_frac=0.5, test_frac=0.1, seed=1)
    assert pair_ids(parts.train) == [0, 3, 5]
    assert pair_ids(parts.validation) == [2]
    assert pair_ids(parts.test) == [1, 4]
    assert any("split column" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
    ignored = split_pairs(data, val_frac=0.0, test_frac=0.0, honour_split_column=False)
    assert len(ignored.train) == 6


def test_bad_split_values_and_fractions() -> None:
    with pytest.raises(DataFormatError, match="'holdout'"):
        split_pairs(make_data([2], split=["train", "holdout"]))
    with pytest.raises(ConfigError, match="below 1"):
        split_pairs(make_data([5]), val_frac=0.5, test_frac=0.5)
    with pytest.raises(ConfigError, match="test_frac must be in"):
        split_pairs(make_data([5]), test_frac=-0.1)
    with pytest.raises(ConfigError, match="seed"):
        split_pairs(make_data([5]), seed=-1)


def test_split_parts_by_name() -> None:
    parts = split_pairs(make_data([10]))
    assert parts["test"] is parts.test
    with pytest.raises(KeyError, match="unknown split"):
        parts["dev"]


# ---------------------------------------------------------------------------------------------
# split_users


def test_split_users_by_fraction() -> None:
    data = make_data([5] * 10)
    seen, unseen = split_users(data, unseen_frac=0.3, seed=0)
    assert len(unseen.user_ids) == 3 and len(seen.user_ids) == 7
    assert not set(seen.user_ids) & set(unseen.user_ids)
    assert len(seen) + len(unseen) == len(data)
    assert sorted(pair_ids(seen) + pair_ids(unseen)) == list(range(len(data)))
    # compacted: every listed user has pairs and indices point into the own list
    assert seen.users_present() == seen.user_ids and unseen.users_present() == unseen.user_ids
    again = split_users(data, unseen_frac=0.3, seed=0)[1]
    assert again.user_ids == unseen.user_ids
    assert {tuple(split_users(data, unseen_frac=0.3, seed=s)[1].user_ids) for s in range(8)} != {tuple(unseen.user_ids)}


def test_split_users_explicit_ids() -> None:
    data = make_data([3, 4, 5])
    seen, unseen = split_users(data, unseen_users=["user2", "user0"])
    assert seen.user_ids == ["user1"]
    assert sorted(unseen.user_ids) == ["user0", "user2"]
    assert len(unseen) == 8
    with pytest.raises(UnknownUserError, match="'user9'"):
        split_users(data, unseen_users=["user9"])
    with pytest.raises(ConfigError, match="at least one user seen"):
        split_users(data, unseen_users=["user0", "user1", "user2"])


def test_split_users_small_populations() -> None:
    seen, unseen = split_users(make_data([3, 3]), unseen_frac=0.2)
    assert len(seen.user_ids) == 1 and len(unseen.user_ids) == 1  # at least one of each
    seen, unseen = split_users(make_data([3]), unseen_frac=0.2)
    assert len(seen.user_ids) == 1 and len(unseen) == 0
    seen, unseen = split_users(make_data([3, 3]), unseen_frac=0.0)
    assert len(unseen) == 0
    with pytest.raises(ConfigError, match="unseen_frac"):
        split_users(make_data([3, 3]), unseen_frac=1.0)


# ---------------------------------------------------------------------------------------------
# few_shot_split and take_shots


def test_few_shot_split_pool_sizes_and_coverage() -> None:
    counts = [60, 10, 1, 2, 0 + 3]
    data = make_data(counts)
    shots, test = few_shot_split(data, max_shots=50, min_test=2, seed=0)
    # min(max_shots, n - min_test), never negative
    assert per_user_counts(shots, 5).tolist() == [50, 8, 0, 0, 1]
    assert per_user_counts(test, 5).tolist() == [10, 2, 1, 2, 2]
    assert sorted(pair_ids(shots) + pair_ids(test)) == list(range(len(data)))
    assert shots.user_ids == data.user_ids == test.user_ids
    assert pair_ids(test) == sorted(pair_ids(test))


def test_few_shot_split_is_deterministic_and_seeded() -> None:
    data = make_data([30, 30])
    a, b = few_shot_split(data, max_shots=10, seed=5), few_shot_split(data, max_shots=10, seed=5)
    assert pair_ids(a[0]) == pair_ids(b[0]) and pair_ids(a[1]) == pair_ids(b[1])
    assert pair_ids(few_shot_split(data, max_shots=10, seed=6)[0]) != pair_ids(a[0])


def test_take_shots_is_nested() -> None:
    data = make_data([40, 12, 3])
    shots, _ = few_shot_split(data, max_shots=20, seed=2)
    sets = {n: take_shots(shots, n) for n in (0, 1, 2, 5, 10, 20, 50)}
    assert len(sets[0]) == 0
    assert per_user_counts(sets[5], 3).tolist() == [5, 5, 2]
    assert per_user_counts(sets[50], 3).tolist() == [20, 11, 2]
    ns = sorted(sets)
    for small, large in zip(ns, ns[1:]):
        assert set(pair_ids(sets[small])) <= set(pair_ids(sets[large]))
    # a user's first n shots are the first n of the pool, not a new draw
    user0_pool = [i for i, u in zip(pair_ids(shots), shots.user) if u == 0]
    assert [i for i, u in zip(pair_ids(sets[5]), sets[5].user) if u == 0] == user0_pool[:5]


def test_few_shot_pool_is_a_shuffle_not_the_file_order() -> None:
    shots, _ = few_shot_split(make_data([50], shuffle_users=False), max_shots=10, seed=0)
    assert pair_ids(shots) != list(range(10))


def test_few_shot_argument_checks() -> None:
    with pytest.raises(ConfigError, match="max_shots"):
        few_shot_split(make_data([5]), max_shots=-1)
    with pytest.raises(ConfigError, match="min_test"):
        few_shot_split(make_data([5]), min_test=1.5)
    with pytest.raises(ConfigError, match="number of shots"):
        take_shots(make_data([5]), -2)
