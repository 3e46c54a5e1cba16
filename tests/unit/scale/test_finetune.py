"""PAL-Large on the CPU with tiny random transformers: learning, frozen equivalence, save/load, LoRA, tokenisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from palrm import PALRewardModel
from palrm.config import PALConfig
from palrm.data import load_pairs, split_pairs
from palrm.finetune import BackboneEncoder, Tokenisation, load_transformer
from tests.conftest import text_pairs_frame
from tests.unit.scale.tiny_models import tiny_bert, tiny_gpt2


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="module")
def splits():
    """Planted heterogeneity: even users prefer the 'cats' answers, odd users the 'dogs' answers."""
    data = load_pairs(text_pairs_frame(n_users=8, pairs_per_user=24, seed=1))
    return split_pairs(data, val_frac=0.25, test_frac=0.0, seed=0)


def _config(spec, **finetune):
    return PALConfig.from_dict({
        "model": {"kind": "pal-b", "k": 2, "d": 8, "hidden": [16]},
        "train": {"epochs": 4, "batch_size": 16, "lr": 3e-3, "user_lr": 0.1, "progress": False, "patience": 0},
        "encoder": {"spec": spec, "use_cache": False},
        "finetune": {"enabled": True, "backbone_lr": 1e-3, "warmup_steps": 3, **finetune},
    })


def test_finetuning_learns_the_planted_groups_and_moves_the_backbone(bert_dir, splits):
    before = load_transformer(bert_dir)[0].state_dict()
    model = PALRewardModel(_config(f"hf:{bert_dir}:mean")).fit(splits.train, splits.validation)
    losses = [r["train_loss"] for r in model.history_]
    assert losses[-1] < 0.6 * losses[0], losses
    assert model.evaluate(splits.validation)["accuracy"] >= 0.9
    after = model.backbone_.model.state_dict()
    assert not torch.equal(before["embeddings.word_embeddings.weight"], after["embeddings.word_embeddings.weight"])


def test_frozen_backbone_equals_the_frozen_embedding_path(bert_dir, splits):
    cfg = _config(f"hf:{bert_dir}:mean", freeze_backbone=True)
    tuned = PALRewardModel(cfg).fit(splits.train, splits.validation)
    model, tok = load_transformer(bert_dir)
    frozen_cfg = PALConfig.from_dict({**cfg.to_dict(), "finetune": {"enabled": False}})
    enc = BackboneEncoder(model.eval(), tok, pooling="mean", max_length=512)
    frozen = PALRewardModel(frozen_cfg, encoder=enc).fit(splits.train, splits.validation)
    for key, value in frozen.net_.state_dict().items():  # same heads up to float rounding of padded batches
        torch.testing.assert_close(tuned.net_.state_dict()[key], value, rtol=1e-4, atol=1e-5)
    a = [r["val_loss"] for r in tuned.history_]
    b = [r["val_loss"] for r in frozen.history_]
    np.testing.assert_allclose(a, b, rtol=1e-5)
    assert [r["val_accuracy"] for r in tuned.history_] == [r["val_accuracy"] for r in frozen.history_]
    # and the backbone did not move
    for key, value in load_transformer(bert_dir)[0].state_dict().items():
        assert torch.equal(tuned.backbone_.model.state_dict()[key], value), key


def test_saved_model_carries_the_backbone_and_reloads_with_identical_rewards(bert_dir, splits, tmp_path):
    model = PALRewardModel(_config(f"hf:{bert_dir}:last", gradient_checkpointing=True),
                           **{"scale.grad_accum_steps": 2}).fit(splits.train, splits.validation)
    out = model.save(tmp_path / "m")
    meta = json.loads((out / "config.json").read_text())
    assert meta["backbone"]["path"] == "backbone" and meta["backbone"]["pooling"] == "last"
    assert meta["backbone"]["append_eos"] is False  # BERT ends every text with [SEP] already
    assert (out / "backbone" / "model.safetensors").is_file() and (out / "backbone" / "tokenizer.json").is_file()
    loaded = PALRewardModel.load(out)
    users = splits.train.user_ids
    prompts, responses = ["Which pet?"] * 4, ["I love cats, answer 3", "Dogs are the best, reply 1"] * 2
    r1 = model.reward_batch(prompts, responses, user_ids=[users[0], users[0], users[1], users[1]])
    r2 = loaded.reward_batch(prompts, responses, user_ids=[users[0], users[0], users[1], users[1]])
    np.testing.assert_array_equal(r1, r2)
    assert loaded.evaluate(splits.validation)["accuracy"] == model.evaluate(splits.validation)["accuracy"]


def test_lora_trains_adapters_only_and_saves_them(gpt2_dir, splits, tmp_path):
    pytest.importorskip("peft")
    base = load_transformer(gpt2_dir)[0].state_dict()
    model = PALRewardModel(_config(f"hf:{gpt2_dir}:last", lora=True, lora_r=4, backbone_lr=5e-3)).fit(
        splits.train, splits.validation)
    assert model.history_[-1]["train_loss"] < model.history_[0]["train_loss"]
    merged = model.backbone_.model.state_dict()
    assert set(merged) == set(base)  # merged back into the plain architecture
    assert torch.equal(merged["wte.weight"], base["wte.weight"])  # not a LoRA target: untouched
    assert any(not torch.equal(merged[k], base[k]) for k in base if "c_attn" in k)  # LoRA target: changed
    out = model.save(tmp_path / "lora")
    meta = json.loads((out / "config.json").read_text())
    assert meta["backbone"]["lora"]["r"] == 4 and meta["backbone"]["adapter_path"] == "backbone/adapter"
    assert (out / "backbone" / "adapter" / "adapter_model.safetensors").is_file()
    loaded = PALRewardModel.load(out)
    u = splits.train.user_ids[0]
    assert loaded.reward(u, "Which pet?", ["I love cats", "dogs"]) == model.reward(u, "Which pet?", ["I love cats", "dogs"])


def test_tokenisation_follows_the_model(gpt2_dir, bert_dir):
    model, tok = load_transformer(gpt2_dir)
    left = BackboneEncoder(model.eval(), tok, pooling="last", max_length=16)
    assert left.tokens.append_eos and left.tokens.padding_side == "left"
    ids = left.tokens.encode(["i love cats", "yes"])
    assert ids[0][-1] == tok.eos_token_id and ids[1] == [tok.convert_tokens_to_ids("yes"), tok.eos_token_id]
    assert len(left.tokens.encode(["1 " * 40])[0]) == 16  # truncated, end-of-text kept
    texts = ["i love cats answer 3", "yes", "dogs are the best , reply 12 ?"]
    right = BackboneEncoder(model.eval(), tok, pooling="last", max_length=16, padding_side="right")
    one_by_one = np.concatenate([right.encode([t]) for t in texts])
    np.testing.assert_allclose(left.encode(texts), one_by_one, rtol=1e-5, atol=1e-5)  # position ids from the mask
    np.testing.assert_allclose(right.encode(texts), one_by_one, rtol=1e-5, atol=1e-5)
    bmodel, btok = load_transformer(bert_dir)
    bert = Tokenisation(btok, pooling="last", max_length=32)
    assert not bert.append_eos and bert.padding_side == "right"
    # mean pooling over BERT equals the existing HFEncoder
    from palrm.encoders.huggingface import HFEncoder

    np.testing.assert_allclose(BackboneEncoder(bmodel.eval(), btok).encode(texts),
                               HFEncoder(bert_dir).encode(texts), rtol=1e-5, atol=1e-6)


def test_finetuning_needs_a_transformers_backbone():
    from palrm.errors import ConfigError

    with pytest.raises(ConfigError, match="finetune.enabled needs a transformers backbone"):
        PALConfig.from_dict({"encoder": {"spec": "hashing"}, "finetune": {"enabled": True}})


def test_export_carries_the_finetuned_backbone(bert_dir, splits, tmp_path):
    from palrm.export import ScalarRewardModel, export_scalar

    model = PALRewardModel(_config(f"hf:{bert_dir}:mean")).fit(splits.train, splits.validation)
    user = splits.train.user_ids[0]
    out = export_scalar(model, tmp_path / "scalar", user_id=user)
    assert (out / "backbone" / "model.safetensors").is_file()
    scalar = ScalarRewardModel.from_pretrained(out)
    a, b = "I love cats, answer 3", "Dogs are the best, reply 1"
    rewards = scalar(["Which pet?", "Which pet?"], [a, b])
    expected = model.reward(user, "Which pet?", [a, b])
    np.testing.assert_allclose(rewards.numpy(), expected, rtol=1e-4, atol=1e-5)
    # the reward difference is the source model's preference logit, through the fine-tuned backbone
    assert float(rewards[0] - rewards[1]) == pytest.approx(expected[0] - expected[1], rel=1e-4, abs=1e-5)
