"""An on-disk embedding cache keyed by (encoder identity, sha256 of the text).

Layout under the cache directory::

    <sha256(identity)[:32]>/            one folder per encoder identity
        identity.json                   {"identity": ..., "dim": ..., "format": ...}
        shard-<sha256(bytes)[:32]>.safetensors
                                        "keys": uint8 (n, 32) text digests, "vectors": float32 (n, dim)

Guarantees:

* A shard holds its keys and its vectors in one file, named by the hash of its bytes and written
  with `palrm.atomic.atomic_write_bytes` (a fsynced temporary file in the same folder renamed into place): a crash never
  leaves a key without its vector, and concurrent processes never clobber each other (distinct
  contents give distinct names; equal contents are interchangeable).
* Reading verifies each shard's bytes against its name; a truncated or corrupt shard is logged,
  deleted and its texts are embedded again. Stale temporary files of crashed writers are removed.
* No pickle anywhere: safetensors and JSON only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from palrm.atomic import atomic_write_bytes, is_temporary
from palrm.encoders.base import Encoder, check_output, check_texts
from palrm.encoders.registry import make_encoder
from palrm.errors import PalrmError

logger = logging.getLogger(__name__)

__all__ = ["EmbeddingCache", "embed_texts", "default_cache_dir", "text_digest"]

FORMAT = "palrm-embedding-cache-v1"
_SHARD_PREFIX = "shard-"
_SHARD_SUFFIX = ".safetensors"
_DIGEST_BYTES = 32


def default_cache_dir() -> Path:
    """``$PALRM_CACHE_DIR`` if set, else ``~/.cache/palrm/embeddings``."""
    env = os.environ.get("PALRM_CACHE_DIR", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "palrm" / "embeddings"


def text_digest(text: str) -> bytes:
    """sha256 of the UTF-8 text (32 bytes): the cache key of a text."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class _Store:
    """The shards of one encoder identity, with an in-memory index of what has been read."""

    def __init__(self, root: Path, identity: str, stale_tmp_seconds: float) -> None:
        self.identity = identity
        self.path = root / hashlib.sha256(identity.encode()).hexdigest()[:32]
        self.stale_tmp_seconds = stale_tmp_seconds
        self.dim: int | None = None
        self.index: dict[bytes, np.ndarray] = {}  # digest -> (dim,) row view of a shard
        self.loaded: set[str] = set()  # shard file names already read
        self._read_meta()

    # -- metadata -----------------------------------------------------------------------------

    def _read_meta(self) -> None:
        meta_path = self.path / "identity.json"
        if not meta_path.exists():
            return
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("identity") != self.identity:
                raise ValueError(f"it names identity {meta.get('identity')!r}")
            dim = meta.get("dim")
            self.dim = int(dim) if dim is not None else None
        except (OSError, ValueError, TypeError, AttributeError) as err:
            logger.warning("embedding cache: ignoring unreadable %s (%s); it will be rewritten", meta_path, err)

    def _write_meta(self) -> None:
        meta = {"format": FORMAT, "identity": self.identity, "dim": self.dim}
        atomic_write_bytes(self.path / "identity.json", (json.dumps(meta, indent=2) + "\n").encode())

    # -- reading ------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read shards written since the last refresh (by this or another process)."""
        if not self.path.is_dir():
            return
        now = time.time()
        for entry in sorted(os.scandir(self.path), key=lambda e: e.name):
            name = entry.name
            if is_temporary(name):
                self._maybe_remove_tmp(entry, now)
            elif name.startswith(_SHARD_PREFIX) and name.endswith(_SHARD_SUFFIX) and name not in self.loaded:
                self._load_shard(Path(entry.path))

    def _maybe_remove_tmp(self, entry: os.DirEntry, now: float) -> None:
        try:
            age = now - entry.stat().st_mtime
        except FileNotFoundError:  # its writer just finished
            return
        if age < self.stale_tmp_seconds:  # probably a writer at work right now: leave it alone
            logger.debug("embedding cache: ignoring in-progress temporary file %s", entry.path)
            return
        logger.warning(
            "embedding cache: removing %s, a temporary file left by an interrupted write %.0f s ago",
            entry.path,
            age,
        )
        Path(entry.path).unlink(missing_ok=True)

    def _load_shard(self, path: Path) -> None:
        from safetensors.numpy import load

        try:
            data = path.read_bytes()
        except FileNotFoundError:  # removed by a concurrent compaction; its rows live on elsewhere
            return
        expected = path.name[len(_SHARD_PREFIX) : -len(_SHARD_SUFFIX)]
        try:
            actual = hashlib.sha256(data).hexdigest()[: len(expected)]
            if len(expected) != 32 or actual != expected:
                raise ValueError(f"content hash {actual} does not match the file name (truncated or corrupt)")
            tensors = load(data)
            keys, vectors = tensors.get("keys"), tensors.get("vectors")
            if keys is None or vectors is None:
                raise ValueError(f"expected tensors 'keys' and 'vectors', found {sorted(tensors)}")
            if keys.dtype != np.uint8 or keys.ndim != 2 or keys.shape[1] != _DIGEST_BYTES:
                raise ValueError(f"keys have dtype {keys.dtype} and shape {keys.shape}, expected uint8 (n, 32)")
            if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[0] != keys.shape[0]:
                raise ValueError(
                    f"vectors have dtype {vectors.dtype} and shape {vectors.shape}, expected float32 ({len(keys)}, dim)"
                )
            if self.dim is not None and vectors.shape[1] != self.dim:
                raise ValueError(f"vectors have dimension {vectors.shape[1]}, this encoder's is {self.dim}")
        except Exception as err:  # safetensors raises its own error types on malformed bytes
            logger.warning(
                "embedding cache: deleting corrupt shard %s (%s); its texts will be embedded again", path, err
            )
            path.unlink(missing_ok=True)
            return
        if self.dim is None:
            self.dim = int(vectors.shape[1])
        for digest, row in zip(keys, vectors):
            self.index.setdefault(digest.tobytes(), row)
        self.loaded.add(path.name)

    # -- writing ------------------------------------------------------------------------------

    def write(self, digests: list[bytes], vectors: np.ndarray) -> str:
        """Write one shard with ``digests`` and their ``vectors``; returns its file name."""
        from safetensors.numpy import save

        if self.dim is None:
            self.dim = int(vectors.shape[1])
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / "identity.json").exists():
            self._write_meta()
        keys = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), _DIGEST_BYTES)
        payload = save({"keys": keys, "vectors": np.ascontiguousarray(vectors, dtype=np.float32)},
                       metadata={"format": FORMAT, "identity": self.identity})
        name = f"{_SHARD_PREFIX}{hashlib.sha256(payload).hexdigest()[:32]}{_SHARD_SUFFIX}"
        target = self.path / name
        if not target.exists():
            atomic_write_bytes(target, payload)
        vectors = np.array(vectors, dtype=np.float32)  # own copy: callers may reuse their buffer
        for digest, row in zip(digests, vectors):
            self.index.setdefault(digest, row)
        self.loaded.add(name)
        return name

    def shard_names(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(
            p.name for p in self.path.iterdir() if p.name.startswith(_SHARD_PREFIX) and p.name.endswith(_SHARD_SUFFIX)
        )


class EmbeddingCache:
    """Embeddings on disk, keyed by (encoder identity, sha256 of the text).

    Args:
        directory: cache root (default: :func:`default_cache_dir`).
        shard_size: texts per shard; a long job writes a shard every ``shard_size`` texts, so an
            interrupted run keeps what it computed.
        max_shards: when an identity has more shards than this after a write, they are merged
            into one (see :meth:`compact`).
        stale_tmp_seconds: temporary files older than this are leftovers of crashed writers and
            are removed; younger ones may belong to a concurrent writer and are ignored.
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        shard_size: int = 4096,
        max_shards: int = 64,
        stale_tmp_seconds: float = 3600.0,
    ) -> None:
        if shard_size < 1 or max_shards < 1:
            raise ValueError(f"shard_size and max_shards must be >= 1, got {shard_size} and {max_shards}")
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()
        self.shard_size = int(shard_size)
        self.max_shards = int(max_shards)
        self.stale_tmp_seconds = float(stale_tmp_seconds)
        self._stores: dict[str, _Store] = {}

    def _store(self, identity: str) -> _Store:
        store = self._stores.get(identity)
        if store is None:
            store = self._stores[identity] = _Store(self.directory, identity, self.stale_tmp_seconds)
        return store

    def path_for(self, encoder: Encoder) -> Path:
        """The folder holding ``encoder``'s shards."""
        return self._store(encoder.identity).path

    def encode(
        self,
        encoder: Encoder,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        progress: bool = True,
        write: bool = True,
    ) -> np.ndarray:
        """Embed ``texts`` with ``encoder``, computing only the texts not cached yet.

        Missing texts are de-duplicated, embedded in chunks and written to disk as they finish
        (``write=False``: embedded in memory and returned, nothing is written or kept).

        Returns:
            float32 ``(len(texts), dim)`` in the order of ``texts``.
        """
        from tqdm.auto import tqdm

        texts = check_texts(texts, "EmbeddingCache.encode")
        store = self._store(encoder.identity)
        store.refresh()
        digests = [text_digest(t) for t in texts]
        missing: dict[bytes, str] = {}
        for digest, text in zip(digests, texts):
            if digest not in store.index and digest not in missing:
                missing[digest] = text
        logger.info(
            "embedding cache %s: %d texts, %d unique to embed with %s",
            store.path,
            len(texts),
            len(missing),
            encoder.identity,
        )
        if missing and not write:
            todo = list(missing.items())
            vectors = check_output(encoder.encode([t for _, t in todo], batch_size=batch_size, progress=False),
                                   len(todo), store.dim, f"encoder {encoder.spec!r}")
            fresh = {d: vectors[i] for i, (d, _) in enumerate(todo)}
            out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            for i, digest in enumerate(digests):
                out[i] = fresh[digest] if digest in fresh else store.index[digest]
            return out
        if missing:
            todo = list(missing.items())
            step = max(1, min(self.shard_size, batch_size * 8))  # granularity of the progress bar
            pending_keys: list[bytes] = []
            pending_vecs: list[np.ndarray] = []
            expected_dim = store.dim
            with tqdm(total=len(todo), unit="text", desc="embedding", disable=None if progress else True) as bar:
                try:
                    for start in range(0, len(todo), step):
                        chunk = todo[start : start + step]
                        vectors = encoder.encode([t for _, t in chunk], batch_size=batch_size, progress=False)
                        vectors = check_output(vectors, len(chunk), expected_dim, f"encoder {encoder.spec!r}")
                        bad = ~np.isfinite(vectors).all(axis=1)
                        if bad.any():
                            first = [repr(chunk[i][1][:60]) for i in np.flatnonzero(bad)[:3]]
                            raise PalrmError(
                                f"encoder {encoder.spec!r} returned NaN or inf for {int(bad.sum())} text(s), e.g. "
                                f"{', '.join(first)}; nothing was cached for them. Fix: check the model and device "
                                "(e.g. half precision overflow)."
                            )
                        expected_dim = vectors.shape[1]
                        pending_keys.extend(d for d, _ in chunk)
                        pending_vecs.append(vectors)
                        if len(pending_keys) >= self.shard_size:
                            keys, pending_keys = pending_keys, []
                            store.write(keys, np.concatenate(pending_vecs))
                            pending_vecs = []
                        bar.update(len(chunk))
                except BaseException:  # keep finished work when interrupted (KeyboardInterrupt too)
                    if pending_keys:
                        try:
                            store.write(pending_keys, np.concatenate(pending_vecs))
                            logger.info("embedding cache: saved %d finished embeddings", len(pending_keys))
                        except Exception as err:  # pragma: no cover - e.g. disk full; report the first error
                            logger.warning("embedding cache: could not save finished embeddings: %s", err)
                    raise
                if pending_keys:
                    store.write(pending_keys, np.concatenate(pending_vecs))
            if len(store.shard_names()) > self.max_shards:
                self.compact(encoder)
        dim = store.dim if store.dim is not None else encoder.dim
        out = np.empty((len(texts), dim), dtype=np.float32)
        for i, digest in enumerate(digests):
            out[i] = store.index[digest]
        return out

    def compact(self, encoder: Encoder) -> int:
        """Merge all shards of ``encoder`` into one; returns the number of shards merged.

        Safe with concurrent readers and writers: the merged shard is written before the old
        ones are removed, and shards written meanwhile are left alone.
        """
        store = self._store(encoder.identity)
        store.refresh()
        names = [n for n in store.shard_names() if n in store.loaded]
        if len(names) <= 1 or not store.index:
            return 0
        digests = list(store.index)
        vectors = np.stack([store.index[d] for d in digests])
        merged = store.write(digests, vectors)
        for name in names:
            if name != merged:
                (store.path / name).unlink(missing_ok=True)
        logger.info("embedding cache %s: merged %d shards into %s", store.path, len(names), merged)
        return len(names)

    def __len__(self) -> int:
        """Number of encoder identities with a folder in this cache."""
        if not self.directory.is_dir():
            return 0
        return sum(1 for p in self.directory.iterdir() if (p / "identity.json").is_file())

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.directory)!r})"


def embed_texts(
    texts: Sequence[str],
    encoder: str | Encoder | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    batch_size: int = 32,
    progress: bool = True,
) -> np.ndarray:
    """Embed ``texts`` with ``encoder`` (an Encoder or a spec for :func:`make_encoder`).

    Args:
        texts: the texts; duplicates are embedded once.
        encoder: an Encoder, a spec string, or None for the default (all-MiniLM-L6-v2).
        cache_dir: cache root; None means :func:`default_cache_dir`.
        use_cache: read and write the on-disk cache.
        batch_size: texts per forward pass.
        progress: show a progress bar (only on a terminal).

    Returns:
        float32 ``(len(texts), dim)`` in the order of ``texts``.
    """
    enc = make_encoder(encoder)
    texts = check_texts(texts, "embed_texts")
    if use_cache:
        return EmbeddingCache(cache_dir).encode(enc, texts, batch_size=batch_size, progress=progress)
    unique = list(dict.fromkeys(texts))
    if not unique:
        return np.zeros((0, enc.dim), dtype=np.float32)
    vectors = check_output(
        enc.encode(unique, batch_size=batch_size, progress=progress), len(unique), None, f"encoder {enc.spec!r}"
    )
    row = {t: i for i, t in enumerate(unique)}
    return vectors[np.fromiter((row[t] for t in texts), dtype=np.int64, count=len(texts))]
