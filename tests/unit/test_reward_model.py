"""Behaviour of the PALRewardModel facade on planted heterogeneous data."""

import json

import numpy as np
import pytest
import torch

from palrm import PALRewardModel
from palrm.errors import (
    ConfigError,
    DataFormatError,
    ModelFileError,
    PalrmError,
    UnknownUserError,
)

FAST = dict(epochs=25, progress=False, seed=0)


@pytest.fixture(scope="module")
def fitted(synthetic_splits):
    splits, _, _ = synthetic_splits
    return {kind: PALRewardModel(kind=kind, k=3, **FAST).fit(splits.train, splits.validation) for kind in ("pal-b", "btl")}


def test_pal_fits_conflicting_groups_that_btl_cannot(fitted, synthetic_splits, synthetic):
    splits, _, _ = synthetic_splits
    pal, btl = fitted["pal-b"].evaluate(splits.test), fitted["btl"].evaluate(splits.test)
    bayes = synthetic.bayes_accuracy(splits.test)
    assert pal["accuracy"] > btl["accuracy"] + 0.08
    assert pal["accuracy"] > bayes - 0.08
    assert set(pal) >= {"accuracy", "log_loss", "user_mean_accuracy", "n_pairs", "per_user", "unknown_users"}
    assert pal["unknown_users"]["n_pairs"] == 0


def test_learned_users_of_one_group_share_their_dominant_prototype(fitted, synthetic):
    model = fitted["pal-b"]
    groups = {u: int(np.argmax(synthetic.user_weights[synthetic.pairs.user_ids.index(u)])) for u in model.users_}
    dominant = {u: int(np.argmax(model.user_weights(u))) for u in model.users_}
    # the learned prototype of each true group is the same for (almost) all its users
    for g in range(3):
        votes = [dominant[u] for u in model.users_ if groups[u] == g]
        assert np.bincount(votes).max() / len(votes) > 0.8


def test_fit_is_deterministic_for_a_seed(synthetic_splits):
    splits, _, _ = synthetic_splits
    a = PALRewardModel(kind="pal-a", k=3, **{**FAST, "epochs": 3}).fit(splits.train)
    b = PALRewardModel(kind="pal-a", k=3, **{**FAST, "epochs": 3}).fit(splits.train)
    for (na, ta), (nb, tb) in zip(a.net_.state_dict().items(), b.net_.state_dict().items()):
        assert na == nb and torch.equal(ta, tb)


def test_early_stopping_and_jsonl_log(synthetic_splits, tmp_path):
    splits, _, _ = synthetic_splits
    log = tmp_path / "log.jsonl"
    model = PALRewardModel(kind="pal-b", k=3, epochs=200, patience=2, progress=False, lr=0.05).fit(splits.train, splits.validation, log_path=log)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) == len(model.history_) < 200
    assert {"epoch", "train_loss", "val_loss", "val_accuracy"} <= set(rows[0])


def test_adapt_learns_new_users_and_leaves_shared_weights_bit_identical(fitted, synthetic_splits):
    _, shots, test = synthetic_splits
    model = fitted["pal-b"]
    shared_before = {n: p.detach().clone() for n, p in model.net_.named_parameters() if not n.startswith("user_logits")}
    users_before = model.net_.user_logits.weight.detach().clone()
    before = model.evaluate(test)
    assert before["accuracy"] is None and before["unknown_users"]["n_users"] == len(test.users_present())
    model_users = len(model.users_)
    try:
        model.adapt(shots)
        after = model.evaluate(test)
        assert after["unknown_users"]["n_pairs"] == 0
        assert after["accuracy"] > 0.8
        for n, p in model.net_.named_parameters():
            if not n.startswith("user_logits"):
                assert torch.equal(p, shared_before[n]), n
        assert torch.equal(model.net_.user_logits.weight[:model_users], users_before)
    finally:  # keep the module fixture as it was
        model.net_.user_logits.weight.data = users_before
        model.net_.user_logits.num_embeddings = model_users
        model.users_ = model.users_[:model_users]
        model.user_index_ = {u: i for i, u in enumerate(model.users_)}


def test_few_shot_curve_rises_and_does_not_modify_the_model(fitted, synthetic_splits):
    _, shots, test = synthetic_splits
    model = fitted["pal-b"]
    state = {n: t.clone() for n, t in model.net_.state_dict().items()}
    curve = model.few_shot_curve(shots, test, ns=(1, 10, 40))
    assert curve["40"]["accuracy"] > curve["1"]["accuracy"]
    assert curve["40"]["accuracy"] > 0.8
    assert all(torch.equal(t, model.net_.state_dict()[n]) for n, t in state.items())
    assert len(model.users_) == model.net_.num_users


def test_readapting_a_known_user_moves_only_that_user(fitted, synthetic_splits):
    splits, _, _ = synthetic_splits
    model = fitted["pal-b"]
    user = model.users_[0]
    others = model.net_.user_logits.weight.detach().clone()
    try:
        model.adapt(splits.test.for_users([user]))
        w = model.net_.user_logits.weight.detach()
        assert torch.equal(w[1:], others[1:])
        assert len(model.users_) == others.shape[0]
    finally:
        model.net_.user_logits.weight.data = others


def test_reward_known_unknown_and_explicit_weights(fitted, synthetic):
    model = fitted["pal-b"]
    items = synthetic.pairs.embeddings[:4]
    user = model.users_[0]
    r = model.reward_embeddings(user, None, items)
    assert len(r) == 4 and all(isinstance(x, float) for x in r)
    with pytest.raises(UnknownUserError, match="adapt"):
        model.reward_embeddings("nobody", None, items)
    pop = model.reward_embeddings("nobody", None, items, weights="population")
    explicit = model.reward_embeddings(None, None, items, weights=model.population_weights())
    np.testing.assert_allclose(pop, explicit, rtol=1e-5)
    np.testing.assert_allclose(model.reward_embeddings(None, None, items, weights=model.user_weights(user)), r, rtol=1e-5)
    with pytest.raises(ConfigError):
        model.reward_embeddings(None, None, items, weights=[1, 2])
    with pytest.raises(DataFormatError, match="dimension"):
        model.reward_embeddings(user, None, np.zeros((2, 3)))


def test_reward_difference_is_the_preference_logit(fitted, synthetic_splits):
    splits, _, _ = synthetic_splits
    model = fitted["pal-b"]
    pairs = splits.test.select(np.arange(5))
    logits = model.predict_logits(pairs)
    emb = pairs.embeddings
    for i in range(5):
        user = pairs.user_ids[pairs.user[i]]
        r = model.reward_embeddings(user, None, emb[[pairs.chosen[i], pairs.rejected[i]]])
        assert r[0] - r[1] == pytest.approx(logits[i], rel=1e-4, abs=1e-4)


def test_save_load_gives_identical_rewards_and_no_pickle(fitted, synthetic, tmp_path):
    model = fitted["pal-b"]
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors", "posteriors.json", "users.json"]
    loaded = PALRewardModel.load(tmp_path / "m")
    items = synthetic.pairs.embeddings[:6]
    for user in model.users_[:3]:
        assert loaded.reward_embeddings(user, None, items) == model.reward_embeddings(user, None, items)


def test_failed_save_keeps_the_earlier_model(fitted, tmp_path, monkeypatch):
    model = fitted["btl"]
    target = model.save(tmp_path / "m")
    before = (target / "model.safetensors").read_bytes()
    import palrm.core.persist as rm

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(rm, "save_file", boom)
    with pytest.raises(OSError):
        fitted["pal-b"].save(target)
    assert (target / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temp directory left behind


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(ModelFileError, match="missing"):
        PALRewardModel.load(tmp_path)
    for name in ("config.json", "users.json"):
        (tmp_path / name).write_text("{not json")
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="damaged"):
        PALRewardModel.load(tmp_path)


def test_unfitted_model_and_bad_inputs():
    with pytest.raises(PalrmError, match="not fitted"):
        PALRewardModel().reward("u", "p", ["r"])
    with pytest.raises(ConfigError, match="unknown option"):
        PALRewardModel(colour="red").fit(None)
    with pytest.raises(DataFormatError):
        PALRewardModel(progress=False).fit(42)


def test_text_data_with_hashing_encoder_end_to_end(tmp_path):
    from palrm.data import load_pairs, split_pairs
    from tests.conftest import text_pairs_frame

    data = load_pairs(text_pairs_frame())
    splits = split_pairs(data, val_frac=0.1, test_frac=0.2, seed=0)
    model = PALRewardModel(kind="pal-b", k=2, encoder="hashing", **FAST).fit(splits.train, splits.validation)
    assert model.evaluate(splits.test)["accuracy"] > 0.95
    cat, dog = "I love cats, answer 3", "Dogs are the best, reply 5"
    r0 = model.reward("user0", "Which pet?", [cat, dog])
    r1 = model.reward("user1", "Which pet?", [cat, dog])
    assert r0[0] > r0[1] and r1[1] > r1[0]
    model.save(tmp_path / "m")
    again = PALRewardModel.load(tmp_path / "m")
    assert again.reward("user0", "Which pet?", [cat, dog]) == r0


def test_reward_batch_matches_single_rewards(tmp_path):
    from palrm.data import load_pairs
    from tests.conftest import text_pairs_frame

    model = PALRewardModel(kind="pal-b", k=2, encoder="hashing", **FAST).fit(load_pairs(text_pairs_frame()))
    cat, dog = "I love cats, answer 3", "Dogs are the best, reply 5"
    batch = model.reward_batch(["Which pet?", "Which pet?", None], [cat, dog, cat], user_ids=["user0", "user1", None],
                               weights=[None, None, "population"])
    assert batch[0] == pytest.approx(model.reward("user0", "Which pet?", [cat])[0], abs=1e-5)
    assert batch[1] == pytest.approx(model.reward("user1", "Which pet?", [dog])[0], abs=1e-5)
    assert batch[2] == pytest.approx(model.reward(None, "", [cat], weights="population")[0], abs=1e-5)
    with pytest.raises(UnknownUserError):
        model.reward_batch(["p"], ["r"], user_ids=["ghost"])
