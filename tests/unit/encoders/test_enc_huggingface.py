"""HFEncoder and pooling, on tiny random models saved to and loaded from disk."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from palrm.encoders import HFEncoder, make_encoder, pool_hidden_states
from palrm.errors import ConfigError

HIDDEN = 32  # width of the tiny models in conftest.py
OPT_PROJ = 16  # the tiny OPT's word_embed_proj_dim


def _one_by_one(enc: HFEncoder, texts: list[str]) -> np.ndarray:
    """Encode each text alone: no padding at all."""
    return np.concatenate([enc.encode([t]) for t in texts])


# -- pooling ----------------------------------------------------------------------------------


@pytest.fixture
def hidden_and_masks() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    hidden = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    return hidden, right, left


def test_last_pooling_picks_last_real_token_with_right_padding(hidden_and_masks) -> None:
    hidden, right, _ = hidden_and_masks
    pooled = pool_hidden_states(hidden, right, "last")
    torch.testing.assert_close(pooled, torch.stack([hidden[0, 2], hidden[1, 4]]))


def test_last_pooling_picks_last_real_token_with_left_padding(hidden_and_masks) -> None:
    hidden, _, left = hidden_and_masks
    pooled = pool_hidden_states(hidden, left, "last")
    torch.testing.assert_close(pooled, torch.stack([hidden[0, 4], hidden[1, 4]]))


def test_mean_pooling_ignores_padding(hidden_and_masks) -> None:
    hidden, right, left = hidden_and_masks
    poisoned = hidden.clone()
    poisoned[0, 3:] = 1e6  # padded positions of the right-padded row
    torch.testing.assert_close(pool_hidden_states(poisoned, right, "mean")[0], hidden[0, :3].mean(0))
    poisoned = hidden.clone()
    poisoned[0, :2] = -1e6  # padded positions of the left-padded row
    torch.testing.assert_close(pool_hidden_states(poisoned, left, "mean")[0], hidden[0, 2:].mean(0))


def test_unknown_pooling_is_rejected(hidden_and_masks) -> None:
    hidden, right, _ = hidden_and_masks
    with pytest.raises(ValueError, match="pooling must be one of"):
        pool_hidden_states(hidden, right, "max")
    with pytest.raises(ConfigError, match="pooling"):
        HFEncoder("whatever", pooling="cls")  # type: ignore[arg-type]


# -- HFEncoder loaded by path -------------------------------------------------------------------


def test_mean_pooling_bert_by_path_is_padding_invariant(bert_dir: Path, sentences: list[str]) -> None:
    enc = HFEncoder(bert_dir, pooling="mean")
    assert enc.dim == HIDDEN  # read from the config
    batched = enc.encode(sentences, batch_size=4)
    assert batched.shape == (len(sentences), HIDDEN) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, _one_by_one(enc, sentences), atol=1e-5)
    np.testing.assert_array_equal(enc.encode(sentences, batch_size=4), batched)  # deterministic
    assert enc.encode([]).shape == (0, HIDDEN)


def test_last_pooling_opt_same_under_left_and_right_padding(
    opt_dir: Path, sentences: list[str], make_tokenizer
) -> None:
    from transformers import AutoModel

    right = HFEncoder(opt_dir, pooling="last")
    assert right.dim == OPT_PROJ  # OPT's project_out, like OPT-350m's 512-d output
    out_right = right.encode(sentences, batch_size=5)
    assert out_right.shape == (len(sentences), OPT_PROJ)

    left = HFEncoder.from_model(
        AutoModel.from_pretrained(opt_dir, local_files_only=True), make_tokenizer("left"), pooling="last"
    )
    out_left = left.encode(sentences, batch_size=5)
    alone = _one_by_one(right, sentences)
    np.testing.assert_allclose(out_right, alone, atol=1e-5)
    np.testing.assert_allclose(out_left, alone, atol=1e-5)
    # and it really is the last token: mean pooling gives something else
    assert not np.allclose(HFEncoder(opt_dir, pooling="mean").encode(sentences), out_right, atol=1e-3)


def test_max_length_truncates_and_is_part_of_identity(bert_dir: Path) -> None:
    long_text = " ".join(["the cat sat on the mat"] * 30)  # ~180 tokens > 64 positions
    short = HFEncoder(bert_dir, max_length=8)
    full = HFEncoder(bert_dir)  # capped to the model's 64 positions instead of failing
    assert short.identity != full.identity
    a, b = short.encode([long_text]), full.encode([long_text])
    assert np.isfinite(a).all() and np.isfinite(b).all()
    assert not np.allclose(a, b)


# -- identity, spec, from_model -----------------------------------------------------------------


def test_spec_rebuilds_the_same_encoder(bert_dir: Path) -> None:
    enc = HFEncoder(bert_dir, pooling="last", max_length=48)
    again = make_encoder(enc.spec)
    assert isinstance(again, HFEncoder)
    assert (again.identity, again.pooling, again.max_length) == (enc.identity, "last", 48)
    assert make_encoder(f"hf:{bert_dir}").pooling == "mean"
    assert make_encoder(f"hf:{bert_dir}:last").pooling == "last"


def test_identity_follows_the_model_files(bert_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere"
    shutil.copytree(bert_dir, copy)
    assert HFEncoder(copy).identity == HFEncoder(bert_dir).identity  # content, not location
    assert HFEncoder(bert_dir, pooling="last").identity != HFEncoder(bert_dir).identity
    config = copy / "config.json"
    config.write_text(config.read_text().replace('"hidden_dropout_prob": 0.1', '"hidden_dropout_prob": 0.2'))
    assert HFEncoder(copy).identity != HFEncoder(bert_dir).identity


def test_from_model_identity_hashes_the_weights(bert_dir: Path, sentences: list[str], make_tokenizer) -> None:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(bert_dir, local_files_only=True)
    first = HFEncoder.from_model(model, make_tokenizer())
    assert first.identity == HFEncoder.from_model(model, make_tokenizer()).identity
    np.testing.assert_allclose(first.encode(sentences), HFEncoder(bert_dir).encode(sentences), atol=1e-5)
    with torch.no_grad():
        model.pooler.dense.bias.add_(1.0)  # any weight change must change the identity
    assert HFEncoder.from_model(model, make_tokenizer()).identity != first.identity


def test_in_memory_spec_cannot_be_rebuilt() -> None:
    with pytest.raises(ConfigError, match="save_pretrained"):
        make_encoder("hf:<in-memory model>:mean:512")


def test_hub_name_offline_says_to_pass_a_local_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    enc = HFEncoder("palrm-tests/no-such-model", pooling="last")
    assert enc.identity.startswith("hf:palrm-tests/no-such-model@hub")
    with pytest.raises(ConfigError, match="local path"):
        enc.encode(["hello"])


def test_directory_without_modules_json_becomes_hfencoder(bert_dir: Path) -> None:
    enc = make_encoder(str(bert_dir))
    assert isinstance(enc, HFEncoder) and enc.pooling == "mean"


# -- left-padded decoders: position ids from the attention mask -----------------------------------


def _decoder_dir(tmp_path: Path, kind: str) -> Path:
    """A tiny random GPT-2 or Llama built from a config (offline), with a left-padding word-level tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2Model, LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    from tests.unit.encoders.conftest import WORDS

    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>", *dict.fromkeys(WORDS)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
                                        padding_side="left")
    torch.manual_seed(0)
    if kind == "gpt2":
        model = GPT2Model(GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    else:
        model = LlamaModel(LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                                       pad_token_id=0))
    path = tmp_path / kind
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_left_padded_decoder_embeds_a_text_alike_alone_and_in_a_batch(tmp_path: Path, kind: str, pooling: str) -> None:
    enc = HFEncoder(_decoder_dir(tmp_path, kind), pooling=pooling)
    short, longer = "good answer", "the quick brown fox jumps over the lazy dog"
    enc.prepare()
    assert enc.tokens.padding_side == "left" and enc.tokens.append_eos == (pooling == "last")
    alone = enc.encode([short])
    batched = enc.encode([short, longer], batch_size=2)  # the short text is left-padded here
    np.testing.assert_allclose(batched[0], alone[0], rtol=1e-5, atol=1e-5)
    if kind == "llama":  # rotary positions are shift-invariant: the padded row is right even without position ids
        return
    # the check can fail: with absolute positions (GPT-2) and no mask-derived position ids the padded row differs
    import torch

    ids, mask = enc.tokens.collate(enc.tokens.encode([short, longer]))
    with torch.no_grad():
        hidden = enc.model(input_ids=ids, attention_mask=mask)[0]
        naive = pool_hidden_states(hidden, mask, pooling)[0].numpy()
    assert not np.allclose(naive, alone[0], atol=1e-4)
