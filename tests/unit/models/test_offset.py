"""The offset user model (models/offset.py): reduces to PAL, MAP offsets, facade round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from palrm import PALRewardModel
from palrm.config import ModelConfig, TrainConfig
from palrm.errors import ConfigError
from palrm.models import build_net
from palrm.models.offset import map_offsets
from palrm.training import train_net
from tests.unit.models.helpers import small_pairs


@pytest.mark.parametrize("kind", ["pal-a", "pal-b"])
@pytest.mark.parametrize("offset", ["latent", "input"])
def test_offset_model_with_zero_offsets_is_pal_and_trains_bit_identically(kind, offset):
    table, pairs = small_pairs()
    nets = []
    for off in ("none", offset):
        torch.manual_seed(0)
        net = build_net(ModelConfig(kind=kind, k=3, d=4, hidden=[8], offset=off), 8, 6)
        train_net(net, table, pairs, None, TrainConfig(epochs=2, batch_size=32, progress=False))
        nets.append(net)
    plain, rich = nets
    for name, p in plain.state_dict().items():
        assert torch.equal(p, rich.state_dict()[name]), name
    assert rich.user_offsets.abs().sum() == 0
    users = pairs.user
    with torch.no_grad():
        z0 = plain.pair_logits(plain.user_weights(users), table[pairs.prompt], table[pairs.chosen], table[pairs.rejected])
        z1 = rich.pair_logits(rich.user_weights(users), table[pairs.prompt], table[pairs.chosen], table[pairs.rejected])
        s0 = plain.score(plain.user_weights(users), table[pairs.prompt], table[pairs.chosen])
        s1 = rich.score(rich.user_weights(users), table[pairs.prompt], table[pairs.chosen])
    assert torch.equal(z0, z1) and torch.equal(s0, s1)
    assert rich.user_weights(users).shape == (len(users), 3 + rich.offset_dim)


@pytest.mark.parametrize("offset", ["latent", "input"])
def test_offsets_shift_the_logit_linearly(offset):
    table, pairs = small_pairs()
    torch.manual_seed(0)
    net = build_net(ModelConfig(kind="pal-b", k=2, d=4, hidden=[8], offset=offset), 8, 6).eval()
    delta = torch.randn(6, net.offset_dim)
    with torch.no_grad():
        base = net.pair_logits(net.user_weights(pairs.user), table[pairs.prompt], table[pairs.chosen], table[pairs.rejected])
        net.user_offsets[:] = delta
        z = net.pair_logits(net.user_weights(pairs.user), table[pairs.prompt], table[pairs.chosen], table[pairs.rejected])
        sc = net.score(net.user_weights(pairs.user), table[pairs.prompt], table[pairs.chosen])
        sr = net.score(net.user_weights(pairs.user), table[pairs.prompt], table[pairs.rejected])
    from palrm.training.adapt import offset_terms

    b, x = offset_terms(net, table, pairs, net.user_logits.weight.detach())
    assert torch.allclose(b, base, atol=1e-5)
    assert torch.allclose(z, base + (delta[pairs.user] * x).sum(-1), atol=1e-4)
    assert torch.allclose(sc - sr, z, atol=1e-4)  # the reward difference is the preference logit


def test_map_offsets_recover_planted_heads_and_vanish_with_the_prior():
    rng = np.random.default_rng(0)
    n_users, per_user, r = 4, 400, 3
    truth = torch.from_numpy(rng.normal(size=(n_users, r)) * 2)
    x = torch.from_numpy(rng.normal(size=(n_users * per_user, r)))
    user = torch.arange(n_users).repeat_interleave(per_user)
    z = (truth[user] * x).sum(-1)
    sign = torch.where(torch.rand(len(z), generator=torch.Generator().manual_seed(0), dtype=torch.float64) < torch.sigmoid(z), 1.0, -1.0)
    delta = map_offsets(torch.zeros(len(z)), x * sign[:, None], user, n_users, var=100.0)
    cos = torch.nn.functional.cosine_similarity(delta, truth, dim=-1)
    assert (cos > 0.95).all(), cos
    tight = map_offsets(torch.zeros(len(z)), x * sign[:, None], user, n_users, var=1e-6)
    assert tight.abs().max() < 1e-2
    assert map_offsets(torch.zeros(0), torch.zeros(0, r), torch.zeros(0, dtype=torch.long), 2, var=1.0).abs().sum() == 0


def test_offset_config_is_checked():
    with pytest.raises(ConfigError, match="model.offset"):
        PALRewardModel(offset="sideways")._config()
    with pytest.raises(ConfigError, match="euclidean"):
        PALRewardModel(offset="input", link="cosine")._config()


@pytest.fixture(scope="module")
def offset_models(synthetic_splits):
    splits, _, _ = synthetic_splits
    common = dict(k=1, d=8, hidden=[16], epochs=15, seed=0, progress=False)
    plain = PALRewardModel(kind="pal-a", **common).fit(splits.train, splits.validation)
    rich = PALRewardModel(kind="pal-a", offset="input", **common).fit(splits.train, splits.validation)
    return plain, rich


def test_offsets_capture_what_one_prototype_cannot(offset_models, synthetic_splits):
    splits, shots, test = synthetic_splits
    plain, rich = offset_models
    assert rich.config_.model.offset_var > 0  # chosen on validation and stored
    a0, a1 = plain.evaluate(splits.test)["accuracy"], rich.evaluate(splits.test)["accuracy"]
    assert a1 > a0 + 0.1, (a0, a1)
    c0, c1 = plain.few_shot_curve(shots, test, ns=(20,)), rich.few_shot_curve(shots, test, ns=(20,))
    assert c1["20"]["accuracy"] > c0["20"]["accuracy"] + 0.05


def test_offset_model_saves_loads_adapts_and_scores(offset_models, synthetic, synthetic_splits, tmp_path):
    _, rich = offset_models
    splits, shots, test = synthetic_splits
    loaded = PALRewardModel.load(rich.save(tmp_path / "m"))
    assert loaded.config_.model.offset_var == rich.config_.model.offset_var
    np.testing.assert_allclose(loaded.predict_logits(splits.test), rich.predict_logits(splits.test), atol=1e-5)
    user = shots.user_ids[0]
    loaded.adapt(shots.for_users([user]).compact_users())
    assert loaded.net_.user_offsets[loaded.user_index_[user]].abs().sum() > 0
    prompt, items = np.zeros(synthetic.pairs.embeddings.shape[1], np.float32), synthetic.pairs.embeddings[:4]
    own = loaded.reward_embeddings(user, prompt, items)
    mixture_only = loaded.reward_embeddings(None, prompt, items, weights=loaded.user_weights(user)[:1] * 0 + 1)
    assert not np.allclose(own, mixture_only)  # the personal offset changes the user's rewards
