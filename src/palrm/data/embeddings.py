"""Precomputed embedding tables: reading (`load_embeddings`), checks, row lookup, and writing.

Accepted files are ``.npy``, ``.safetensors`` and ``.parquet`` / ``.pq`` (see `load_embeddings`).
`check_embedding_dim` is what a fitted model calls when it meets new vectors.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Union

import numpy as np
import pandas as pd

from palrm.atomic import atomic_file
from palrm.data.schema import PairData
from palrm.data.validation import (
    MAX_ROWS_SHOWN,
    Table,
    as_int,
    check_readable_file,
    is_nonscalar,
    is_null,
    scalar_str,
    unreadable_error,
)
from palrm.errors import DataFormatError

logger = logging.getLogger(__name__)

__all__ = ["check_embedding_dim", "check_ids", "check_matrix", "embedding_rows", "load_embeddings",
           "resolve_embeddings", "save_embeddings"]

PathLike = Union[str, "os.PathLike[str]"]

_EMBEDDING_SUFFIXES = (".npy", ".safetensors", ".parquet", ".pq")



def check_matrix(matrix: Any, name: str, ids: list[str] | None = None) -> np.ndarray:
    """Validate an embedding matrix and return it as float32 (n_rows, dim)."""
    array = np.asarray(matrix)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise DataFormatError(
            f"{name}: embeddings must be numeric, got dtype {array.dtype}. Save a float array of shape (rows, dim)."
        )
    if array.ndim != 2:
        raise DataFormatError(
            f"{name}: embeddings must be a 2-D array (rows, dim), got shape {tuple(array.shape)}. "
            "Reshape to one row per prompt / response, e.g. array.reshape(len(array), -1)."
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DataFormatError(f"{name}: the embedding table is empty (shape {tuple(array.shape)}). Write the vectors first.")
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        labels = [ids[i] for i in bad[:MAX_ROWS_SHOWN]] if ids is not None else [str(i) for i in bad[:MAX_ROWS_SHOWN]]
        more = f" and {len(bad) - MAX_ROWS_SHOWN} more ({len(bad)} in all)" if len(bad) > MAX_ROWS_SHOWN else ""
        what = "ids" if ids is not None else "row ids (0-based)"
        raise DataFormatError(
            f"{name}: embeddings contain NaN or inf (or values too large for float32) at {what} "
            f"{', '.join(labels)}{more}. Recompute those vectors or drop the pairs that use them."
        )
    return out


def check_ids(ids: list[str], n_rows: int, name: str) -> list[str]:
    if len(ids) != n_rows:
        raise DataFormatError(f"{name}: {len(ids)} ids for {n_rows} embedding rows. Give exactly one id per row.")
    seen: dict[str, int] = {}
    duplicates = []
    for i, key in enumerate(ids):
        if key in seen:
            duplicates.append(key)
        seen[key] = i
    if duplicates:
        raise DataFormatError(
            f"{name}: duplicate embedding ids {', '.join(repr(d) for d in duplicates[:MAX_ROWS_SHOWN])}. "
            "Every row needs a unique id."
        )
    return ids


def load_embeddings(path: PathLike) -> tuple[list[str] | None, np.ndarray]:
    """Read a precomputed embedding table.

    Accepted files:

    * ``.npy``: one (rows, dim) array (loaded with ``allow_pickle=False``).
    * ``.safetensors``: one tensor, or a tensor named ``embeddings`` (optionally with a 1-D integer
      tensor ``ids`` giving row ids).
    * ``.parquet`` / ``.pq``: either one column of lists / arrays, or numeric columns (one per
      dimension); an optional ``id`` column gives row ids.

    Returns:
        ``(ids, matrix)``: ``ids`` is the list of row ids as strings, or ``None`` when the file has
        none (then rows are addressed by their 0-based position); ``matrix`` is float32 (rows, dim).

    Raises:
        DataFormatError: missing / unreadable file, unknown suffix, wrong shape or dtype, NaN or inf.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _EMBEDDING_SUFFIXES:
        raise DataFormatError(
            f"{path}: unknown embedding file type {suffix or '(none)'!r}; expected one of "
            f"{', '.join(_EMBEDDING_SUFFIXES)}. Convert it, e.g. np.save('emb.npy', matrix)."
        )
    check_readable_file(path, "embedding file")
    ids: list[str] | None = None
    try:
        if suffix == ".npy":
            try:
                matrix = np.load(path, allow_pickle=False)
            except ValueError as exc:
                if "pickle" in str(exc).lower():
                    raise DataFormatError(
                        f"{path}: the .npy file holds Python objects, which palrm never unpickles. "
                        "Save a numeric array: np.save(path, np.asarray(vectors, dtype=np.float32))."
                    ) from exc
                raise
        elif suffix == ".safetensors":
            from safetensors.numpy import load_file

            tensors = load_file(str(path))
            if "embeddings" in tensors:
                matrix = tensors["embeddings"]
                if "ids" in tensors:
                    raw = np.asarray(tensors["ids"])
                    if raw.ndim != 1 or not np.issubdtype(raw.dtype, np.integer):
                        raise DataFormatError(f"{path}: tensor 'ids' must be 1-D integers, got {raw.dtype} {raw.shape}.")
                    ids = [str(int(i)) for i in raw]
            elif len(tensors) == 1:
                matrix = next(iter(tensors.values()))
            else:
                raise DataFormatError(
                    f"{path}: {len(tensors)} tensors ({', '.join(sorted(tensors))}) and none named 'embeddings'. "
                    "Store one tensor, or name the embedding tensor 'embeddings'."
                )
        else:
            frame = pd.read_parquet(path, engine="pyarrow")
            if "id" in frame.columns:
                raw_ids = frame["id"].to_numpy(dtype=object)
                if any(is_null(v) for v in raw_ids):
                    raise DataFormatError(f"{path}: the 'id' column has null values. Give every row an id.")
                ids = [scalar_str(v) for v in raw_ids]
                frame = frame.drop(columns=["id"])
            matrix = _parquet_matrix(frame, path)
    except DataFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure means an unreadable file
        raise unreadable_error(path, suffix.lstrip("."), exc) from exc
    matrix = check_matrix(matrix, str(path), ids)
    if ids is not None:
        check_ids(ids, len(matrix), str(path))
    logger.debug("Loaded %d x %d embeddings from %s", matrix.shape[0], matrix.shape[1], path)
    return ids, matrix


def _parquet_matrix(frame: pd.DataFrame, path: Path) -> np.ndarray:
    if frame.shape[1] == 1 and frame.dtypes.iloc[0] == object:
        cells = frame.iloc[:, 0].to_numpy(dtype=object)
        lengths = {len(c) if is_nonscalar(c) else -1 for c in cells}
        if -1 in lengths or len(lengths) > 1:
            raise DataFormatError(
                f"{path}: the embedding column {frame.columns[0]!r} must hold one list of numbers per row, all of "
                f"the same length (found lengths {sorted(lengths)[:5]}; -1 = not a list)."
            )
        return np.stack([np.asarray(c) for c in cells]) if len(cells) else np.empty((0, 0))
    non_numeric = [str(c) for c, t in frame.dtypes.items() if not pd.api.types.is_numeric_dtype(t)]
    if non_numeric or frame.shape[1] == 0:
        raise DataFormatError(
            f"{path}: expected either one list column or only numeric columns (plus an optional 'id'), found "
            f"non-numeric columns {non_numeric}. Store the vectors in one list column or one column per dimension."
        )
    return frame.to_numpy()


def resolve_embeddings(embeddings: Any) -> tuple[list[str] | None, np.ndarray, str]:
    if isinstance(embeddings, (str, os.PathLike)):
        ids, matrix = load_embeddings(embeddings)
        return ids, matrix, str(embeddings)
    if isinstance(embeddings, tuple) and len(embeddings) == 2:
        raw_ids, matrix = embeddings
        ids = None if raw_ids is None else [scalar_str(i) for i in raw_ids]
        matrix = check_matrix(matrix, "<array>", ids)
        if ids is not None:
            check_ids(ids, len(matrix), "<array>")
        return ids, matrix, "<array>"
    return None, check_matrix(embeddings, "<array>"), "<array>"


def embedding_rows(
    table: Table, column: str, keys: np.ndarray, ids: list[str] | None, n_rows: int, emb_name: str, *, required: bool
) -> np.ndarray:
    """Row positions in the embedding table for one id column; -1 where a value is missing or invalid (those
    rows are flagged on `table` unless the column is optional and the value missing)."""
    null = np.array([is_null(v) or (isinstance(v, str) and not v.strip()) for v in keys], dtype=bool)
    if required:
        table.flag("empty_response", f"column {column!r} is empty or null", null,
                   f"Every pair needs two embedding row ids from {emb_name}.")
    rows = np.full(len(keys), -1, dtype=np.int64)
    if ids is None:
        parsed = [None if n else as_int(v) for v, n in zip(keys, null)]
        not_int = np.array([p is None and not n for p, n in zip(parsed, null)], dtype=bool)
        if not_int.any():
            table.flag(
                "invalid_embedding_row",
                f"column {column!r} must hold integer embedding row ids when embeddings are given, found "
                f"{keys[not_int][0]!r}",
                not_int,
                f"Put 0-based row numbers of {emb_name} in the pair table (or give the embedding table an 'id' column).",
            )
        rows[:] = [-1 if p is None else p for p in parsed]
        missing = ~null & ~not_int & ((rows < 0) | (rows >= n_rows))
        hint = f"it has rows 0..{n_rows - 1}"
    else:
        lookup = {key: i for i, key in enumerate(ids)}
        found = [lookup.get(scalar_str(v).strip(), -1) if not n else -1 for v, n in zip(keys, null)]
        rows[:] = found
        missing = ~null & (rows < 0)
        hint = f"its {n_rows} ids are e.g. {', '.join(repr(i) for i in ids[:3])}"
    if missing.any():
        table.flag(
            "invalid_embedding_row",
            f"column {column!r} references embedding rows that do not exist in {emb_name} ({hint}; got "
            f"{', '.join(repr(k) for k in keys[missing][:MAX_ROWS_SHOWN])})",
            missing,
            "Check that the pair table and the embedding file belong together.",
        )
        rows[missing] = -1
    return rows


def check_embedding_dim(data: PairData | np.ndarray, expected_dim: int, what: str = "the model") -> None:
    """Raise DataFormatError unless the vectors of `data` have `expected_dim` columns.

    The model code calls this when a model trained on ``expected_dim``-dimensional vectors meets new
    vectors. Data without precomputed embeddings (``data.embeddings is None``) passes: an encoder
    will embed its texts.

    Args:
        data: a PairData (its ``embeddings`` are checked) or an embedding matrix.
        expected_dim: the dimension the consumer was built for.
        what: who expects it, for the message, e.g. ``"the model in runs/pal (trained on clip-h)"``.
    """
    if isinstance(data, PairData):
        matrix, source = data.embeddings, data.source
    else:
        matrix, source = np.asarray(data), "<array>"
    if matrix is None:
        return
    dim = int(matrix.shape[-1]) if matrix.ndim >= 1 else 0
    if matrix.ndim != 2 or dim != int(expected_dim):
        raise DataFormatError(
            f"{source}: embeddings have dimension {dim} (shape {tuple(matrix.shape)}), but {what} expects "
            f"{int(expected_dim)}-dimensional vectors. Use embeddings from the same encoder {what} was trained "
            "with, or retrain on these."
        )



def save_embeddings(data: PairData, path: PathLike) -> Path:
    """Write ``data.embeddings`` as Parquet with an ``id`` column (``data.texts``) and an ``embedding`` list column.

    Together with `save_pairs` this round-trips data with precomputed embeddings:
    ``load_pairs(pairs_path, embeddings=emb_path)``. Written atomically like `save_pairs`.

    Raises:
        DataFormatError: `data` has no embeddings, or `path` is not ``.parquet`` / ``.pq``.
    """
    path = Path(path)
    if data.embeddings is None:
        raise DataFormatError(f"{data.source}: has no precomputed embeddings to save (data.embeddings is None).")
    if path.suffix.lower() not in (".parquet", ".pq"):
        raise DataFormatError(f"{path}: save_embeddings writes Parquet; use a .parquet or .pq suffix.")
    matrix = np.asarray(data.embeddings, dtype=np.float32)
    frame = pd.DataFrame({"id": list(data.texts), "embedding": list(matrix)})
    with atomic_file(path) as tmp:
        frame.to_parquet(tmp, engine="pyarrow", index=False)
    logger.info("Wrote %d x %d embeddings to %s", matrix.shape[0], matrix.shape[1], path)
    return path
