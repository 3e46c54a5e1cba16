"""The `Encoder` protocol, helpers shared by the implementations, and `PrecomputedEncoder`.

The spec-string registry (`make_encoder`) lives in `palrm.encoders.registry`, so this module
imports no implementation.

An encoder maps a list of texts to a float32 matrix ``(n, dim)``. Every encoder carries two
strings:

* ``identity``: stable, and different whenever the vectors would differ (implementation, model
  files, pooling, maximum length, normalisation, dimension). The embedding cache is keyed by it.
* ``spec``: the string ``make_encoder`` accepts to rebuild the encoder; saved models store it in
  their ``config.json``.

Heavy libraries (torch, transformers, sentence-transformers) are imported only when a model is
actually loaded, so ``import palrm.encoders`` stays cheap.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from palrm.errors import DataFormatError

logger = logging.getLogger(__name__)

__all__ = [
    "Encoder",
    "PrecomputedEncoder",
    "check_texts",
    "is_encoder",
    "check_output",
    "fingerprint_directory",
]


@runtime_checkable
class Encoder(Protocol):
    """What palrm needs from a text encoder.

    Attributes:
        identity: stable string that changes whenever the outputs would change; the embedding
            cache is keyed by it.
        spec: the string :func:`make_encoder` accepts to rebuild this encoder.
    """

    identity: str
    spec: str

    @property
    def dim(self) -> int:
        """Length of each output vector."""
        ...

    def encode(self, texts: list[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Embed ``texts``; returns a C-contiguous float32 array of shape ``(len(texts), dim)``."""
        ...


# --------------------------------------------------------------------------------------------
# helpers shared by the implementations
# --------------------------------------------------------------------------------------------


def is_encoder(obj: object) -> bool:
    """True when ``obj`` satisfies the Encoder protocol.

    Unlike ``isinstance(obj, Encoder)`` this never evaluates properties, so it does not load a
    lazily loaded model just to read its ``dim``.
    """
    for name in ("identity", "spec", "dim", "encode"):
        try:
            inspect.getattr_static(obj, name)
        except AttributeError:
            return False
    return callable(getattr(obj, "encode", None))



def check_texts(texts: Sequence[str], who: str = "encode") -> list[str]:
    """Return ``texts`` as a list of str, raising a clear TypeError for anything else.

    A bare string is rejected (iterating it would embed single characters).
    """
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            f"{who} expects a list of texts, got a single {type(texts).__name__} "
            f"({texts[:40]!r}...); wrap it in a list: [text]"
        )
    out = list(texts)
    bad = [i for i, t in enumerate(out) if not isinstance(t, str)]
    if bad:
        first = ", ".join(f"#{i} ({type(out[i]).__name__})" for i in bad[:5])
        raise TypeError(
            f"{who} expects every text to be a str; {len(bad)} item(s) are not: {first}. "
            "Convert them with str() or drop missing values before embedding."
        )
    return out


def check_output(vectors: object, n: int, dim: int | None, who: str) -> np.ndarray:
    """Validate an encoder's raw output and return it as C-contiguous float32 ``(n, dim)``."""
    arr = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if arr.ndim != 2 or arr.shape[0] != n or (dim is not None and arr.shape[1] != dim):
        want = f"({n}, {dim if dim is not None else 'dim'})"
        raise ValueError(f"{who} returned an array of shape {arr.shape}, expected {want}")
    return arr


def fingerprint_directory(path: str | Path, *, head_bytes: int = 1 << 20) -> str:
    """A quick content fingerprint of a model directory (sha256 hex).

    Covers every file's relative path and size, the full content of files up to ``head_bytes``
    (configs, tokenizer files) and the first and last ``head_bytes`` of larger files (weights),
    so editing or replacing a model changes it without hashing gigabytes of weights.
    """
    root = Path(path)
    h = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):  # .git, .cache, editor files
            continue
        size = file.stat().st_size
        h.update(f"{rel.as_posix()}\0{size}\0".encode())
        with file.open("rb") as f:
            if size <= 2 * head_bytes:
                h.update(f.read())
            else:
                h.update(f.read(head_bytes))
                f.seek(size - head_bytes)
                h.update(f.read(head_bytes))
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# precomputed embeddings
# --------------------------------------------------------------------------------------------


class PrecomputedEncoder:
    """Looks texts up in a table of precomputed vectors (e.g. CLIP embeddings of Pick-a-Pic).

    Args:
        table: ``{key: vector}`` or a ``(keys, matrix)`` pair with ``matrix`` of shape
            ``(len(keys), dim)``. Keys are the "texts" this encoder is later asked for (for
            precomputed data these are row-id strings).
        name: label used in messages.

    Raises:
        DataFormatError: ragged, non-finite or duplicated entries; later, a key that is not in
            the table.
    """

    def __init__(
        self,
        table: Mapping[str, np.ndarray] | tuple[Sequence[str], np.ndarray],
        *,
        name: str = "precomputed embeddings",
    ) -> None:
        self.name = name
        if isinstance(table, Mapping):
            keys = [str(k) for k in table]
            rows = [np.asarray(v, dtype=np.float32).reshape(-1) for v in table.values()]
            lengths = {r.shape[0] for r in rows}
            if len(lengths) > 1:
                bad = [k for k, r in zip(keys, rows) if r.shape[0] != rows[0].shape[0]][:3]
                raise DataFormatError(
                    f"{name}: vectors have different lengths {sorted(lengths)}; first keys whose "
                    f"length differs from {keys[0]!r} ({rows[0].shape[0]}): {bad}. "
                    "Fix: every embedding must have the same dimension."
                )
            matrix = np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)
        else:
            try:
                raw_keys, raw_matrix = table
            except (TypeError, ValueError):
                raise TypeError(
                    f"PrecomputedEncoder expects a dict {{key: vector}} or a (keys, matrix) pair, "
                    f"got {type(table).__name__}"
                ) from None
            keys = [str(k) for k in raw_keys]
            matrix = np.asarray(raw_matrix, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != len(keys):
            raise DataFormatError(
                f"{name}: matrix has shape {matrix.shape} for {len(keys)} keys; expected "
                f"({len(keys)}, dim). Fix: pass one row per key."
            )
        if len(keys) == 0 or matrix.shape[1] == 0:
            raise DataFormatError(f"{name}: the table is empty; expected at least one key with a non-empty vector.")
        finite = np.isfinite(matrix).all(axis=1)
        if not finite.all():
            rows_bad = np.flatnonzero(~finite)[:5].tolist()
            raise DataFormatError(
                f"{name}: {int((~finite).sum())} vector(s) contain NaN or inf, first rows {rows_bad} "
                f"(keys {[keys[i] for i in rows_bad]}). Fix: recompute or drop those embeddings."
            )
        self._row: dict[str, int] = {}
        dupes: list[str] = []
        for i, k in enumerate(keys):
            if k in self._row:
                dupes.append(k)
            self._row[k] = i
        if dupes:
            raise DataFormatError(
                f"{name}: {len(dupes)} duplicated key(s), e.g. {dupes[:3]}. Fix: keep one vector per key."
            )
        self._keys = keys
        self._matrix = np.ascontiguousarray(matrix)
        h = hashlib.sha256()
        for k in keys:
            h.update(k.encode("utf-8", "surrogatepass") + b"\0")
        h.update(self._matrix.tobytes())
        digest = h.hexdigest()
        self.identity = f"precomputed:dim={self.dim}:n={len(keys)}:sha256={digest}"
        self.spec = f"precomputed:{digest[:16]}"

    @property
    def dim(self) -> int:
        return int(self._matrix.shape[1])

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._row

    def encode(self, texts: list[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Return the stored vectors of ``texts`` (``batch_size`` and ``progress`` are ignored)."""
        texts = check_texts(texts, "PrecomputedEncoder.encode")
        missing = [t for t in dict.fromkeys(texts) if t not in self._row]
        if missing:
            raise DataFormatError(
                f"{self.name}: no embedding for {len(missing)} key(s), e.g. "
                f"{', '.join(repr(m[:60]) for m in missing[:3])}; the table holds {len(self._keys)} keys "
                f"such as {', '.join(repr(k[:60]) for k in self._keys[:3])}. Fix: add rows for these keys "
                "to the embedding table/file, or embed texts with an encoder such as 'minilm' or 'hashing'."
            )
        idx = np.fromiter((self._row[t] for t in texts), dtype=np.int64, count=len(texts))
        return self._matrix[idx]

    def __repr__(self) -> str:
        return f"PrecomputedEncoder(n={len(self._keys)}, dim={self.dim}, name={self.name!r})"
