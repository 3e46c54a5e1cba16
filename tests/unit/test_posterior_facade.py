"""The facade's posterior API: user_posterior, uncertainty-aware rewards, next_queries, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from palrm import PALRewardModel
from palrm.data.io import load_pairs
from palrm.errors import ConfigError, DataFormatError, UnknownUserError
from tests.conftest import text_pairs_frame

FAST = dict(epochs=25, progress=False, seed=0)


@pytest.fixture(scope="module")
def model():
    return PALRewardModel(kind="pal-a", k=2, encoder="hashing", **FAST).fit(text_pairs_frame())


def test_known_users_have_a_posterior_that_agrees_with_their_weights(model):
    post = model.user_posterior("user0")
    assert post.n_pairs == 30
    assert post.k == 2
    assert np.argmax(post.weights_mean) == np.argmax(model.user_weights("user0"))
    assert 0 <= post.uncertainty < 0.5
    with pytest.raises(UnknownUserError):
        model.user_posterior("nobody")


def test_fewer_pairs_leave_more_uncertainty(model):
    frame = text_pairs_frame(n_users=2, seed=5)
    frame["user_id"] = frame["user_id"].str.replace("user", "new")
    few, many = frame[frame.user_id == "new0"].head(1), frame[frame.user_id == "new1"]
    model.adapt(load_pairs(few))
    model.adapt(load_pairs(many))
    assert model.user_posterior("new0").n_pairs == 1
    assert model.user_posterior("new0").uncertainty > model.user_posterior("new1").uncertainty


def test_reward_mean_std_and_risk(model):
    responses = ["I love cats, answer 3", "Dogs are the best, reply 4"]
    plain = model.reward("user0", "Which pet?", responses)
    mean, std = model.reward("user0", "Which pet?", responses, uncertainty=True)
    low = model.reward("user0", "Which pet?", responses, risk="quantile:0.1")
    assert len(mean) == len(std) == 2 and all(s >= 0 for s in std)
    assert all(lo <= m for lo, m in zip(low, mean))
    assert np.sign(mean[0] - mean[1]) == np.sign(plain[0] - plain[1])
    _, std_pop = model.reward(None, "Which pet?", responses, weights="population", uncertainty=True)
    assert std_pop == [0.0, 0.0]
    for bad in ("quantile:1.5", "quantile:x", "worst"):
        with pytest.raises(ConfigError, match="quantile"):
            model.reward("user0", "Which pet?", responses, risk=bad)


def test_reward_batch_uncertainty_matches_single_calls(model):
    responses = ["I love cats, answer 3", "Dogs are the best, reply 4", "I love cats, answer 7"]
    users = ["user0", "user1", None]
    weights = [None, None, "population"]
    mean, std = model.reward_batch(["Which pet?"] * 3, responses, user_ids=users, weights=weights, uncertainty=True)
    m0, s0 = model.reward("user0", "Which pet?", responses[:1], uncertainty=True)
    assert mean[0] == pytest.approx(m0[0], rel=1e-4, abs=1e-4) and std[0] == pytest.approx(s0[0], rel=1e-3, abs=1e-4)
    assert std[2] == 0.0
    q = model.reward_batch(["Which pet?"] * 3, responses, user_ids=users, weights=weights, risk="quantile:0.1")
    assert q.shape == (3,) and q[0] <= mean[0] + 1e-5


def test_next_queries_prefers_pairs_that_split_the_groups(model):
    pool = load_pairs(text_pairs_frame(n_users=1, pairs_per_user=6, seed=9).assign(user_id="pool").pipe(
        lambda f: __import__("pandas").concat([f, f.assign(chosen="I love cats, answer 1", rejected="I love cats, answer 2")])))
    picks = model.next_queries("brand-new-user", pool, n=3)
    assert len(picks) == 3
    assert picks[0]["information_gain"] >= picks[1]["information_gain"] >= picks[2]["information_gain"]
    # cats-vs-dogs pairs decide the group; cats-vs-cats pairs do not
    assert {"cats" in p["response_a"] and "cats" in p["response_b"] for p in picks} == {False}
    with pytest.raises(DataFormatError, match="empty"):
        model.next_queries("x", pool.select(np.zeros(len(pool), dtype=bool)))


def test_posteriors_survive_save_and_load(model, tmp_path):
    model.save(tmp_path / "m")
    again = PALRewardModel.load(tmp_path / "m")
    a, b = model.user_posterior("user3"), again.user_posterior("user3")
    np.testing.assert_allclose(a.cov_logits, b.cov_logits)
    assert a.n_pairs == b.n_pairs
    assert again.reward("user3", "Which pet?", ["I love cats, answer 3"], uncertainty=True) == \
        model.reward("user3", "Which pet?", ["I love cats, answer 3"], uncertainty=True)


def test_export_carries_the_posterior_and_trl_takes_a_risk(model, tmp_path):
    from palrm.export import ScalarRewardModel, export_scalar
    from palrm.integrations.trl import reward_function

    out = export_scalar(model, tmp_path / "rm", user_id="user0")
    rm = ScalarRewardModel.from_pretrained(out)
    responses = ["I love cats, answer 3", "Dogs are the best, reply 4"]
    mean, std = rm("Which pet?", responses, uncertainty=True)
    ref_mean, ref_std = model.reward("user0", "Which pet?", responses, uncertainty=True)
    np.testing.assert_allclose(mean.numpy(), ref_mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(std.numpy(), ref_std, rtol=1e-3, atol=1e-4)
    low = rm("Which pet?", responses, risk="quantile:0.1")
    assert (low <= mean + 1e-5).all()
    f = reward_function(model, risk="quantile:0.1")
    got = f(["Which pet?"] * 2, responses, user_id=["user0", "user0"])
    np.testing.assert_allclose(got, model.reward("user0", "Which pet?", responses, risk="quantile:0.1"), rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="quantile"):
        reward_function(model, risk="quantile:2")


@pytest.mark.parametrize("offset", ["input", "latent"])
def test_uncertain_rewards_keep_the_users_personal_offset(offset):
    """An offset model's rewards under the posterior carry the user's offset delta_u, as plain rewards do."""
    frame = text_pairs_frame()
    odd = (frame.user_id == "user0") & (np.arange(len(frame)) % 3 == 0)  # user0 departs from its group
    frame.loc[odd, ["chosen", "rejected"]] = frame.loc[odd, ["rejected", "chosen"]].to_numpy()
    m = PALRewardModel(kind="pal-b", k=2, encoder="hashing", offset=offset, offset_var=1.0, **FAST).fit(frame)
    row = m.user_index_["user0"]
    assert float(m.net_.user_offsets[row].abs().sum()) > 0  # the offset was fitted
    responses = ["I love cats, they are calm", "dogs are loyal friends", "a neutral answer"]
    plain = np.asarray(m.reward("user0", "which pet?", responses))
    mean = np.asarray(m.reward("user0", "which pet?", responses, uncertainty=True)[0])
    saved = m.net_.user_offsets[row].clone()
    m.net_.user_offsets[row] = 0
    plain0 = np.asarray(m.reward("user0", "which pet?", responses))
    mean0 = np.asarray(m.reward("user0", "which pet?", responses, uncertainty=True)[0])
    m.net_.user_offsets[row] = saved
    if offset == "input":  # <delta_u, h(x)> adds the same amount under every draw of the weights
        np.testing.assert_allclose(mean - mean0, plain - plain0, rtol=1e-4, atol=1e-4)
    else:
        assert np.abs(mean - plain).max() < np.abs(mean0 - plain).max()
