"""Scalar reward export: the exported reward difference equals the PAL preference logit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from palrm import PALRewardModel, ScalarRewardModel
from palrm.aggregate import parse_aggregate
from palrm.data import load_pairs
from palrm.errors import ModelFileError, UnknownUserError
from palrm.export import export_scalar
from tests.conftest import text_pairs_frame
from tests.serving.helpers import train_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return train_tiny_model(tmp_path_factory.mktemp("export") / "model", kind="pal-b", k=3)


@pytest.fixture(scope="module")
def pairs():
    frame = text_pairs_frame(n_users=8, pairs_per_user=20, seed=0)
    frame.loc[::3, "prompt"] = ""  # some prompt-free pairs
    return load_pairs(frame)


def _pair_texts(data):
    prompts = [data.texts[i] if i >= 0 else None for i in data.prompt]
    return prompts, [data.texts[i] for i in data.chosen], [data.texts[i] for i in data.rejected]


def test_exported_user_reward_difference_is_the_pal_logit(model_dir, pairs, tmp_path):
    model = PALRewardModel.load(model_dir)
    user = "user3"
    out = export_scalar(model, tmp_path / "rm", user_id=user, source=model_dir)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    rm = ScalarRewardModel.from_pretrained(out)
    sub = pairs.for_users([user])
    prompts, chosen, rejected = _pair_texts(sub)
    diff = (rm(prompts, chosen) - rm(prompts, rejected)).numpy()
    expected = model.predict_logits(sub)
    assert diff.dtype == np.float32 and len(diff) == len(sub) > 0
    np.testing.assert_allclose(diff, expected, rtol=1e-5, atol=1e-5)
    # the reward of another user differs: the export is really that user's
    other = ScalarRewardModel.from_pretrained(export_scalar(model, tmp_path / "rm2", user_id="user0"))
    assert not torch.allclose(other(prompts, chosen), rm(prompts, chosen))


@pytest.mark.parametrize("weights", ["population", "group:1", [0.2, 0.5, 0.3]])
def test_exported_mixture_reward_difference_is_the_pal_logit(model_dir, pairs, tmp_path, weights):
    model = PALRewardModel.load(model_dir)
    rm = ScalarRewardModel.from_pretrained(export_scalar(model, tmp_path / "rm", weights=weights))
    prompts, chosen, rejected = _pair_texts(pairs)
    diff = (rm(prompts, chosen) - rm(prompts, rejected)).numpy()
    w = torch.from_numpy(model.mixture_weights(weights))
    table = torch.from_numpy(model.encoder_.encode(list(pairs.texts)))
    table = torch.cat([table, torch.zeros(1, table.shape[1])])
    p = torch.as_tensor(pairs.prompt).clone()
    p[p < 0] = table.shape[0] - 1
    with torch.no_grad():
        z = model.net_.pair_logits(w.expand(len(pairs), -1), table[p], table[torch.as_tensor(pairs.chosen)],
                                   table[torch.as_tensor(pairs.rejected)]).numpy()
    np.testing.assert_allclose(diff, z, rtol=1e-5, atol=1e-5)
    # and it matches the facade's reward for the same mixture
    np.testing.assert_allclose(rm("Which pet?", chosen[:3]).numpy(),
                               model.reward(None, "Which pet?", chosen[:3], weights=weights), rtol=1e-6, atol=1e-6)


def test_model_card_and_config(model_dir, tmp_path, pairs):
    from palrm.cli import main

    (model_dir.parent / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.875, "n_pairs": 40}}))
    data = tmp_path / "pairs.jsonl"
    text_pairs_frame(n_users=8, pairs_per_user=20, seed=0).to_json(data, orient="records", lines=True)
    assert main(["export", str(model_dir), "--user", "user2", "-o", str(tmp_path / "rm"), "--data", str(data)]) == 0
    meta = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert meta["mixture"]["user_id"] == "user2" and len(meta["mixture"]["weights"]) == 3
    assert meta["encoder"]["spec"] == "hashing:256" and meta["encoder"]["identity"]
    assert meta["eval"]["n_pairs"] == 20 and 0.0 <= meta["eval"]["accuracy"] <= 1.0
    card = (tmp_path / "rm" / "README.md").read_text()
    for needle in ("user 'user2'", "ScalarRewardModel.from_pretrained", "0.8750", "hashing:256", "accuracy"):
        assert needle in card
    assert main(["export", str(model_dir), "--group", "0", "-o", str(tmp_path / "g")]) == 0
    assert main(["export", str(model_dir), "--weights", "1,x,2", "-o", str(tmp_path / "w")]) == 2


def test_export_errors(model_dir, tmp_path, capsys):
    from palrm.cli import main

    model = PALRewardModel.load(model_dir)
    with pytest.raises(UnknownUserError, match="adapt"):
        export_scalar(model, tmp_path / "x", user_id="nobody")
    assert not (tmp_path / "x").exists()
    assert main(["export", str(model_dir), "--weights", "1,2", "-o", str(tmp_path / "y")]) == 2
    assert "3 non-negative numbers" in capsys.readouterr().err
    with pytest.raises(ModelFileError, match="PALRewardModel.load"):
        ScalarRewardModel.from_pretrained(model_dir)  # a full model is not a scalar export
    with pytest.raises(ModelFileError, match="palrm export"):
        ScalarRewardModel.from_pretrained(tmp_path)


def test_btl_export(tmp_path):
    model_dir = train_tiny_model(tmp_path / "btl", kind="btl")
    model = PALRewardModel.load(model_dir)
    rm = ScalarRewardModel.from_pretrained(export_scalar(model, tmp_path / "rm", weights="population"))
    r = rm(["Which pet?"] * 2, ["I love cats, answer 1", "Dogs are the best, reply 2"])
    np.testing.assert_allclose(r.numpy(), model.reward(None, "Which pet?", ["I love cats, answer 1", "Dogs are the best, reply 2"],
                                                       weights="population"), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("spec", ["maxmin", "alpha:1", "mean:size", "quantile:0.1"])
def test_exported_aggregate_gives_the_library_rewards(model_dir, pairs, tmp_path, spec):
    """The exported scalar model carries the aggregate (its reference statistics, and the users' weights
    when the aggregate runs over users): the same rewards as model.reward(None, ..., aggregate=spec)."""
    model = PALRewardModel.load(model_dir)
    out = export_scalar(model, tmp_path / "rm", aggregate=spec, source=model_dir)
    meta = json.loads((out / "config.json").read_text())
    assert meta["aggregate"]["spec"] == str(parse_aggregate(spec))
    assert meta["format_version"] == 2 and "aggregate" in (out / "README.md").read_text()
    rm = ScalarRewardModel.from_pretrained(out)
    prompts, chosen, _ = _pair_texts(pairs)
    got = rm(prompts[:12], chosen[:12]).numpy()
    expected = model.reward_batch(prompts[:12], chosen[:12], aggregate=spec)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    vecs = torch.from_numpy(model.fitted_.embedder.embed(chosen[:3], store=False))
    np.testing.assert_allclose(rm.score_embeddings(None, vecs).numpy(),
                               model.reward_embeddings(None, None, vecs.numpy(), aggregate=spec), rtol=1e-5, atol=1e-5)


def test_aggregate_export_and_score_from_the_command_line(model_dir, tmp_path, capsys):
    from palrm.cli import main

    assert main(["export", str(model_dir), "--aggregate", "maxmin", "-o", str(tmp_path / "agg")]) == 0
    assert main(["export", str(model_dir), "--aggregate", "alpha:-1", "-o", str(tmp_path / "bad")]) == 2
    assert "valid forms" in capsys.readouterr().err
    rm = ScalarRewardModel.from_pretrained(tmp_path / "agg")
    assert main(["score", "--model", str(model_dir), "--aggregate", "maxmin", "--prompt", "Which pet?",
                 "--response", "I love cats, answer 3", "--response", "Dogs are the best, reply 4", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["aggregate"] for r in rows] == ["maxmin", "maxmin"]
    np.testing.assert_allclose([r["reward"] for r in rows],
                               rm("Which pet?", ["I love cats, answer 3", "Dogs are the best, reply 4"]).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind,offset", [("pal-b", "input"), ("pal-b", "latent"), ("btl", "input")])
def test_exported_user_of_an_offset_model_keeps_the_personal_offset(tmp_path, kind, offset):
    """One user of a model with personal offsets (BTL + input offset: per-user heads): the export
    equals model.reward, offset included."""
    frame = text_pairs_frame(n_users=8, pairs_per_user=20, seed=0)
    model = PALRewardModel(kind=kind, k=2, offset=offset, encoder="hashing:256", epochs=6, seed=0,
                           progress=False).fit(frame)
    model_dir = model.save(tmp_path / "model")
    user = "user3"
    assert model.net_.user_offsets[model.user_index_[user]].abs().sum() > 0  # the user has an offset to lose
    out = export_scalar(PALRewardModel.load(model_dir), tmp_path / "rm", user_id=user, source=model_dir)
    meta = json.loads((out / "config.json").read_text())
    assert meta["mixture"]["offset"]["kind"] == offset and meta["mixture"]["offset"]["norm"] > 0
    rm = ScalarRewardModel.from_pretrained(out)
    prompt = "Which pet should I get?"
    responses = ["I love cats, answer 3", "Dogs are the best, reply 7", "I love cats, answer 11", "a fish"]
    np.testing.assert_allclose(rm(prompt, responses).numpy(), model.reward(user, prompt, responses), rtol=1e-5, atol=1e-5)
    # rewards under the user's posterior carry the offset too, in the export as in the library
    mean, std = rm(prompt, responses, uncertainty=True)
    lib_mean, lib_std = model.reward(user, prompt, responses, uncertainty=True)
    np.testing.assert_allclose(mean.numpy(), lib_mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(std.numpy(), lib_std, rtol=1e-4, atol=1e-4)
    # the mixture alone (what the export gave before) is a different reward
    mixture = ScalarRewardModel.from_pretrained(export_scalar(model, tmp_path / "mix", weights=list(model.user_weights(user))))
    assert not np.allclose(mixture(prompt, responses).numpy(), model.reward(user, prompt, responses), atol=1e-4)
    # no other user's offset travels with the export
    from safetensors.torch import load_file

    tensors = load_file(str(out / "model.safetensors"))
    assert "user_offsets" not in tensors and tensors["palrm.user_offset"].shape == model.net_.user_offsets[0].shape
