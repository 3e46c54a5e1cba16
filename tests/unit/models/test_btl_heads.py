"""BTL + input offset (models/btl.py): per-user linear heads shrunk toward the shared BTL reward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from palrm import PALRewardModel
from palrm.config import ModelConfig, TrainConfig
from palrm.errors import ConfigError
from palrm.models import build_net
from palrm.training import train_net
from tests.unit.models.helpers import small_pairs


def test_btl_with_zero_offsets_is_btl_and_offsets_shift_the_logit_linearly():
    table, pairs = small_pairs()
    nets = []
    for off in ("none", "input"):
        torch.manual_seed(0)
        net = build_net(ModelConfig(kind="btl", k=3, hidden=[8], offset=off), 8, 6)
        train_net(net, table, pairs, None, TrainConfig(epochs=2, batch_size=32, progress=False))
        nets.append(net.eval())
    plain, heads = nets
    assert not plain.has_users and heads.has_users and heads.k == 1 and heads.offset_dim == 9
    for name, p in plain.state_dict().items():  # offsets take no part in training
        assert torch.equal(p, heads.state_dict()[name]), name
    assert not heads.user_logits.weight.requires_grad  # BTL's one mixture weight stays 1
    args = table[pairs.prompt], table[pairs.chosen], table[pairs.rejected]
    with torch.no_grad():
        z0 = plain.pair_logits(plain.user_weights(pairs.user), *args)
        assert torch.equal(z0, heads.pair_logits(heads.user_weights(pairs.user), *args))
        delta = torch.randn(6, heads.offset_dim)
        heads.user_offsets[:] = delta
        w = heads.user_weights(pairs.user)
        z = heads.pair_logits(w, *args)
        sc, sr = heads.score(w, args[0], args[1]), heads.score(w, args[0], args[2])
    h = lambda x: torch.cat([x, (x * x).sum(-1, keepdim=True)], -1)  # noqa: E731
    assert torch.allclose(z, z0 + (delta[pairs.user] * (h(args[1]) - h(args[2]))).sum(-1), atol=1e-4)
    assert torch.allclose(sc - sr, z, atol=1e-4)  # the reward difference is the preference logit


def test_btl_takes_only_input_offsets():
    with pytest.raises(ConfigError, match="kind btl has no latent ideal point"):
        PALRewardModel(kind="btl", offset="latent")._config()
    PALRewardModel(kind="btl", offset="input")._config()  # valid


def _individual(synthetic_splits, seed=0):
    """The synthetic users' labels redrawn from one personal linear head each (no group structure)."""
    splits, shots, test = synthetic_splits
    emb = splits.train.embeddings
    rng = np.random.default_rng(seed)
    heads = {}

    def relabel(d):
        d = d.select(np.ones(len(d), bool))
        for u in np.unique(d.user):
            uid = d.user_ids[u]
            heads.setdefault(uid, rng.normal(size=emb.shape[1]) * 3)
        z = ((emb[d.chosen] - emb[d.rejected]) * np.stack([heads[d.user_ids[u]] for u in d.user])).sum(-1)
        flip = z < 0
        c, r = d.chosen.copy(), d.rejected.copy()
        c[flip], r[flip] = d.rejected[flip], d.chosen[flip]
        d.chosen, d.rejected = c, r
        return d

    return relabel(splits.train), relabel(splits.validation), relabel(splits.test), relabel(shots), relabel(test)


@pytest.fixture(scope="module")
def heads_models(synthetic_splits):
    train, val, test, shots, new_test = _individual(synthetic_splits)
    common = dict(hidden=[16], epochs=15, seed=0, progress=False)
    plain = PALRewardModel(kind="btl", **common).fit(train, val)
    heads = PALRewardModel(kind="btl", offset="input", **common).fit(train, val)
    return plain, heads, (test, shots, new_test)


def test_personal_heads_capture_individual_preferences(heads_models):
    plain, heads, (test, shots, new_test) = heads_models
    assert heads.config_.model.offset_var > 0  # chosen on the validation pairs and stored
    a0, a1 = plain.evaluate(test)["accuracy"], heads.evaluate(test)["accuracy"]
    assert a1 > a0 + 0.1, (a0, a1)
    curve = heads.few_shot_curve(shots, new_test, ns=(0, 20))
    flat = plain.evaluate(new_test)["accuracy"]
    assert abs(curve["0"]["accuracy"] - flat) < 1e-9  # n = 0: the shared reward alone, i.e. BTL
    assert curve["20"]["accuracy"] > flat + 0.05, (curve, flat)


def test_personal_heads_save_load_adapt_score(heads_models, tmp_path):
    _, heads, (test, shots, _) = heads_models
    loaded = PALRewardModel.load(heads.save(tmp_path / "m"))
    np.testing.assert_allclose(loaded.predict_logits(test), heads.predict_logits(test), atol=1e-5)
    user = shots.user_ids[0]
    loaded.adapt(shots.for_users([user]).compact_users())
    assert loaded.net_.user_offsets[loaded.user_index_[user]].abs().sum() > 0
    assert loaded.user_weights(user).tolist() == [1.0]
    prompt, items = np.zeros(test.embeddings.shape[1], np.float32), test.embeddings[:4]
    own = loaded.reward_embeddings(user, prompt, items)
    shared = loaded.reward_embeddings(None, prompt, items, weights=[1.0])
    assert not np.allclose(own, shared)  # the personal head changes the user's rewards


def test_a_fixed_fit_chooses_new_users_offset_variance_on_its_own_users(heads_models):
    _, heads, _ = heads_models
    record = heads.prior_choice_
    tried = record["offset_vars"]
    assert tried[0]["var"] == heads.config_.model.offset_var and len(tried) == 5  # the known users' variance first
    best = min(tried, key=lambda t: t["log_loss"])
    assert heads.config_.adapt.offset_var == record["offset_var"] == best["var"]
    from palrm.evaluation.selection import describe_prior_choice

    assert "new users' offset variance" in describe_prior_choice(record)
