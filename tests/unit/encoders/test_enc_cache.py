"""EmbeddingCache: only missing texts reach the encoder; writes are atomic; damage is repaired."""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from palrm.encoders import (
    EmbeddingCache,
    HashingEncoder,
    default_cache_dir,
    embed_texts,
)
from palrm.errors import PalrmError

TEXTS = [f"response number {i} about topic {i % 7}" for i in range(40)]


class CountingEncoder:
    """Wraps HashingEncoder and records every text it is asked to embed."""

    def __init__(self, dim: int = 16, fail_after_calls: int | None = None) -> None:
        self.inner = HashingEncoder(dim=dim)
        self.identity = self.inner.identity
        self.spec = self.inner.spec
        self.calls: list[list[str]] = []
        self.fail_after_calls = fail_after_calls

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def seen(self) -> list[str]:
        return [t for call in self.calls for t in call]

    def encode(self, texts: list[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        if self.fail_after_calls is not None and len(self.calls) >= self.fail_after_calls:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-run
        self.calls.append(list(texts))
        return self.inner.encode(texts)


def _store_dir(cache: EmbeddingCache, enc: CountingEncoder) -> Path:
    return cache.path_for(enc)


def _shards(cache: EmbeddingCache, enc: CountingEncoder) -> list[Path]:
    return sorted(_store_dir(cache, enc).glob("shard-*.safetensors"))


def test_second_call_does_not_call_the_encoder(tmp_path: Path) -> None:
    enc = CountingEncoder()
    cache = EmbeddingCache(tmp_path)
    first = cache.encode(enc, TEXTS, progress=False)
    np.testing.assert_array_equal(first, HashingEncoder(dim=16).encode(TEXTS))
    assert sorted(enc.seen) == sorted(TEXTS)
    enc.calls.clear()
    second = cache.encode(enc, TEXTS[::-1], progress=False)
    assert enc.calls == []
    np.testing.assert_array_equal(second, first[::-1])
    # a fresh cache object (another process) reads the same vectors from disk
    third = EmbeddingCache(tmp_path).encode(enc, TEXTS, progress=False)
    assert enc.calls == []
    np.testing.assert_array_equal(third, first)


def test_only_missing_unique_texts_are_embedded(tmp_path: Path) -> None:
    enc = CountingEncoder()
    cache = EmbeddingCache(tmp_path)
    cache.encode(enc, TEXTS[:10], progress=False)
    enc.calls.clear()
    query = TEXTS[5:15] + TEXTS[12:15] + ["", ""]
    out = cache.encode(enc, query, progress=False)
    assert sorted(enc.seen) == sorted(TEXTS[10:15] + [""])  # each new text once
    np.testing.assert_array_equal(out, HashingEncoder(dim=16).encode(query))


def test_layout_identity_json_and_no_pickle(tmp_path: Path) -> None:
    enc = CountingEncoder()
    cache = EmbeddingCache(tmp_path)
    cache.encode(enc, TEXTS, progress=False)
    store = _store_dir(cache, enc)
    meta = json.loads((store / "identity.json").read_text())
    assert meta["identity"] == enc.identity and meta["dim"] == 16
    (shard,) = _shards(cache, enc)
    tensors = load_file(shard)  # plain safetensors: keys and vectors in one file
    assert tensors["keys"].shape == (len(TEXTS), 32) and tensors["vectors"].shape == (len(TEXTS), 16)
    other = HashingEncoder(dim=16, seed=1)
    cache.encode(other, TEXTS[:3], progress=False)
    assert cache.path_for(other) != store and len(cache) == 2


def test_empty_input(tmp_path: Path) -> None:
    out = EmbeddingCache(tmp_path).encode(CountingEncoder(dim=12), [], progress=False)
    assert out.shape == (0, 12) and out.dtype == np.float32


def test_truncated_shard_is_deleted_with_a_warning_and_recomputed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    enc = CountingEncoder()
    EmbeddingCache(tmp_path).encode(enc, TEXTS, progress=False)
    cache = EmbeddingCache(tmp_path)
    (shard,) = _shards(cache, enc)
    intact = shard.read_bytes()
    shard.write_bytes(intact[:-100])  # a crash mid-write, without the atomic rename
    enc.calls.clear()
    with caplog.at_level(logging.WARNING, logger="palrm.encoders.cache"):
        out = cache.encode(enc, TEXTS, progress=False)
    assert "corrupt shard" in caplog.text and shard.name in caplog.text
    # the truncated file is gone: either deleted, or replaced by the recomputed shard (same content, same name)
    assert not shard.exists() or shard.read_bytes() == intact
    assert sorted(enc.seen) == sorted(TEXTS)  # recomputed, not garbage
    np.testing.assert_array_equal(out, HashingEncoder(dim=16).encode(TEXTS))


def test_flipped_bits_in_a_shard_are_detected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    enc = CountingEncoder()
    EmbeddingCache(tmp_path).encode(enc, TEXTS, progress=False)
    cache = EmbeddingCache(tmp_path)
    (shard,) = _shards(cache, enc)
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF  # inside the vectors: the safetensors header would still parse
    shard.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="palrm.encoders.cache"):
        out = cache.encode(enc, TEXTS, progress=False)
    assert "does not match" in caplog.text
    np.testing.assert_array_equal(out, HashingEncoder(dim=16).encode(TEXTS))


def test_leftover_temp_files_are_ignored_then_cleaned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    enc = CountingEncoder()
    cache = EmbeddingCache(tmp_path)
    cache.encode(enc, TEXTS[:5], progress=False)
    leftover = _store_dir(cache, enc) / ".tmp-0123abcd.safetensors"
    leftover.write_bytes(b"half a shard")
    out = EmbeddingCache(tmp_path).encode(enc, TEXTS[:5], progress=False)  # fresh: maybe a live writer
    np.testing.assert_array_equal(out, HashingEncoder(dim=16).encode(TEXTS[:5]))
    assert leftover.exists()
    old = time.time() - 2 * 3600
    os.utime(leftover, (old, old))
    with caplog.at_level(logging.WARNING, logger="palrm.encoders.cache"):
        EmbeddingCache(tmp_path).encode(enc, TEXTS[:5], progress=False)
    assert not leftover.exists() and "interrupted write" in caplog.text


def test_interrupted_run_keeps_finished_chunks(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, shard_size=8)
    enc = CountingEncoder(fail_after_calls=2)  # chunks of 8 (batch_size 1 * 8): two succeed
    with pytest.raises(KeyboardInterrupt):
        cache.encode(enc, TEXTS, batch_size=1, progress=False)
    done = enc.seen
    assert len(done) == 16
    resumed = CountingEncoder()
    out = EmbeddingCache(tmp_path).encode(resumed, TEXTS, batch_size=1, progress=False)
    assert sorted(resumed.seen) == sorted(set(TEXTS) - set(done))
    np.testing.assert_array_equal(out, HashingEncoder(dim=16).encode(TEXTS))


def test_concurrent_writers_do_not_clobber_each_other(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def work(worker: int) -> np.ndarray:
        enc = CountingEncoder()
        mine = TEXTS[worker * 8 : worker * 8 + 16]  # overlapping slices
        return EmbeddingCache(tmp_path, shard_size=4, max_shards=1000).encode(enc, mine, batch_size=1, progress=False)

    with caplog.at_level(logging.WARNING, logger="palrm.encoders.cache"), ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(4)))
    assert caplog.text == ""
    enc = CountingEncoder()
    cache = EmbeddingCache(tmp_path)
    out = cache.encode(enc, TEXTS, progress=False)
    assert enc.calls == []  # everything written by the workers is there
    np.testing.assert_array_equal(out, HashingEncoder(dim=16).encode(TEXTS))
    assert len(_shards(cache, enc)) > 4


def test_compaction_merges_shards(tmp_path: Path) -> None:
    enc = CountingEncoder()
    cache = EmbeddingCache(tmp_path, shard_size=4, max_shards=3)
    out = cache.encode(enc, TEXTS, batch_size=1, progress=False)  # 10 shards -> merged
    assert len(_shards(cache, enc)) == 1
    again = CountingEncoder()
    np.testing.assert_array_equal(EmbeddingCache(tmp_path).encode(again, TEXTS, progress=False), out)
    assert again.calls == []


def test_bad_encoder_output_is_not_cached(tmp_path: Path) -> None:
    class NaNEncoder(CountingEncoder):
        def encode(self, texts, *, batch_size=32, progress=False):
            out = super().encode(texts)
            out[0, 0] = np.nan
            return out

    cache = EmbeddingCache(tmp_path)
    with pytest.raises(PalrmError, match="NaN"):
        cache.encode(NaNEncoder(), TEXTS[:3], progress=False)
    assert not list(tmp_path.rglob("shard-*"))

    class ShortEncoder(CountingEncoder):
        def encode(self, texts, *, batch_size=32, progress=False):
            return super().encode(texts)[:-1]

    with pytest.raises(ValueError, match=r"shape \(2, 16\), expected \(3"):
        cache.encode(ShortEncoder(), TEXTS[:3], progress=False)


def test_embed_texts_default_directory_and_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PALRM_CACHE_DIR", str(tmp_path / "envcache"))
    assert default_cache_dir() == tmp_path / "envcache"
    out = embed_texts(TEXTS[:4] + TEXTS[:2], "hashing:16", progress=False)
    np.testing.assert_array_equal(out, HashingEncoder(dim=16).encode(TEXTS[:4] + TEXTS[:2]))
    assert list((tmp_path / "envcache").rglob("shard-*.safetensors"))
    monkeypatch.delenv("PALRM_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "palrm" / "embeddings"


def test_embed_texts_without_cache_writes_nothing(tmp_path: Path) -> None:
    enc = CountingEncoder()
    out = embed_texts(TEXTS[:3] * 2, enc, cache_dir=tmp_path / "c", use_cache=False, progress=False)
    assert enc.calls == [TEXTS[:3]]  # deduplicated
    np.testing.assert_array_equal(out, HashingEncoder(dim=16).encode(TEXTS[:3] * 2))
    assert not (tmp_path / "c").exists()
    assert embed_texts([], enc, use_cache=False).shape == (0, 16)
