"""The service's batch embedder: each distinct text encoded once, prompts cached (LRU), completions not."""

from __future__ import annotations

import numpy as np
import pytest

from palrm.encoders import HashingEncoder
from palrm.serve.embeddings import BatchEmbedder, EmbeddingLRU, estimate_tokens


class Counting:
    def __init__(self):
        self.enc = HashingEncoder(dim=16)
        self.calls: list[list[str]] = []

    def __call__(self, texts):
        self.calls.append(list(texts))
        return self.enc.encode(texts)


def test_grpo_batch_encodes_each_distinct_text_once_and_matches_the_encoder():
    enc = Counting()
    emb = BatchEmbedder(enc, 16, prompt_cache_size=8)
    prompts = ["P1"] * 8 + ["P2"] * 8 + [""]
    responses = [f"c{i % 12}" for i in range(16)] + ["c0"]
    p, x = emb.embed(prompts, responses)
    assert len(enc.calls) == 1 and sorted(enc.calls[0]) == sorted({"P1", "P2", *responses})
    ref = HashingEncoder(dim=16)
    assert np.array_equal(p[:16], ref.encode(prompts[:16])) and not p[16].any()  # empty prompt -> zeros
    assert np.array_equal(x, ref.encode(responses))
    # next batch: the prompts come from the LRU, the completions are encoded again (never cached by default)
    emb.embed(["P1", "P2"], ["c0", "new"])
    assert sorted(enc.calls[1]) == ["c0", "new"]
    stats = emb.stats()
    assert stats["size"] == 2 and stats["hits"] == 2 and stats["texts_encoded"] == 14 + 2  # P1, P2, c0..c11; then c0, new


def test_cache_completions_when_asked():
    enc = Counting()
    emb = BatchEmbedder(enc, 16, prompt_cache_size=8, cache_completions=True)
    emb.embed(["P"], ["same"])
    emb.embed(["P"], ["same"])
    assert len(enc.calls) == 1


def test_cache_off_and_lru_eviction():
    enc = Counting()
    emb = BatchEmbedder(enc, 16, prompt_cache_size=0)
    emb.embed(["P"], ["a"])
    emb.embed(["P"], ["b"])
    assert enc.calls == [["P", "a"], ["P", "b"]] and emb.stats()["size"] == 0
    lru = EmbeddingLRU(2)
    for t in ("a", "b"):
        lru.put(t, np.zeros(1))
    lru.get("a")  # a becomes the most recent
    lru.put("c", np.zeros(1))
    assert lru.get("b") is None and lru.get("a") is not None and len(lru) == 2
    with pytest.raises(ValueError):
        EmbeddingLRU(-1)


def test_token_estimate():
    assert estimate_tokens("") == 2 and estimate_tokens("abcd") == 3 and estimate_tokens("abcde") == 4
    assert estimate_tokens("x" * 10_000) == 512 and estimate_tokens("x" * 10_000, max_tokens=128) == 128
