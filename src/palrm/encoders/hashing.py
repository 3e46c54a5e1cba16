"""`HashingEncoder`: a deterministic, dependency-free text encoder for tests and quick experiments.

Each text becomes a bag of features (case-folded words, character trigrams of the whitespace-
normalised text, and the exact text itself); every feature is hashed with BLAKE2b (keyed by the
seed) to one of ``dim`` slots and a sign, the signed weights are summed and the vector is
L2-normalised (the "hashing trick", Weinberger et al., 2009). So:

* the same text gives the same vector in every process and on every platform (no ``hash()``);
* texts that share words and character n-grams get similar vectors;
* distinct texts almost always get distinct vectors (the exact-text feature);
* every vector, even that of the empty string, has unit norm.
"""

from __future__ import annotations

import functools
import hashlib
import re

import numpy as np

from palrm.encoders.base import check_texts

__all__ = ["HashingEncoder"]

_WORD_RE = re.compile(r"\w+")
_SPACE_RE = re.compile(r"\s+")

WORD_WEIGHT = 1.0
NGRAM_WEIGHT = 0.5
EXACT_WEIGHT = 0.5
NGRAM = 3


@functools.lru_cache(maxsize=1 << 18)
def _slot(feature: str, dim: int, seed: int) -> tuple[int, float]:
    """Hash ``feature`` to (slot index, sign) with a seed-keyed BLAKE2b."""
    digest = hashlib.blake2b(
        feature.encode("utf-8", "surrogatepass"), digest_size=8, key=seed.to_bytes(8, "little")
    ).digest()
    value = int.from_bytes(digest, "little")
    return value % dim, (1.0 if value >> 63 else -1.0)


def _features(text: str) -> list[tuple[str, float]]:
    """The weighted features of one text (prefixes keep the three families apart)."""
    folded = _SPACE_RE.sub(" ", text.casefold()).strip()
    feats = [("w:" + w, WORD_WEIGHT) for w in _WORD_RE.findall(folded)]
    padded = f" {folded} "
    feats += [("c:" + padded[i : i + NGRAM], NGRAM_WEIGHT) for i in range(len(padded) - NGRAM + 1)]
    feats.append(("x:" + text, EXACT_WEIGHT))
    return feats


class HashingEncoder:
    """Signed feature hashing of words and character trigrams, L2-normalised.

    Args:
        dim: output dimension (at least 2).
        seed: changes the hash functions, hence every vector.
    """

    VERSION = 1  # bump whenever the features change: it is part of `identity`

    def __init__(self, dim: int = 64, seed: int = 0) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"HashingEncoder dim must be an int >= 2, got {dim!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ValueError(f"HashingEncoder seed must be an int in [0, 2**63), got {seed!r}")
        self._dim = dim
        self.seed = seed
        self.identity = f"hashing:v{self.VERSION}:dim={dim}:seed={seed}"
        self.spec = f"hashing:{dim}:{seed}"

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, texts: list[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Embed ``texts`` (``batch_size`` and ``progress`` are ignored: this is fast)."""
        texts = check_texts(texts, "HashingEncoder.encode")
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        rows: list[int] = []
        slots: list[int] = []
        weights: list[float] = []
        for row, text in enumerate(texts):
            for feature, weight in _features(text):
                slot, sign = _slot(feature, self._dim, self.seed)
                rows.append(row)
                slots.append(slot)
                weights.append(sign * weight)
        n = len(texts)
        flat = np.asarray(rows, dtype=np.int64) * self._dim + np.asarray(slots, dtype=np.int64)
        signed = np.asarray(weights, dtype=np.float64)
        out = np.bincount(flat, weights=signed, minlength=n * self._dim).reshape(n, self._dim)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.where(norms > 0, norms, 1.0)  # a zero vector needs all features to cancel out
        return out.astype(np.float32)

    def __repr__(self) -> str:
        return f"HashingEncoder(dim={self._dim}, seed={self.seed})"
