"""Baselines of the benchmark suite: per-user heads (with / without shrinkage) and oracle groups."""

from __future__ import annotations

import numpy as np
import pytest

from palrm.bench.baselines import LinearHeads, OracleGroups, accuracy


def _acc(logits, pairs):
    return accuracy(logits, pairs)["accuracy"]


def test_independent_heads_learn_each_users_planted_reward(synthetic_splits):
    splits, _, _ = synthetic_splits
    heads = LinearHeads(shrinkage=False, lambdas=(0.01, 1.0)).fit(splits.train, splits.validation)
    assert set(heads.heads_) == set(splits.train.users_present())
    assert heads.lam_ in (0.01, 1.0) and set(heads.selection_) == {"0.01", "1.0"}
    # the ideal-point reward is linear in (x, ||x||^2): the heads can express it exactly
    assert _acc(heads.predict_logits(splits.test), splits.test) > 0.8


def test_shrinkage_fits_a_shared_head_and_new_users_start_from_it(synthetic_splits):
    splits, shots, test = synthetic_splits
    shrunk = LinearHeads(shrinkage=True, lambdas=(1.0,)).fit(splits.train, splits.validation)
    alone = LinearHeads(shrinkage=False, lambdas=(1.0,)).fit(splits.train, splits.validation)
    assert shrunk.base_ is not None and float(shrunk.base_.abs().sum()) > 0
    from palrm.data.splits import take_shots

    one = take_shots(shots, 1).compact_users()
    # with a single pair per new user, the shared head carries most of the information
    acc_shrunk = _acc(shrunk.predict_logits(test, shrunk.adapt(one)), test)
    acc_alone = _acc(alone.predict_logits(test, alone.adapt(one)), test)
    assert acc_shrunk > acc_alone
    assert acc_shrunk > 0.6


def test_unknown_users_get_the_shared_head_or_zero(synthetic_splits):
    splits, _, test = synthetic_splits
    alone = LinearHeads(shrinkage=False, lambdas=(1.0,)).fit(splits.train, splits.validation)
    assert np.all(alone.predict_logits(test) == 0)  # new users unknown: no opinion (counted as half right)


def test_oracle_groups_fit_one_btl_per_true_group(synthetic_splits):
    splits, _, _ = synthetic_splits
    oracle = OracleGroups(epochs=15, progress=False).fit(splits.train, splits.validation)
    assert sorted(oracle.models_) == sorted(np.unique(splits.train.group).tolist())
    logits = oracle.predict_logits(splits.test)
    assert not np.isnan(logits).any()
    assert _acc(logits, splits.test) > 0.75


def test_oracle_groups_needs_groups(synthetic_splits):
    from dataclasses import replace

    splits, _, _ = synthetic_splits
    with pytest.raises(ValueError, match="group"):
        OracleGroups().fit(replace(splits.train, group=None), splits.validation)
