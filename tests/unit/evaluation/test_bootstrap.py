import numpy as np
import pytest

from palrm.evaluation.bootstrap import adjusted_rand_index, correct_pairs, per_user_sums, user_bootstrap


@pytest.mark.parametrize("a, b, expected", [
    ([0, 0, 1, 1], [0, 0, 1, 1], 1.0),
    ([0, 0, 1, 1], [1, 1, 0, 0], 1.0),  # labels are names, not values
    ([0, 0, 1, 1], [0, 0, 1, 2], 4 / 7),  # scikit-learn's documented example (0.5714...)
    ([0, 0, 0, 0], [0, 1, 2, 3], 0.0),
    (["x", "x", "y", "y", "z", "z"], [0, 1, 0, 1, 0, 1], -4 / 11),  # worse than chance
])
def test_adjusted_rand_index_known_values(a, b, expected):
    assert adjusted_rand_index(a, b) == pytest.approx(expected)


def test_correct_pairs_counts_ties_as_half():
    assert correct_pairs(np.array([1.0, -2.0, 0.0])).tolist() == [1.0, 0.0, 0.5]


def test_bootstrap_resamples_users_not_pairs():
    # two users with 100 pairs each, one always right and one always wrong: the accuracy is 0.5, and
    # with only two independent users the interval must be wide (a pair bootstrap would give +-0.07)
    users = np.array(["a"] * 100 + ["b"] * 100)
    correct = np.r_[np.ones(100), np.zeros(100)]
    sums, counts = per_user_sums(correct, users, ["a", "b"])
    out = user_bootstrap({"m": sums}, counts, n_boot=2000, seed=0)
    assert out["m"]["estimate"] == 0.5
    assert out["m"]["low"] == 0.0 and out["m"]["high"] == 1.0
    assert out["n_users"] == 2 and out["n_pairs"] == 200


def test_paired_difference_of_identical_models_is_exactly_zero_and_intervals_shrink_with_users():
    rng = np.random.default_rng(0)
    small, large = {}, {}
    for n_users, box in ((10, small), (400, large)):
        users = np.repeat([f"u{i}" for i in range(n_users)], 10)
        correct = (rng.random(len(users)) < 0.7).astype(float)
        sums, counts = per_user_sums(correct, users, sorted(set(users)))
        box.update(user_bootstrap({"a": sums, "b": sums}, counts, differences=[("a", "b")], seed=1))
    assert small["a - b"] == {"estimate": 0.0, "low": 0.0, "high": 0.0}
    width = lambda o: o["a"]["high"] - o["a"]["low"]  # noqa: E731
    assert width(large) < width(small) / 3
    assert large["a"]["low"] < large["a"]["estimate"] < large["a"]["high"]


def test_bootstrap_without_pairs_gives_none():
    out = user_bootstrap({"m": np.zeros(0)}, np.zeros(0))
    assert out["m"]["estimate"] is None and out["n_users"] == 0
