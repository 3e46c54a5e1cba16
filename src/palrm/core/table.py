"""Texts -> vectors, in one place: the `Embedder` (encoder + one embedding cache per model) and the
embedding table with its "no prompt" row.

The embedding table of a set of texts is

    table = [ e(text_0); e(text_1); ...; e(text_{T-1}); 0 ]        (T + 1, D)

Row T, all zeros, stands for "no prompt" (a pair or item without a prompt is scored against the
zero prompt vector). Every caller that builds a table or maps a prompt to its row goes through
`embedding_table` / `no_prompt_row` / `text_rows`; nothing else knows the rule.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from palrm.config import EncoderConfig
from palrm.data.schema import PairData
from palrm.training import IndexedPairs, indexed

logger = logging.getLogger(__name__)

__all__ = ["Embedder", "build_encoder", "encoder_spec", "embedding_table", "no_prompt_row", "pair_index", "text_rows"]


def embedding_table(vectors: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """(T, D) vectors -> (T + 1, D) float32 table on `device`; the last row (zeros) is "no prompt"."""
    vectors = np.asarray(vectors, dtype=np.float32) if not isinstance(vectors, torch.Tensor) else vectors.float().cpu().numpy()
    table = np.concatenate([vectors, np.zeros((1, vectors.shape[1]), dtype=np.float32)], 0)  # (T + 1, D)
    return torch.from_numpy(table).to(device)


def no_prompt_row(table: torch.Tensor) -> int:
    """The row of `table` (built by `embedding_table`) that stands for "no prompt"."""
    return int(table.shape[0]) - 1


def pair_index(data: PairData, user_rows: np.ndarray, table: torch.Tensor) -> IndexedPairs:
    """`data`'s pairs as row indices into `table` (prompt -1 -> the no-prompt row), on the table's device."""
    return indexed(user_rows, data.prompt, data.chosen, data.rejected, no_prompt_row=no_prompt_row(table)).to(table.device)


def text_rows(prompts: Sequence[str | None], responses: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(distinct texts T, prompt rows (n,), response rows (n,)) for items (prompt_i, response_i).

    Every distinct text appears once (sorted); an empty or missing prompt maps to row T, the no-prompt
    row of `embedding_table(vectors of the T texts)`.
    """
    texts = sorted({*(p for p in prompts if p), *responses})
    pos = {t: i for i, t in enumerate(texts)}
    p_rows = np.array([pos[p] if p else len(texts) for p in prompts], dtype=np.int64)
    x_rows = np.array([pos[x] for x in responses], dtype=np.int64)
    return texts, p_rows, x_rows


CUSTOM_ENCODER = "custom"  # the spec saved for an encoder object that has no spec of its own


def encoder_spec(encoder) -> str:
    """The spec string saved for an encoder object: its own `spec`, else "custom" (load then needs it passed)."""
    spec = getattr(encoder, "spec", None)
    return spec if isinstance(spec, str) and spec else CUSTOM_ENCODER


def build_encoder(spec, device: str | None = None):
    """`make_encoder(spec)` placed on `device` (encoders load their weights lazily, on first use)."""
    from palrm.encoders import make_encoder

    enc = make_encoder(spec)
    if device is not None and isinstance(spec, str) and hasattr(enc, "device"):
        enc.device = str(device)  # nothing is loaded yet: the model will load on this device
    return enc


class Embedder:
    """A model's encoder and its ONE embedding cache object.

    `embed(texts, store=True)` (fitting, evaluation) reads the on-disk cache and writes the texts it
    had to embed; `embed(texts, store=False)` (the scoring paths: reward, reward_batch, TRL, serve)
    only reads it and embeds the rest in memory, never writing to disk. The cache object lives as long
    as the model, so each call reads only shards written since the previous one (no re-reading and
    re-hashing of every shard per call).

    Args:
        encoder: an Encoder object, or None to build `config.spec` on `device` on first use.
        config: the model's EncoderConfig (spec, cache_dir, use_cache, batch_size).
        device: torch device the encoder runs on.
    """

    def __init__(self, config: EncoderConfig, encoder=None, device: str | None = None) -> None:
        self.config = config
        self.device = device
        self._encoder = encoder
        self._cache = None
        self._cache_dir = None

    @property
    def encoder(self):
        if self._encoder is None:
            self._encoder = build_encoder(self.config.spec, self.device)
        return self._encoder

    @encoder.setter
    def encoder(self, value) -> None:
        self._encoder = value

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    @property
    def cache(self):
        """The model's EmbeddingCache (created on first use, then kept)."""
        from palrm.encoders import EmbeddingCache

        if self._cache is None or self._cache_dir != self.config.cache_dir:
            self._cache, self._cache_dir = EmbeddingCache(self.config.cache_dir), self.config.cache_dir
        return self._cache

    def embed(self, texts: Sequence[str], *, progress: bool = False, store: bool = True) -> np.ndarray:
        """float32 (len(texts), D) vectors of `texts`; `store=False` never writes to the disk cache."""
        from palrm.encoders import embed_texts

        cfg = self.config
        texts = list(texts)
        if cfg.use_cache:
            vectors = self.cache.encode(self.encoder, texts, batch_size=cfg.batch_size, progress=progress, write=store)
        else:
            vectors = embed_texts(texts, self.encoder, use_cache=False, batch_size=cfg.batch_size, progress=progress)
        return np.asarray(vectors, dtype=np.float32)
