"""Embedding of one micro-batch in the reward service: encode less.

* Every distinct text of a micro-batch is encoded once (GRPO scores G completions of one prompt:
  the prompt is encoded once for all of them, and duplicated completions once).
* Prompts go through an in-memory LRU cache of embeddings (`prompt_cache_size` entries, 0 turns it
  off): a prompt seen by an earlier batch is not encoded again. Completions are never cached unless
  `cache_completions` is set (RLHF completions are unique, so caching them would only evict prompts).
* Everything still to encode goes to the encoder in ONE call, which sorts the texts by length and
  batches them (sentence-transformers and `OnnxEncoder` both do), so similar lengths pad together.

The micro-batcher bounds a batch by tokens; `estimate_tokens` is its measure: 2 special tokens plus
one token per 4 characters (the usual English WordPiece/BPE ratio), at most `max_tokens`. It runs on
the event loop for every item, so it never calls a tokenizer.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

__all__ = ["BatchEmbedder", "EmbeddingLRU", "estimate_tokens"]


def estimate_tokens(text: str, max_tokens: int = 512) -> int:
    """Tokens of `text` as the micro-batcher counts them: min(max_tokens, 2 + ceil(len(text) / 4))."""
    return min(max_tokens, 2 + (len(text) + 3) // 4)


class EmbeddingLRU:
    """text -> float32 vector, at most `capacity` entries, least recently used evicted first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"cache capacity must be >= 0, got {capacity}")
        self.capacity = int(capacity)
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # stats() is read from the event loop
        self.hits = 0
        self.misses = 0

    def get(self, text: str) -> np.ndarray | None:
        with self._lock:
            vec = self._data.get(text)
            if vec is None:
                self.misses += 1
                return None
            self._data.move_to_end(text)
            self.hits += 1
            return vec

    def put(self, text: str, vec: np.ndarray) -> None:
        if self.capacity == 0:
            return
        with self._lock:
            self._data[text] = vec
            self._data.move_to_end(text)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def stats(self) -> dict:
        with self._lock:
            return {"size": len(self._data), "capacity": self.capacity, "hits": self.hits, "misses": self.misses}


class BatchEmbedder:
    """Vectors for the (prompt, response) items of one micro-batch.

    Args:
        encode: the model's text encoder, `encode(list[str]) -> (n, D) float32`.
        dim: D.
        prompt_cache_size: entries of the prompt LRU cache (0: off).
        cache_completions: also cache responses (off by default).
    """

    def __init__(self, encode, dim: int, *, prompt_cache_size: int = 4096, cache_completions: bool = False) -> None:
        self.encode = encode
        self.dim = int(dim)
        self.cache = EmbeddingLRU(prompt_cache_size)
        self.cache_completions = bool(cache_completions)
        self.texts_encoded = 0  # distinct texts sent to the encoder, over the service's life

    def embed(self, prompts: list[str], responses: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(n, D) prompt vectors (zeros for an empty prompt: "no prompt") and (n, D) response vectors."""
        n = len(responses)
        vectors: dict[str, np.ndarray] = {}
        todo: dict[str, None] = {}  # distinct texts to encode, in first-seen order
        for text, cacheable in [*((p, True) for p in prompts if p), *((r, self.cache_completions) for r in responses)]:
            if text in vectors or text in todo:
                continue
            vec = self.cache.get(text) if cacheable and self.cache.capacity else None
            if vec is None:
                todo[text] = None
            else:
                vectors[text] = vec
        if todo:
            texts = list(todo)
            out = np.asarray(self.encode(texts), dtype=np.float32)  # (T, D): one encoder call, length-bucketed inside
            self.texts_encoded += len(texts)
            prompt_set = set(prompts)
            for text, vec in zip(texts, out):
                vectors[text] = vec
                if self.cache_completions or text in prompt_set:
                    self.cache.put(text, vec)
        zero = np.zeros(self.dim, dtype=np.float32)
        p = np.stack([vectors[t] if t else zero for t in prompts]) if n else np.zeros((0, self.dim), np.float32)  # (n, D)
        x = np.stack([vectors[t] for t in responses]) if n else np.zeros((0, self.dim), np.float32)  # (n, D)
        return p, x

    def stats(self) -> dict:
        return {**self.cache.stats(), "cache_completions": self.cache_completions, "texts_encoded": self.texts_encoded}
