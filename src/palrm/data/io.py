"""Reading preference pairs from files into `PairData`, validating them, and writing them back.

File format (TRL's explicit preference format plus a user id), one pair per row:

=========== ======== =====================================================================
column      required meaning
=========== ======== =====================================================================
user_id     yes      who judged the pair (any scalar; stored as str)
prompt      no       the prompt; absent, null or empty -> no prompt (``NO_PROMPT``)
chosen      yes      the preferred response
rejected    yes      the other response
split       no       train / validation / test ("val", "valid", "dev" mean validation)
group       no       integer true group of the user (benchmarks)
=========== ======== =====================================================================

Instead of ``chosen`` / ``rejected`` a table may hold the unordered form ``response_a``,
``response_b``, ``label`` where ``label`` uses one of the conventions {1, -1}, {1, 0} or
{"a", "b"}; 1 (or "a") means ``response_a`` is preferred. Every column name can be remapped with a
`ColumnMap` (the CLI fills it from ``--user-column``, ``--chosen-column``, ...).

With precomputed embeddings (how image data arrives) the prompt / response columns hold integer row
ids into an embedding table (`load_embeddings`) instead of text.

Loading never writes anything. Every problem raises `DataFormatError` naming the file, the first
offending rows (1-based data rows; line numbers for JSONL) and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

import numpy as np
import pandas as pd

from palrm.data.schema import NO_PROMPT, SPLITS, PairData
from palrm.errors import ConfigError, DataFormatError

logger = logging.getLogger(__name__)

__all__ = [
    "FORMATS",
    "ColumnMap",
    "check_embedding_dim",
    "load_embeddings",
    "load_pairs",
    "save_embeddings",
    "save_pairs",
]

PathLike = Union[str, "os.PathLike[str]"]

FORMATS = ("jsonl", "json", "csv", "parquet")
"""File formats `load_pairs` / `save_pairs` understand (the ``fmt`` argument)."""

_SUFFIX_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_EMBEDDING_SUFFIXES = (".npy", ".safetensors", ".parquet", ".pq")

_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "dev": "validation",
    "test": "test",
}
_LABEL_SETS: tuple[frozenset, ...] = (frozenset({1, -1}), frozenset({1, 0}), frozenset({"a", "b"}))
_INT_RE = re.compile(r"^[+-]?\d+(?:\.0*)?$")
_MAX_ROWS_SHOWN = 5


# --------------------------------------------------------------------------------------------
# Column mapping


@dataclass(frozen=True)
class ColumnMap:
    """Names of the source columns that hold each field of a pair.

    Every attribute is the name of a column in the source table. Optional fields (``prompt``,
    ``split``, ``group``) may be absent from the table under their default name; a column that was
    renamed explicitly must exist.

    Example:
        >>> ColumnMap.from_overrides(user_column="worker", chosen="preferred").user_id
        'worker'
    """

    user_id: str = "user_id"
    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"
    response_a: str = "response_a"
    response_b: str = "response_b"
    label: str = "label"
    split: str = "split"
    group: str = "group"

    #: The command-line flag that sets each field (used in error messages and by the CLI).
    CLI_FLAGS: ClassVar[dict[str, str]] = {
        "user_id": "--user-column",
        "prompt": "--prompt-column",
        "chosen": "--chosen-column",
        "rejected": "--rejected-column",
        "response_a": "--response-a-column",
        "response_b": "--response-b-column",
        "label": "--label-column",
        "split": "--split-column",
        "group": "--group-column",
    }

    @classmethod
    def from_overrides(cls, **overrides: str | None) -> "ColumnMap":
        """A ColumnMap with some names replaced; ``None`` values keep the default.

        Keys may be the field name (``user_id``), the field name plus ``_column``
        (``user_id_column``), or the CLI flag's argparse name (``user_column``,
        ``response_a_column``), so ``ColumnMap.from_overrides(**vars(args))``-style calls work
        after filtering to these keys.

        Raises:
            ConfigError: an unknown key, or a name that is not a non-empty string.
        """
        aliases = {f.name: f.name for f in dataclasses.fields(cls)}
        aliases.update({f"{name}_column": name for name in list(aliases)})
        aliases.update({flag[2:].replace("-", "_"): name for name, flag in cls.CLI_FLAGS.items()})
        aliases["user"] = "user_id"
        values: dict[str, str] = {}
        problems: list[str] = []
        for key, value in overrides.items():
            if value is None:
                continue
            if key not in aliases:
                problems.append(f"unknown column option {key!r} (expected one of {', '.join(sorted(aliases))})")
                continue
            if not isinstance(value, str) or not value.strip():
                problems.append(f"column name for {key!r} must be a non-empty string, got {value!r}")
                continue
            values[aliases[key]] = value
        if problems:
            raise ConfigError("Invalid column mapping: " + "; ".join(problems))
        return cls(**values)

    def is_default(self, field_name: str) -> bool:
        """Whether `field_name` still maps to its default column name."""
        return getattr(self, field_name) == getattr(ColumnMap, field_name)

    def hint(self, field_name: str) -> str:
        """How to point `field_name` at another column, e.g. ``use --user-column / ColumnMap(user_id=...)``."""
        return f"use {self.CLI_FLAGS[field_name]} NAME / ColumnMap({field_name}=NAME)"


_FIELD_WHAT = {
    "user_id": "the user id of each pair",
    "prompt": "the prompt",
    "chosen": "the preferred response",
    "rejected": "the other response",
    "response_a": "the first response of the unordered form",
    "response_b": "the second response of the unordered form",
    "label": "which of response_a / response_b is preferred",
    "split": "train / validation / test",
    "group": "the integer group of the user",
}

# Usual names for a field in public preference datasets, used to suggest a mapping.
_KNOWN_ALIASES = {
    "user_id": ("worker", "worker_id", "user", "userid", "annotator", "annotator_id", "rater", "rater_id", "judge"),
    "prompt": ("instruction", "question", "query", "caption", "context"),
    "chosen": ("preferred", "winner", "response_chosen", "better"),
    "rejected": ("dispreferred", "loser", "response_rejected", "worse"),
    "label": ("choice", "preference", "winner", "label_0"),
}


# --------------------------------------------------------------------------------------------
# Reading tables


@dataclass
class _Table:
    """A source table and how to name its rows in messages."""

    frame: pd.DataFrame
    name: str  # the path, or "<DataFrame>"
    unit: Literal["line", "data row", "record", "row"]
    numbers: np.ndarray  # (n,) int64: the 1-based number of every frame row in `unit`s
    note: str = ""  # appended after row lists, e.g. "(1-based, header not counted)"

    def rows(self, mask_or_index: np.ndarray) -> str:
        """'lines 3, 7 and 12' for the frame rows selected by a boolean mask or positions."""
        index = np.asarray(mask_or_index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        numbers = self.numbers[index]
        shown = ", ".join(str(int(n)) for n in numbers[:_MAX_ROWS_SHOWN])
        more = f" and {len(numbers) - _MAX_ROWS_SHOWN} more ({len(numbers)} in all)" if len(numbers) > _MAX_ROWS_SHOWN else ""
        plural = "s" if len(numbers) != 1 else ""
        note = f" {self.note}" if self.note else ""
        return f"{self.unit}{plural} {shown}{more}{note}"

    def error(self, problem: str, mask: np.ndarray | None, fix: str) -> DataFormatError:
        where = f" at {self.rows(mask)}" if mask is not None else ""
        return DataFormatError(f"{self.name}: {problem}{where}. {fix}")


def _resolve_format(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        key = fmt.lower().lstrip(".")
        key = {"ndjson": "jsonl", "pq": "parquet"}.get(key, key)
        if key not in FORMATS:
            raise DataFormatError(f"{path}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}.")
        return key
    suffix = path.suffix.lower()
    if suffix not in _SUFFIX_FORMATS:
        raise DataFormatError(
            f"{path}: cannot tell the file type from the suffix {suffix or '(none)'!r}; expected one of "
            f"{', '.join(_SUFFIX_FORMATS)}. Rename the file or pass the format explicitly "
            f"(fmt='jsonl' / --format jsonl; one of {', '.join(FORMATS)})."
        )
    return _SUFFIX_FORMATS[suffix]


def _check_readable_file(path: Path, what: str) -> None:
    if not path.exists():
        hint = ""
        if path.parent.is_dir():
            close = difflib.get_close_matches(path.name, [p.name for p in path.parent.iterdir()], n=3)
            if close:
                hint = f" Did you mean {', '.join(repr(str(path.parent / c)) for c in close)}?"
        raise DataFormatError(f"{path}: {what} not found (no such file).{hint} Check the path.")
    if path.is_dir():
        raise DataFormatError(f"{path}: is a directory, expected a {what}. Pass the path of the file itself.")
    if not os.access(path, os.R_OK):
        raise DataFormatError(f"{path}: {what} is not readable (permission denied). Fix its permissions.")


def _unreadable(path: Path, fmt: str, exc: BaseException) -> DataFormatError:
    return DataFormatError(
        f"{path}: could not read the file as {fmt} ({type(exc).__name__}: {exc}). Check that it is a valid "
        f"{fmt} file (not truncated, compressed or of another type); pass fmt= / --format if the suffix is misleading."
    )


def _read_jsonl(path: Path, text: str) -> _Table:
    records: list[dict] = []
    numbers: list[int] = []
    bad: list[tuple[int, str]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append((lineno, f"{exc.msg} at column {exc.colno}"))
            continue
        if not isinstance(record, dict):
            bad.append((lineno, f"expected a JSON object, got {type(record).__name__}"))
            continue
        records.append(record)
        numbers.append(lineno)
    if bad:
        shown = ", ".join(str(n) for n, _ in bad[:_MAX_ROWS_SHOWN])
        more = f" and {len(bad) - _MAX_ROWS_SHOWN} more" if len(bad) > _MAX_ROWS_SHOWN else ""
        raise DataFormatError(
            f"{path}: malformed JSON on line{'s' if len(bad) > 1 else ''} {shown}{more} (line {bad[0][0]}: "
            f"{bad[0][1]}). JSONL needs one JSON object per line, e.g. "
            '{"user_id": "u1", "prompt": "...", "chosen": "...", "rejected": "..."}; fix or remove those lines.'
        )
    frame = pd.DataFrame(records, dtype=object) if records else pd.DataFrame()
    return _Table(frame.astype(object), str(path), "line", np.asarray(numbers, dtype=np.int64))


def _read_json(path: Path, text: str) -> _Table:
    if not text.lstrip().startswith("["):
        return _read_jsonl(path, text)  # a .json file holding JSON lines
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(
            f"{path}: malformed JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}). Fix the file; a .json "
            "file must be a JSON array of objects or JSON lines (one object per line)."
        ) from exc
    bad = [i + 1 for i, r in enumerate(records) if not isinstance(r, dict)]
    if bad:
        raise DataFormatError(
            f"{path}: records {', '.join(map(str, bad[:_MAX_ROWS_SHOWN]))} (1-based) of the JSON array are not "
            "objects. Every record must be an object with user_id, prompt, chosen and rejected."
        )
    frame = pd.DataFrame(records, dtype=object) if records else pd.DataFrame()
    return _Table(frame.astype(object), str(path), "record", np.arange(1, len(frame) + 1), "(1-based)")


def _read_table(source: PathLike | pd.DataFrame, fmt: str | None) -> _Table:
    """Read `source` into a `_Table` of object columns, raising DataFormatError on any failure."""
    if isinstance(source, pd.DataFrame):
        return _Table(source.astype(object), "<DataFrame>", "row", np.arange(1, len(source) + 1), "(1-based positions)")
    if not isinstance(source, (str, os.PathLike)):
        raise DataFormatError(
            f"load_pairs got a {type(source).__name__}; expected a path (str or Path) to a JSONL / CSV / "
            "Parquet file or a pandas DataFrame."
        )
    path = Path(source)
    kind = _resolve_format(path, fmt)
    _check_readable_file(path, "pair file")
    try:
        if kind in ("jsonl", "json"):
            text = path.read_text(encoding="utf-8-sig")
            return _read_jsonl(path, text) if kind == "jsonl" else _read_json(path, text)
        if kind == "csv":
            try:
                frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
            except pd.errors.EmptyDataError:
                frame = pd.DataFrame()
            return _Table(frame.astype(object), str(path), "data row", np.arange(1, len(frame) + 1), "(1-based, header not counted)")
        frame = pd.read_parquet(path, engine="pyarrow")
        return _Table(frame.astype(object), str(path), "row", np.arange(1, len(frame) + 1), "(1-based)")
    except DataFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoding, parser, OS and pyarrow errors all mean "unreadable"
        raise _unreadable(path, kind, exc) from exc


# --------------------------------------------------------------------------------------------
# Value helpers


def _is_null(value: Any) -> bool:
    """None, NaN, pd.NA or NaT (the ways a missing cell arrives from JSON, CSV, Parquet or pandas)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    return False


def _is_nonscalar(value: Any) -> bool:
    return isinstance(value, (list, tuple, dict, set, np.ndarray))


def _scalar_str(value: Any) -> str:
    """str() of a scalar, with integral floats written as integers (3.0 -> '3')."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _as_int(value: Any) -> int | None:
    """An integer from an int, an integral float or an integer string; None otherwise."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if math.isfinite(value) and float(value).is_integer() else None
    if isinstance(value, str) and _INT_RE.match(value.strip()):
        return int(float(value.strip())) if "." in value else int(value.strip())
    return None


def _column(table: _Table, name: str) -> np.ndarray:
    return table.frame[name].to_numpy(dtype=object)


def _null_mask(values: np.ndarray) -> np.ndarray:
    return np.fromiter((_is_null(v) for v in values), dtype=bool, count=len(values))


def _blank_mask(texts: np.ndarray) -> np.ndarray:
    """(n,) bool: empty or whitespace-only strings (texts must all be str)."""
    return (pd.Series(texts, dtype=object).str.strip() == "").to_numpy(dtype=bool)


def _text_column(table: _Table, column: str, *, required: bool) -> np.ndarray:
    """Validated texts of `column` as an object array; "" marks a missing optional value."""
    values = _column(table, column)
    if pd.api.types.infer_dtype(values, skipna=False) == "string":  # fast path: all str, no nulls
        null = np.zeros(len(values), dtype=bool)
        texts = values
    else:
        nonscalar = np.fromiter((_is_nonscalar(v) for v in values), dtype=bool, count=len(values))
        if nonscalar.any():
            example = values[np.flatnonzero(nonscalar)[0]]
            raise table.error(
                f"column {column!r} holds {type(example).__name__} values instead of text",
                nonscalar,
                "palrm expects plain strings. For TRL's conversational format (lists of messages) apply your chat "
                "template first, e.g. tokenizer.apply_chat_template(messages, tokenize=False).",
            )
        null = _null_mask(values)
        not_text = np.fromiter((not (n or isinstance(v, str)) for v, n in zip(values, null)), dtype=bool, count=len(values))
        if not_text.any():
            example = values[np.flatnonzero(not_text)[0]]
            raise table.error(
                f"column {column!r} holds {type(example).__name__} values (e.g. {example!r}) instead of text",
                not_text,
                "If these are row ids into precomputed embeddings, pass embeddings=PATH (--embeddings PATH); "
                "otherwise store the texts as strings.",
            )
        texts = np.where(null, "", values).astype(object)
    blank = _blank_mask(texts)
    if required:
        if blank.any():
            kinds = "null (missing)" if null[blank].all() else "empty, whitespace-only or null"
            raise table.error(
                f"column {column!r} is {kinds}",
                blank,
                "Every pair needs two non-empty responses; fill in or remove these rows.",
            )
        return texts
    return np.where(blank, "", texts).astype(object)


def _missing_column_error(table: _Table, columns: ColumnMap, field_name: str, extra: str = "") -> DataFormatError:
    wanted = getattr(columns, field_name)
    found = [str(c) for c in table.frame.columns]
    candidates = difflib.get_close_matches(wanted, found, n=2, cutoff=0.6)
    lowered = {c.lower(): c for c in found}
    candidates += [lowered[a] for a in _KNOWN_ALIASES.get(field_name, ()) if a in lowered and lowered[a] not in candidates]
    suggestion = f" Perhaps {', '.join(repr(c) for c in candidates)}?" if candidates else ""
    found_text = ", ".join(repr(c) for c in found) if found else "none"
    return DataFormatError(
        f"{table.name}: no column {wanted!r} ({_FIELD_WHAT[field_name]}){extra}; the columns found are: {found_text}.{suggestion} "
        f"To read {field_name} from another column, {columns.hint(field_name)}."
    )


# --------------------------------------------------------------------------------------------
# Labels, splits, groups


def _label_token(value: Any) -> int | str | None:
    if isinstance(value, (bool, np.bool_)):
        return int(bool(value))
    if isinstance(value, str) and value.strip().lower() in ("a", "b"):
        return value.strip().lower()
    number = None if _is_null(value) or _is_nonscalar(value) else _as_int(value)
    return number if number in (1, -1, 0) else None


def _prefers_a(table: _Table, columns: ColumnMap) -> np.ndarray:
    """(n,) bool: True where response_a is the preferred response."""
    values = _column(table, columns.label)
    tokens = [_label_token(v) for v in values]
    bad = np.array([t is None for t in tokens], dtype=bool)
    accepted = "{1, -1}, {1, 0} or {'a', 'b'} (1 / 'a' = response_a preferred)"
    if bad.any():
        seen = sorted({repr(v) for v in values[bad]})[:_MAX_ROWS_SHOWN]
        raise table.error(
            f"label column {columns.label!r} has values outside the accepted sets (got {', '.join(seen)})",
            bad,
            f"Use one convention for the whole file: {accepted}.",
        )
    present = set(tokens)
    if not any(present <= allowed for allowed in _LABEL_SETS):
        counts = [sum(t in allowed for t in tokens) for allowed in _LABEL_SETS]
        best = _LABEL_SETS[int(np.argmax(counts))]
        off = np.array([t not in best for t in tokens], dtype=bool)
        raise table.error(
            f"label column {columns.label!r} mixes conventions (values {sorted(map(str, present))}); the rows that "
            f"do not fit the most common convention {sorted(map(str, best))} are",
            off,
            f"Use exactly one of {accepted}.",
        )
    return np.array([t in (1, "a") for t in tokens], dtype=bool)


def _optional_mask(table: _Table, column: str, what: str) -> tuple[np.ndarray, bool]:
    """Null mask of an optional column and whether the column is entirely empty (then ignored)."""
    values = _column(table, column)
    empty = np.array([_is_null(v) or (isinstance(v, str) and not v.strip()) for v in values], dtype=bool)
    if empty.all():
        logger.info("%s: column %r is empty in every row; ignoring it (no %s)", table.name, column, what)
        return empty, True
    if empty.any():
        raise table.error(
            f"column {column!r} ({what}) is empty in some rows but not others",
            empty,
            f"Fill in {what} for every row or drop the column.",
        )
    return empty, False


def _read_split(table: _Table, columns: ColumnMap) -> np.ndarray | None:
    _, all_empty = _optional_mask(table, columns.split, "split")
    if all_empty:
        return None
    values = _column(table, columns.split)
    names = [_SPLIT_ALIASES.get(str(v).strip().lower()) if isinstance(v, str) else None for v in values]
    bad = np.array([n is None for n in names], dtype=bool)
    if bad.any():
        seen = sorted({repr(v) for v in values[bad]})[:_MAX_ROWS_SHOWN]
        raise table.error(
            f"split column {columns.split!r} has unknown values ({', '.join(seen)})",
            bad,
            f"Use {', '.join(SPLITS)} (also accepted, case-insensitive: val, valid, dev for validation).",
        )
    return np.array(names, dtype=object)


def _read_group(table: _Table, columns: ColumnMap) -> np.ndarray | None:
    _, all_empty = _optional_mask(table, columns.group, "group")
    if all_empty:
        return None
    values = _column(table, columns.group)
    ints = [_as_int(v) for v in values]
    bad = np.array([i is None for i in ints], dtype=bool)
    if bad.any():
        raise table.error(
            f"group column {columns.group!r} holds non-integer values", bad, "Groups must be integers (e.g. 0, 1, 2)."
        )
    return np.asarray(ints, dtype=np.int64)


def _read_users(table: _Table, columns: ColumnMap) -> np.ndarray:
    values = _column(table, columns.user_id)
    kind = pd.api.types.infer_dtype(values, skipna=False)
    if kind == "string":  # fast path: all str, no nulls
        users = values
        bad = _blank_mask(users)
    elif kind == "integer":
        users = np.array([str(int(v)) for v in values], dtype=object)
        bad = np.zeros(len(values), dtype=bool)
    else:
        bad = np.array([_is_null(v) or _is_nonscalar(v) or not _scalar_str(v).strip() for v in values], dtype=bool)
        users = np.array(["" if b else _scalar_str(v) for v, b in zip(values, bad)], dtype=object)
    if bad.any():
        raise table.error(
            f"user id column {columns.user_id!r} is null or empty",
            bad,
            "Every pair needs the id of the user who judged it; fill in or remove these rows (for data without "
            "user ids, add a constant user_id column).",
        )
    return users


# --------------------------------------------------------------------------------------------
# Embeddings


def _check_matrix(matrix: Any, name: str, ids: list[str] | None = None) -> np.ndarray:
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
        labels = [ids[i] for i in bad[:_MAX_ROWS_SHOWN]] if ids is not None else [str(i) for i in bad[:_MAX_ROWS_SHOWN]]
        more = f" and {len(bad) - _MAX_ROWS_SHOWN} more ({len(bad)} in all)" if len(bad) > _MAX_ROWS_SHOWN else ""
        what = "ids" if ids is not None else "row ids (0-based)"
        raise DataFormatError(
            f"{name}: embeddings contain NaN or inf (or values too large for float32) at {what} "
            f"{', '.join(labels)}{more}. Recompute those vectors or drop the pairs that use them."
        )
    return out


def _check_ids(ids: list[str], n_rows: int, name: str) -> list[str]:
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
            f"{name}: duplicate embedding ids {', '.join(repr(d) for d in duplicates[:_MAX_ROWS_SHOWN])}. "
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
    _check_readable_file(path, "embedding file")
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
                if any(_is_null(v) for v in raw_ids):
                    raise DataFormatError(f"{path}: the 'id' column has null values. Give every row an id.")
                ids = [_scalar_str(v) for v in raw_ids]
                frame = frame.drop(columns=["id"])
            matrix = _parquet_matrix(frame, path)
    except DataFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure means an unreadable file
        raise _unreadable(path, suffix.lstrip("."), exc) from exc
    matrix = _check_matrix(matrix, str(path), ids)
    if ids is not None:
        _check_ids(ids, len(matrix), str(path))
    logger.debug("Loaded %d x %d embeddings from %s", matrix.shape[0], matrix.shape[1], path)
    return ids, matrix


def _parquet_matrix(frame: pd.DataFrame, path: Path) -> np.ndarray:
    if frame.shape[1] == 1 and frame.dtypes.iloc[0] == object:
        cells = frame.iloc[:, 0].to_numpy(dtype=object)
        lengths = {len(c) if _is_nonscalar(c) else -1 for c in cells}
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


def _resolve_embeddings(embeddings: Any) -> tuple[list[str] | None, np.ndarray, str]:
    if isinstance(embeddings, (str, os.PathLike)):
        ids, matrix = load_embeddings(embeddings)
        return ids, matrix, str(embeddings)
    if isinstance(embeddings, tuple) and len(embeddings) == 2:
        raw_ids, matrix = embeddings
        ids = None if raw_ids is None else [_scalar_str(i) for i in raw_ids]
        matrix = _check_matrix(matrix, "<array>", ids)
        if ids is not None:
            _check_ids(ids, len(matrix), "<array>")
        return ids, matrix, "<array>"
    return None, _check_matrix(embeddings, "<array>"), "<array>"


def _embedding_rows(
    table: _Table, column: str, keys: np.ndarray, ids: list[str] | None, n_rows: int, emb_name: str, *, required: bool
) -> np.ndarray:
    """Row positions in the embedding table for one id column; -1 where an optional value is missing."""
    null = np.array([_is_null(v) or (isinstance(v, str) and not v.strip()) for v in keys], dtype=bool)
    if required and null.any():
        raise table.error(
            f"column {column!r} is empty or null", null, f"Every pair needs two embedding row ids from {emb_name}."
        )
    rows = np.full(len(keys), -1, dtype=np.int64)
    if ids is None:
        parsed = [None if n else _as_int(v) for v, n in zip(keys, null)]
        not_int = np.array([p is None and not n for p, n in zip(parsed, null)], dtype=bool)
        if not_int.any():
            raise table.error(
                f"column {column!r} must hold integer embedding row ids when embeddings are given, found "
                f"{keys[not_int][0]!r}",
                not_int,
                f"Put 0-based row numbers of {emb_name} in the pair table (or give the embedding table an 'id' column).",
            )
        rows[~null] = [p for p in parsed if p is not None]
        missing = ~null & ((rows < 0) | (rows >= n_rows))
        hint = f"it has rows 0..{n_rows - 1}"
    else:
        lookup = {key: i for i, key in enumerate(ids)}
        found = [lookup.get(_scalar_str(v).strip(), -1) if not n else -1 for v, n in zip(keys, null)]
        rows[:] = found
        missing = ~null & (rows < 0)
        hint = f"its {n_rows} ids are e.g. {', '.join(repr(i) for i in ids[:3])}"
    if missing.any():
        raise table.error(
            f"column {column!r} references embedding rows that do not exist in {emb_name} ({hint}; got "
            f"{', '.join(repr(k) for k in keys[missing][:_MAX_ROWS_SHOWN])})",
            missing,
            "Check that the pair table and the embedding file belong together.",
        )
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


# --------------------------------------------------------------------------------------------
# load_pairs


def load_pairs(
    source: PathLike | pd.DataFrame,
    *,
    columns: ColumnMap | None = None,
    embeddings: PathLike | np.ndarray | tuple | None = None,
    fmt: str | None = None,
) -> PairData:
    """Load and validate a preference pair table.

    Args:
        source: a ``.jsonl`` / ``.json`` / ``.csv`` / ``.parquet`` / ``.pq`` file, or a pandas
            DataFrame. See the module docstring for the columns.
        columns: which source columns hold which field (default: the standard names).
        embeddings: precomputed vectors: a path accepted by `load_embeddings`, a (rows, dim) array,
            or an ``(ids, array)`` tuple. Then the prompt / response columns hold row ids into this
            table, and the returned ``PairData.embeddings`` holds only the rows referenced (float32),
            in the order of ``texts`` (the row ids as strings).
        fmt: file format overriding the suffix: one of ``FORMATS``.

    Returns:
        A PairData: one entry per row, every distinct text (or embedding row) stored once; user ids
        as strings in order of first appearance.

    Raises:
        DataFormatError: any problem with the file or its contents (the message names the file, the
            first offending rows and the fix).
    """
    columns = columns or ColumnMap()
    table = _read_table(source, fmt)
    frame = table.frame
    if len(frame) == 0:
        header = f" (columns: {', '.join(map(str, frame.columns))})" if len(frame.columns) else ""
        raise DataFormatError(
            f"{table.name}: no pairs; the file has no data rows{header}. Write at least one pair "
            "(user_id, prompt, chosen, rejected) per row."
        )
    present = set(map(str, frame.columns))

    if columns.user_id not in present:
        raise _missing_column_error(table, columns, "user_id")
    for name in ("prompt", "split", "group"):
        if not columns.is_default(name) and getattr(columns, name) not in present:
            raise _missing_column_error(table, columns, name, " (named explicitly in the column mapping)")

    explicit = columns.chosen in present or columns.rejected in present
    unordered = {columns.response_a, columns.response_b, columns.label} <= present
    if explicit and unordered:
        logger.warning(
            "%s: both %r/%r and %r/%r/%r are present; using %r/%r",
            table.name, columns.chosen, columns.rejected, columns.response_a, columns.response_b, columns.label,
            columns.chosen, columns.rejected,
        )
    if not explicit and not unordered:
        partial = [c for c in (columns.response_a, columns.response_b, columns.label) if c in present]
        if partial:
            missing = [f for f in ("response_a", "response_b", "label") if getattr(columns, f) not in present]
            raise _missing_column_error(table, columns, missing[0], " (needed with response_a/response_b/label)")
        raise _missing_column_error(table, columns, "chosen", f" (nor {columns.response_a!r}/{columns.response_b!r}/{columns.label!r})")
    if explicit:
        for name in ("chosen", "rejected"):
            if getattr(columns, name) not in present:
                raise _missing_column_error(table, columns, name)
        first_col, second_col = columns.chosen, columns.rejected
    else:
        first_col, second_col = columns.response_a, columns.response_b

    users = _read_users(table, columns)
    has_prompt = columns.prompt in present
    split = _read_split(table, columns) if columns.split in present else None
    group = _read_group(table, columns) if columns.group in present else None
    prefer_first = np.ones(len(frame), dtype=bool) if explicit else _prefers_a(table, columns)

    meta: dict[str, Any] = {"columns": dataclasses.asdict(columns), "form": "chosen/rejected" if explicit else "response_a/response_b/label"}
    n = len(frame)
    if embeddings is None:
        first = _text_column(table, first_col, required=True)
        second = _text_column(table, second_col, required=True)
        prompts = _text_column(table, columns.prompt, required=False) if has_prompt else np.full(n, "", dtype=object)
        if all(_INT_RE.match(t.strip()) for t in np.concatenate([first, second])):
            logger.warning(
                "%s: every %r / %r value is an integer; if these are embedding row ids, pass embeddings= "
                "(--embeddings); they are being read as texts",
                table.name, first_col, second_col,
            )
        same = np.fromiter((a.strip() == b.strip() for a, b in zip(first, second)), dtype=bool, count=n)
        if same.any():
            raise table.error(
                f"{first_col!r} and {second_col!r} are identical (ignoring surrounding whitespace)",
                same,
                "A pair must compare two different responses; remove these rows.",
            )
        # One table of unique texts, in order of first appearance (prompt, first, second per row).
        stacked = np.stack([prompts, first, second], axis=1).ravel()
        keep = stacked != ""
        codes = np.full(len(stacked), NO_PROMPT, dtype=np.int64)
        kept_codes, uniques = pd.factorize(pd.Series(stacked[keep], dtype=object))
        codes[keep] = kept_codes
        codes = codes.reshape(n, 3)
        texts = [str(t) for t in uniques]
        matrix = None
    else:
        ids, full_matrix, emb_name = _resolve_embeddings(embeddings)
        rows_first = _embedding_rows(table, first_col, _column(table, first_col), ids, len(full_matrix), emb_name, required=True)
        rows_second = _embedding_rows(table, second_col, _column(table, second_col), ids, len(full_matrix), emb_name, required=True)
        rows_prompt = (
            _embedding_rows(table, columns.prompt, _column(table, columns.prompt), ids, len(full_matrix), emb_name, required=False)
            if has_prompt
            else np.full(n, -1, dtype=np.int64)
        )
        same = rows_first == rows_second
        if same.any():
            raise table.error(
                f"{first_col!r} and {second_col!r} reference the same embedding row",
                same,
                "A pair must compare two different responses; remove these rows.",
            )
        stacked = np.stack([rows_prompt, rows_first, rows_second], axis=1).ravel()
        keep = stacked >= 0
        codes = np.full(len(stacked), NO_PROMPT, dtype=np.int64)
        kept_codes, used_rows = pd.factorize(stacked[keep])
        codes[keep] = kept_codes
        codes = codes.reshape(n, 3)
        used_rows = np.asarray(used_rows, dtype=np.int64)
        matrix = full_matrix[used_rows]
        texts = [ids[r] for r in used_rows] if ids is not None else [str(int(r)) for r in used_rows]
        meta["embeddings_source"] = emb_name
        meta["embedding_rows_total"] = int(len(full_matrix))

    user_codes, user_ids = pd.factorize(pd.Series(users, dtype=object))
    chosen = np.where(prefer_first, codes[:, 1], codes[:, 2])
    rejected = np.where(prefer_first, codes[:, 2], codes[:, 1])
    data = PairData(
        texts=texts,
        user_ids=[str(u) for u in user_ids],
        user=user_codes.astype(np.int64),
        prompt=codes[:, 0],
        chosen=chosen,
        rejected=rejected,
        split=split,
        group=group,
        embeddings=matrix,
        source=table.name,
        meta=meta,
    )
    logger.info(
        "Loaded %d pairs from %s: %d users, %d unique %s%s",
        len(data), table.name, len(data.user_ids), len(texts),
        "texts" if matrix is None else f"embedding rows (dim {matrix.shape[1]})",
        "" if data.has_prompts else ", no prompts",
    )
    return data


# --------------------------------------------------------------------------------------------
# Writing


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then move the temp file onto `path` (same directory, os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _json_value(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def save_pairs(data: PairData, path: PathLike, *, fmt: str | None = None) -> Path:
    """Write `data` as a pair table (user_id, prompt, chosen, rejected[, split, group]).

    The format follows the suffix (``.jsonl``, ``.json`` (written as JSON lines), ``.csv``,
    ``.parquet`` / ``.pq``) or `fmt`. The file is written to a temporary file in the same directory
    and moved into place with ``os.replace``, so an interrupted write never leaves a half-written
    file. Pairs without a prompt get an empty prompt. For data with precomputed embeddings the
    text columns hold the embedding row ids (``data.texts``); write the vectors with
    `save_embeddings` to load both back.

    Returns:
        The path written.
    """
    path = Path(path)
    kind = _resolve_format(path, fmt)
    frame = data.to_frame()

    def write(tmp: Path) -> None:
        if kind in ("jsonl", "json"):
            with open(tmp, "w", encoding="utf-8") as handle:
                for record in frame.to_dict(orient="records"):
                    handle.write(json.dumps({k: _json_value(v) for k, v in record.items()}, ensure_ascii=False))
                    handle.write("\n")
        elif kind == "csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, engine="pyarrow", index=False)

    _atomic_write(path, write)
    logger.info("Wrote %d pairs to %s", len(data), path)
    return path


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
    _atomic_write(path, lambda tmp: frame.to_parquet(tmp, engine="pyarrow", index=False))
    logger.info("Wrote %d x %d embeddings to %s", matrix.shape[0], matrix.shape[1], path)
    return path
