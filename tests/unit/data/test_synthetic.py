"""Tests for the synthetic Gaussian builder (palrm.data.synthetic)."""

from __future__ import annotations

import numpy as np
import pytest

from palrm.data.schema import NO_PROMPT
from palrm.data.synthetic import build_synthetic
from palrm.errors import ConfigError, DataFormatError


def test_shapes_and_layout():
    ds = build_synthetic(d=5, k=3, n_users=12, n_items=40, pairs_per_user=7, n_unseen_users=4, seed=1)
    pairs = ds.pairs
    assert len(pairs) == (12 + 4) * 7
    assert pairs.embeddings.shape == (40, 5) and pairs.embeddings.dtype == np.float32
    np.testing.assert_allclose(pairs.embeddings, ds.items.astype(np.float32))
    assert pairs.texts == [str(i) for i in range(40)]
    assert np.all(pairs.prompt == NO_PROMPT) and not pairs.has_prompts
    assert np.all(pairs.chosen != pairs.rejected)
    assert ds.prototypes.shape == (3, 5)
    assert ds.user_weights.shape == (16, 3)
    assert ds.seen_users == pairs.user_ids[:12] and ds.unseen_users == pairs.user_ids[12:]
    assert set(ds.seen_users).isdisjoint(ds.unseen_users)
    assert np.bincount(pairs.user, minlength=16).tolist() == [7] * 16


def test_partition_is_balanced_one_hot_and_group_matches():
    ds = build_synthetic(k=3, n_users=10, n_items=20, pairs_per_user=3, seed=2)
    w = ds.user_weights
    assert set(np.unique(w)) == {0.0, 1.0} and np.all(w.sum(axis=1) == 1)
    sizes = w.sum(axis=0)
    assert sizes.max() - sizes.min() <= 1
    np.testing.assert_array_equal(ds.pairs.group, np.argmax(w, axis=1)[ds.pairs.user])


def test_mixture_weights_on_simplex_and_alpha_controls_spread():
    sharp = build_synthetic(k=4, n_users=200, n_items=20, pairs_per_user=1, users="mixture", alpha=0.05)
    flat = build_synthetic(k=4, n_users=200, n_items=20, pairs_per_user=1, users="mixture", alpha=50.0)
    for ds in (sharp, flat):
        assert np.all(ds.user_weights >= 0)
        np.testing.assert_allclose(ds.user_weights.sum(axis=1), 1.0)
    assert sharp.user_weights.max(axis=1).mean() > 0.8 > 0.4 > flat.user_weights.max(axis=1).mean()


def test_bayes_accuracy_in_range_and_one_without_noise():
    noisy = build_synthetic(n_users=20, pairs_per_user=50, noise=1.0, seed=3)
    acc = noisy.bayes_accuracy(noisy.pairs)
    assert 0.5 < acc < 1.0
    clean = build_synthetic(n_users=20, pairs_per_user=50, noise=0.0, seed=3)
    assert clean.bayes_accuracy(clean.pairs) == 1.0
    # Without noise every label follows the true scores.
    assert np.all(clean.true_probability(clean.pairs) == 1.0)
    # More noise lowers the ceiling.
    noisier = build_synthetic(n_users=20, pairs_per_user=50, noise=20.0, seed=3)
    assert noisier.bayes_accuracy(noisier.pairs) < acc


def test_true_model_predictor_reaches_bayes_accuracy_on_sampled_labels():
    ds = build_synthetic(n_users=100, pairs_per_user=200, noise=2.0, seed=4)
    p = ds.true_probability(ds.pairs)  # P(chosen preferred) under the true model
    # The Bayes predictor picks `chosen` when p > 0.5; it is right exactly where p > 0.5.
    observed = float(np.mean(p > 0.5))
    expected = ds.bayes_accuracy(ds.pairs)
    assert 0.6 < expected < 0.95
    assert abs(observed - expected) < 0.015  # 20k Bernoulli draws: sd about 0.003


def test_labels_follow_the_model_not_a_shared_preference():
    ds = build_synthetic(k=2, n_users=40, pairs_per_user=200, noise=0.0, seed=5)
    # Score pairs with the *other* group's ideal point: agreement is far below 1 (heterogeneous).
    other = ds.user_weights[:, ::-1] @ ds.prototypes
    rows = ds.pairs.user
    def score(item, ideal):
        diff = ds.items[item] - ideal
        return -(diff**2).sum(axis=1)
    agree = score(ds.pairs.chosen, other[rows]) > score(ds.pairs.rejected, other[rows])
    assert 0.4 < agree.mean() < 0.85


def test_subsets_are_evaluated_by_user_id():
    ds = build_synthetic(n_users=10, pairs_per_user=20, n_unseen_users=3, seed=6)
    sub = ds.pairs.for_users(ds.unseen_users).compact_users()
    full_p = ds.true_probability(ds.pairs)
    mask = np.isin(ds.pairs.pair_user_ids, ds.unseen_users)
    np.testing.assert_allclose(ds.true_probability(sub), full_p[mask])
    frame_back = sub.to_frame()
    assert set(frame_back["user_id"]) == set(ds.unseen_users)


def test_unknown_user_or_item_is_reported():
    ds = build_synthetic(n_users=4, n_items=10, pairs_per_user=2)
    other = build_synthetic(n_users=4, n_items=10, pairs_per_user=2, n_unseen_users=1)
    with pytest.raises(DataFormatError, match="unseen_0000"):
        ds.true_probability(other.pairs.for_users(other.unseen_users))
    with pytest.raises(ValueError, match="empty"):
        ds.bayes_accuracy(ds.pairs.select(np.zeros(len(ds.pairs), dtype=bool)))


def test_deterministic_and_seed_sensitive():
    a = build_synthetic(n_users=8, pairs_per_user=10, users="mixture", seed=7)
    b = build_synthetic(n_users=8, pairs_per_user=10, users="mixture", seed=7)
    c = build_synthetic(n_users=8, pairs_per_user=10, users="mixture", seed=8)
    for name in ("user", "chosen", "rejected", "group"):
        np.testing.assert_array_equal(getattr(a.pairs, name), getattr(b.pairs, name))
    np.testing.assert_array_equal(a.user_weights, b.user_weights)
    assert not np.array_equal(a.pairs.chosen, c.pairs.chosen)


def test_unseen_users_do_not_change_seen_data():
    a = build_synthetic(n_users=8, pairs_per_user=10, seed=9)
    b = build_synthetic(n_users=8, pairs_per_user=10, n_unseen_users=5, seed=9)
    seen = b.pairs.for_users(b.seen_users)
    np.testing.assert_array_equal(a.pairs.chosen, seen.chosen)
    np.testing.assert_array_equal(a.prototypes, b.prototypes)


def test_invalid_arguments_are_all_reported():
    with pytest.raises(ConfigError) as info:
        build_synthetic(d=0, users="clusters", noise=-1.0)
    message = str(info.value)
    assert "d must be" in message and "users must be" in message and "noise must be" in message
