"""Tiny, randomly initialised transformers models saved to disk (no hub, no MiniLM)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

WORDS = (
    "the a cat dog sat on mat quick brown fox jumps over lazy hello world good bad reply answer "
    "question is was very not"
).split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
HIDDEN = 32
OPT_PROJ = 16

# sentences of different lengths, so batches always hold padding
SENTENCES = [
    "the cat sat on the mat",
    "hello",
    "the quick brown fox jumps over the lazy dog",
    "good answer",
    "a very bad reply was not good",
]


def _make_tokenizer(padding_side: str = "right"):
    from transformers import BertTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = BertTokenizerFast(vocab=vocab)
    tok.padding_side = padding_side
    return tok


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with its tokenizer, written by save_pretrained."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(SPECIALS) + len(WORDS),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    path = tmp_path_factory.mktemp("tiny_bert")
    BertModel(config).save_pretrained(path)
    _make_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def opt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer OPT (hidden 32, projected to 16 like OPT-350m's 1024 -> 512), with a tokenizer."""
    import torch
    from transformers import OPTConfig, OPTModel

    torch.manual_seed(0)
    config = OPTConfig(
        vocab_size=len(SPECIALS) + len(WORDS),
        hidden_size=HIDDEN,
        word_embed_proj_dim=OPT_PROJ,
        num_hidden_layers=2,
        num_attention_heads=2,
        ffn_dim=64,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    path = tmp_path_factory.mktemp("tiny_opt")
    OPTModel(config).save_pretrained(path)
    _make_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def make_tokenizer():
    """Factory of the tiny BERT word-piece tokenizer: ``make_tokenizer(padding_side="left")``."""
    return _make_tokenizer


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    return list(SENTENCES)
