"""palrm.aggregate: each aggregate against hand-computed values, spec parsing, the one-pass
per-prototype scores, and maxmin choosing the egalitarian response in a planted two-group case."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from palrm.aggregate import (
    Aggregate,
    ReferenceStats,
    aggregate_rewards,
    alpha_fair,
    maxmin,
    mean,
    parse_aggregate,
    prototype_scores,
    quantile,
    reference_items,
    reference_scores,
    reference_stats,
    softmin,
    standardise,
)
from palrm.config import ModelConfig
from palrm.data.schema import PairData
from palrm.errors import ConfigError
from palrm.models import build_net

Z = torch.tensor([[1.0, -1.0], [0.0, 0.0], [2.0, -3.0]], dtype=torch.float64)  # (n=3, G=2)


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


# ------------------------------------------------------------------------------ hand-computed cases
def test_mean_equal_and_weighted():
    assert mean(Z).tolist() == pytest.approx([0.0, 0.0, -0.5])
    assert mean(Z, torch.tensor([3.0, 1.0])).tolist() == pytest.approx([0.5, 0.0, 0.75])  # pi = (0.75, 0.25)


def test_maxmin():
    assert maxmin(Z).tolist() == [-1.0, 0.0, -3.0]


def test_softmin_hand_computed_and_limits():
    # tau = 1, uniform pi: -log(0.5 e^-1 + 0.5 e^1) = -log cosh(1)
    assert softmin(Z, 1.0)[0].item() == pytest.approx(-math.log(math.cosh(1.0)))
    assert softmin(Z, 2.0)[2].item() == pytest.approx(-2 * math.log(0.5 * math.exp(-1.0) + 0.5 * math.exp(1.5)))
    assert softmin(Z, 1e-3).tolist() == pytest.approx(maxmin(Z).tolist(), abs=1e-2)  # tau -> 0: maxmin
    assert softmin(Z, 1e4).tolist() == pytest.approx(mean(Z).tolist(), abs=1e-3)  # tau -> inf: mean


def test_alpha_fair_hand_computed_and_limits():
    # A = 0: logit of the mean of sigmoids; A = 1: logit of their geometric mean; A = 3: power mean p = -2
    row = [2.0, -3.0]
    u = [_sig(x) for x in row]
    assert alpha_fair(Z, 0.0)[2].item() == pytest.approx(_logit(sum(u) / 2))
    assert alpha_fair(Z, 1.0)[2].item() == pytest.approx(_logit(math.sqrt(u[0] * u[1])))
    assert alpha_fair(Z, 3.0)[2].item() == pytest.approx(_logit((0.5 * u[0] ** -2 + 0.5 * u[1] ** -2) ** -0.5))
    assert alpha_fair(Z, 0.0)[0].item() == pytest.approx(0.0, abs=1e-12)  # symmetric row: mean of sigmoids is 1/2
    assert alpha_fair(Z, 1e4).tolist() == pytest.approx(maxmin(Z).tolist(), abs=1e-3)  # A -> inf: maxmin
    # more fairness never raises the reward of an unequal row (power means decrease with the order)
    a = [alpha_fair(Z, x)[2].item() for x in (0.0, 0.5, 1.0, 2.0, 5.0)]
    assert a == sorted(a, reverse=True)


@pytest.mark.parametrize("spec", ["softmin:1e-300", "softmin:1e300", "alpha:1e300", "alpha:1e-300", "alpha:0.999999999999"])
def test_extreme_parameters_stay_finite(spec):
    stats = ReferenceStats(np.zeros(2), np.ones(2), 10)
    z = torch.tensor([[1.0, -1.0], [40.0, 35.0], [-40.0, 3.0]], dtype=torch.float64)
    out = aggregate_rewards(z, stats, spec, None)
    assert torch.isfinite(out).all(), out
    if spec in ("softmin:1e-300", "alpha:1e300"):
        assert out.tolist() == pytest.approx([-1.0, 30.0 if spec.startswith("alpha") else 35.0, -30.0 if spec.startswith("alpha") else -40.0], abs=1e-6)


def test_quantile_hand_computed():
    assert quantile(Z, 0.5).tolist() == pytest.approx([0.0, 0.0, -0.5])
    assert quantile(Z, 0.0).tolist() == [-1.0, 0.0, -3.0]
    assert quantile(Z, 0.25).tolist() == pytest.approx([-0.5, 0.0, -1.75])


@pytest.mark.parametrize("g", [1, 2, 3, 66])
def test_quantile_equals_torch_quantile(g):
    z = torch.randn(50, g, dtype=torch.float64, generator=torch.Generator().manual_seed(g))
    for q in (0.0, 0.1, 0.25, 0.5, 0.77, 0.9, 1.0):
        assert torch.allclose(quantile(z, q), torch.quantile(z, q, dim=1)), q


@pytest.mark.parametrize("spec", ["mean", "mean:size", "maxmin", "softmin:0.3", "alpha:0", "alpha:1", "alpha:4", "quantile:0.2"])
def test_equal_group_rewards_give_that_reward(spec):
    """On the common scale, G equal values aggregate to that value, whatever the aggregate."""
    raw = torch.tensor([[3.0, 5.0], [1.0, 1.0]], dtype=torch.float64)  # z = ((3-1)/2, (5-1)/4) = (1, 1); (0, 0)
    stats = ReferenceStats(np.array([1.0, 1.0]), np.array([2.0, 4.0]), 10)
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert aggregate_rewards(raw, stats, spec, users).tolist() == pytest.approx([1.0, 0.0], abs=1e-9)


def test_standardise_and_reference_stats():
    s = torch.tensor([[0.0, 10.0], [2.0, 10.0], [4.0, 10.0]])
    stats = reference_stats(s)
    assert stats.mean.tolist() == pytest.approx([2.0, 10.0])
    assert stats.std[0] == pytest.approx(math.sqrt(8 / 3))
    assert stats.std[1] == pytest.approx(1e-8)  # a constant prototype does not divide by zero
    assert standardise(s.double(), stats)[:, 0].tolist() == pytest.approx([-1.2247449, 0.0, 1.2247449])
    assert ReferenceStats.from_dict(stats.to_dict()).mean.tolist() == stats.mean.tolist()
    with pytest.raises(ConfigError, match="2 prototypes"):
        standardise(torch.zeros(1, 3), stats)


def test_groups_users_vs_prototypes_and_size_weighting():
    """@users mixes the prototypes' z by each user's weights; mean@users equals mean:size exactly."""
    stats = ReferenceStats(np.zeros(2), np.ones(2), 10)
    z = torch.tensor([[1.0, -1.0], [0.5, 0.0]], dtype=torch.float64)
    users = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]], dtype=torch.float64)  # 3:1
    assert aggregate_rewards(z, stats, "mean", users).tolist() == pytest.approx([0.0, 0.25])
    assert aggregate_rewards(z, stats, "mean:size", users).tolist() == pytest.approx([0.5, 0.375])
    assert aggregate_rewards(z, stats, "mean@users", users).tolist() == pytest.approx([0.5, 0.375])
    # quantile over users by default: item 0 has user z (-1, 1, 1, 1): position 0.75 -> -1 + 0.75 * 2 = 0.5
    assert aggregate_rewards(z, stats, "quantile:0.25", users).tolist() == pytest.approx([0.5, 0.375])
    assert aggregate_rewards(z, stats, "quantile:0", users).tolist() == pytest.approx([-1.0, 0.0])
    mixed = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    assert aggregate_rewards(z, stats, "maxmin@users", mixed).tolist() == pytest.approx([0.0, 0.25])


def test_btl_has_one_group():
    stats = ReferenceStats(np.array([1.0]), np.array([2.0]), 10)
    raw = torch.tensor([[5.0], [1.0]])
    for spec in ("mean", "maxmin", "alpha:1", "quantile:0.1", "softmin:1"):
        assert aggregate_rewards(raw, stats, spec, None).tolist() == pytest.approx([2.0, 0.0])


# ------------------------------------------------------------------------------ parsing
@pytest.mark.parametrize("spec,expected", [
    ("mean", Aggregate("mean", None, "prototypes", "equal")),
    ("mean:size", Aggregate("mean", None, "prototypes", "size")),
    ("maxmin@users", Aggregate("maxmin", None, "users")),
    (" softmin:0.5 ", Aggregate("softmin", 0.5, "prototypes")),
    ("alpha:1", Aggregate("alpha", 1.0, "prototypes")),
    ("quantile:0.1", Aggregate("quantile", 0.1, "users")),
    ("quantile:0.1@prototypes", Aggregate("quantile", 0.1, "prototypes")),
    ("softmin:0.123456789", Aggregate("softmin", 0.123456789, "prototypes")),
])
def test_parse(spec, expected):
    assert parse_aggregate(spec) == expected
    assert parse_aggregate(str(expected)) == expected  # the canonical form parses back


@pytest.mark.parametrize("spec,what", [
    ("median", "unknown aggregate 'median'"),
    ("alpha:-1", "A must be >= 0"),
    ("softmin:0", "TAU must be > 0"),
    ("softmin", "needs a finite number"),
    ("softmin:abc", "needs a finite number"),
    ("alpha:inf", "needs a finite number"),
    ("quantile:1.5", "Q must be in"),
    ("maxmin:2", "takes no parameter"),
    ("mean:users", "mean takes no parameter or ':size'"),
    ("maxmin@everyone", "unknown groups '@everyone'"),
    ("", "expected a string"),
])
def test_bad_specs_list_the_valid_forms(spec, what):
    with pytest.raises(ConfigError) as err:
        parse_aggregate(spec)
    msg = str(err.value)
    assert what in msg
    for form in ("mean:size", "maxmin", "softmin:TAU", "alpha:A", "quantile:Q", "@users"):
        assert form in msg


# ------------------------------------------------------------------------------ one forward pass
@pytest.mark.parametrize("kind,link", [("pal-a", "euclidean"), ("pal-a", "cosine"), ("pal-b", "euclidean"), ("pal-b", "cosine"), ("btl", "euclidean")])
def test_prototype_scores_equal_one_hot_scores(kind, link):
    torch.manual_seed(0)
    net = build_net(ModelConfig(kind=kind, k=3, d=8, hidden=[16], link=link), 12, 5).eval()
    p, x = torch.randn(7, 12), torch.randn(7, 12)
    s = prototype_scores(net, p, x)  # (7, K)
    k = 3 if net.has_users else 1
    assert s.shape == (7, k)
    for j in range(k):
        onehot = torch.nn.functional.one_hot(torch.full((7,), j), k).float()
        assert torch.allclose(s[:, j], net.score(onehot, p, x), atol=1e-5)


def test_reference_items_are_distinct_prompt_response_items():
    pairs = PairData(texts=["p", "a", "b", "c"], user_ids=["u"], user=np.zeros(4, dtype=np.int64),
                     prompt=np.array([0, 0, -1, 0]), chosen=np.array([1, 2, 1, 1]), rejected=np.array([2, 1, 3, 3]))
    prompts, responses = reference_items(pairs)
    assert sorted(zip(prompts.tolist(), responses.tolist())) == [(-1, 1), (-1, 3), (0, 1), (0, 2), (0, 3)]
    prompts, responses = reference_items(pairs, max_items=3, seed=1)
    assert len(set(zip(prompts.tolist(), responses.tolist()))) == 3


# ------------------------------------------------------------------------------ planted two-group case
def _planted_net():
    """PAL-A, f = identity on R^2, latent prototypes at (+1, 0) (majority) and (-1, 0) (minority)."""
    net = build_net(ModelConfig(kind="pal-a", k=2, d=2, hidden=[], prototype_space="latent", users="partition"), 2, 11)
    with torch.no_grad():
        net.f[0].weight.copy_(torch.eye(2))
        net.f[0].bias.zero_()
        net.prototypes.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        net.user_logits.weight.copy_(torch.tensor([[5.0, -5.0]] * 10 + [[-5.0, 5.0]]))  # 10:1
    return net.eval()


def test_maxmin_picks_the_egalitarian_response():
    net = _planted_net()
    # candidates: the majority's ideal, the minority's ideal, the compromise (0, 0), and a point at (0.8, 0)
    cands = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0], [0.8, 0.0]])
    ref = torch.tensor([[x, y] for x in np.linspace(-2, 2, 9) for y in (-1.0, 0.0, 1.0)], dtype=torch.float32)
    table = torch.cat([ref, torch.zeros(1, 2)])
    stats = reference_stats(reference_scores(net, table, np.full(len(ref), -1), np.arange(len(ref))))
    users = net.user_weights(torch.arange(11))  # (11, 2) one-hot
    scores = prototype_scores(net, torch.zeros(4, 2), cands)  # (4, 2)
    pick = {spec: int(aggregate_rewards(scores, stats, spec, users).argmax()) for spec in
            ("mean:size", "mean@users", "maxmin", "softmin:0.05", "alpha:20", "quantile:0")}
    assert pick["mean:size"] == pick["mean@users"] == 3  # the utilitarian reward follows the 10:1 majority
    assert pick["maxmin"] == pick["softmin:0.05"] == pick["alpha:20"] == pick["quantile:0"] == 2  # the compromise


# ------------------------------------------------------------------------------ through the facade
@pytest.fixture(scope="module")
def text_model():
    from palrm import PALRewardModel
    from tests.conftest import text_pairs_frame

    return PALRewardModel(kind="pal-b", k=2, encoder="hashing:64", epochs=5, progress=False, use_cache=False).fit(text_pairs_frame())


RESPONSES = ["I love cats, answer 1", "Dogs are the best, reply 2", "cats and dogs"]


def _by_hand(model, prompt, responses, spec):
    vecs = torch.from_numpy(model.fitted_.embedder.embed([prompt, *responses], store=False))
    scores = prototype_scores(model.net_.eval(), vecs[:1].expand(len(responses), -1), vecs[1:])
    users = model.net_.user_weights(torch.arange(len(model.users_)))
    return aggregate_rewards(scores, model.reference_stats_, spec, users).tolist()


@pytest.mark.parametrize("spec", ["mean", "mean:size", "maxmin", "softmin:0.5", "alpha:1", "quantile:0.1"])
def test_reward_aggregate_equals_the_formula(text_model, spec):
    got = text_model.reward(None, "Which pet?", RESPONSES, aggregate=spec)
    assert got == pytest.approx(_by_hand(text_model, "Which pet?", RESPONSES, spec), abs=1e-5)
    batch = text_model.reward_batch(["Which pet?"] * 3, RESPONSES, aggregate=spec)
    assert batch.tolist() == pytest.approx(got, abs=1e-5)


def test_reward_batch_mixes_users_weights_and_aggregates(text_model):
    got = text_model.reward_batch(["Which pet?"] * 4, [*RESPONSES, RESPONSES[0]], user_ids=["user0", None, None, None],
                                  weights=[None, "group:1", None, None], aggregate=[None, None, "maxmin", "alpha:1"])
    assert got[0] == pytest.approx(text_model.reward("user0", "Which pet?", RESPONSES[:1])[0], abs=1e-5)
    assert got[1] == pytest.approx(text_model.reward(None, "Which pet?", RESPONSES[1:2], weights="group:1")[0], abs=1e-5)
    assert got[2] == pytest.approx(text_model.reward(None, "Which pet?", RESPONSES, aggregate="maxmin")[2], abs=1e-5)
    assert got[3] == pytest.approx(text_model.reward(None, "Which pet?", RESPONSES, aggregate="alpha:1")[0], abs=1e-5)


def test_reference_stats_are_saved_and_loaded(text_model, tmp_path):
    from palrm import PALRewardModel

    loaded = PALRewardModel.load(text_model.save(tmp_path / "m"))
    assert loaded.reference_stats_.to_dict() == text_model.reference_stats_.to_dict()
    assert loaded.reward(None, "Which pet?", RESPONSES, aggregate="maxmin") == pytest.approx(
        text_model.reward(None, "Which pet?", RESPONSES, aggregate="maxmin"), abs=1e-6)


def test_set_reference_uses_the_given_pairs(text_model):
    import copy

    from tests.conftest import text_pairs_frame

    m = copy.deepcopy(text_model)
    m.set_reference(text_pairs_frame(seed=1))
    assert m.reference_stats_.n_items == text_model.reference_stats_.n_items  # the same 40 distinct responses
    assert np.allclose(m.reference_stats_.mean, text_model.reference_stats_.mean, atol=1e-5)


def test_aggregate_errors(text_model):
    with pytest.raises(ConfigError, match="not more than one"):
        text_model.reward("user0", "Which pet?", RESPONSES, aggregate="maxmin")
    with pytest.raises(ConfigError, match="not more than one"):
        text_model.reward_batch(["p"], ["r"], user_ids=["user0"], aggregate="maxmin")
    with pytest.raises(ConfigError, match="valid forms"):
        text_model.reward(None, "Which pet?", RESPONSES, aggregate="alpha:-1")
    import copy

    m = copy.deepcopy(text_model)
    m.reference_stats_ = None  # a model saved by an older palrm
    with pytest.raises(ConfigError, match="set_reference"):
        m.reward(None, "Which pet?", RESPONSES, aggregate="maxmin")


def test_reference_items_thin_large_data_first():
    n = 50_000
    rng = np.random.default_rng(0)
    pairs = PairData(texts=[str(i) for i in range(1000)], user_ids=["u"], user=np.zeros(n, dtype=np.int64),
                     prompt=np.full(n, -1), chosen=rng.integers(0, 500, n), rejected=rng.integers(500, 1000, n))
    prompts, responses = reference_items(pairs, max_items=100, seed=3)
    assert len(responses) == 100 and len(set(responses.tolist())) == 100
    again = reference_items(pairs, max_items=100, seed=3)
    assert np.array_equal(responses, again[1])  # seeded
