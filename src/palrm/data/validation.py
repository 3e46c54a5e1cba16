"""Validation of pair tables: column names (`ColumnMap`), cell values, users, labels, splits, groups.

The readers (`palrm.data.tables`, `palrm.data.embeddings`) hand every table to these checks. A
problem with the table as a whole (a missing column, an unreadable file) raises `DataFormatError` at
once. A problem with some rows (an empty or identical response, a missing user id, an unknown split)
is recorded on the table (`Table.flag`, one `RowProblem` per kind) and the check goes on, so that
`load_pairs` can report every kind of problem at once (`invalid_rows_error`: counts and the first
rows of each, 1-based data rows or JSONL line numbers) or drop those rows (``on_invalid="skip"``).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from palrm.data.schema import SPLITS
from palrm.errors import ConfigError, DataFormatError

logger = logging.getLogger(__name__)

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
INT_RE = re.compile(r"^[+-]?\d+(?:\.0*)?$")
MAX_ROWS_SHOWN = 5

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

        Keys may be the field name (``user_id``), the field name plus ``column_values``
        (``user_id_column``), or the CLI flag's argparse name (``user_column``,
        ``response_a_column``), so ``ColumnMap.from_overrides(**vars(args))``-style calls work
        after filtering to these keys.

        Raises:
            ConfigError: an unknown key, or a name that is not a non-empty string.
        """
        aliases = {f.name: f.name for f in dataclasses.fields(cls)}
        aliases.update({f"{name}column_values": name for name in list(aliases)})
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
# Tables and files


@dataclass
class RowProblem:
    """One kind of invalid row found in a table."""

    reason: str  # a short code, the key of per-reason counts: empty_response, identical_responses, ...
    problem: str  # what is wrong, e.g. "column 'chosen' is empty, whitespace-only or null"
    mask: np.ndarray  # (n,) bool: the rows that have it
    fix: str  # how to fix it


@dataclass
class Table:
    """A source table, how to name its rows in messages, and the invalid rows found so far."""

    frame: pd.DataFrame
    name: str  # the path, or "<DataFrame>"
    unit: Literal["line", "data row", "record", "row"]
    numbers: np.ndarray  # (n,) int64: the 1-based number of every frame row in `unit`s
    note: str = ""  # appended after row lists, e.g. "(1-based, header not counted)"
    problems: list[RowProblem] = dataclasses.field(default_factory=list)
    malformed: list[tuple[int, str, str]] = dataclasses.field(default_factory=list)  # JSONL lines that are not objects: (line, why, text)

    def flag(self, reason: str, problem: str, mask: np.ndarray, fix: str) -> None:
        """Record invalid rows (`mask`); the checks go on, `load_pairs` decides what to do with them."""
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            self.problems.append(RowProblem(reason, problem, mask, fix))

    def invalid(self) -> np.ndarray:
        """(n,) bool: rows with at least one recorded problem."""
        out = np.zeros(len(self.frame), dtype=bool)
        for p in self.problems:
            out |= p.mask
        return out

    def rows(self, mask_or_index: np.ndarray) -> str:
        """'lines 3, 7 and 12' for the frame rows selected by a boolean mask or positions."""
        index = np.asarray(mask_or_index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        numbers = self.numbers[index]
        shown = ", ".join(str(int(n)) for n in numbers[:MAX_ROWS_SHOWN])
        more = f" and {len(numbers) - MAX_ROWS_SHOWN} more ({len(numbers)} in all)" if len(numbers) > MAX_ROWS_SHOWN else ""
        plural = "s" if len(numbers) != 1 else ""
        note = f" {self.note}" if self.note else ""
        return f"{self.unit}{plural} {shown}{more}{note}"


def invalid_rows_error(table: Table) -> DataFormatError:
    """One error listing every kind of invalid row of `table`, with its count and first rows."""
    bad = table.invalid()
    kinds = len(table.problems) + bool(table.malformed)
    lines = [f"{table.name}: {int(bad.sum()) + len(table.malformed)} of {len(bad) + len(table.malformed)} rows are invalid "
             f"({kinds} kind{'s' if kinds != 1 else ''} of problem); nothing was loaded:"]
    if table.malformed:
        numbers = [n for n, _, _ in table.malformed]
        shown = ", ".join(map(str, numbers[:MAX_ROWS_SHOWN]))
        more = f" and {len(numbers) - MAX_ROWS_SHOWN} more" if len(numbers) > MAX_ROWS_SHOWN else ""
        lines.append(f"  - malformed_json ({len(numbers)} line{'s' if len(numbers) != 1 else ''}): malformed JSON on "
                     f"line{'s' if len(numbers) != 1 else ''} {shown}{more} (line {numbers[0]}: {table.malformed[0][1]}). JSONL "
                     'needs one JSON object per line, e.g. {"user_id": "u1", "prompt": "...", "chosen": "...", "rejected": "..."}.')
    for p in table.problems:
        lines.append(f"  - {p.reason} ({int(p.mask.sum())} row{'s' if p.mask.sum() != 1 else ''}): {p.problem} at "
                     f"{table.rows(p.mask)}. {p.fix}")
    lines.append("Fix these rows, or drop them: --on-invalid skip (Python: load_pairs(..., on_invalid=\"skip\")) loads "
                 "the rest and lists the dropped rows (palrm writes them to rejected.jsonl in the run directory).")
    return DataFormatError("\n".join(lines))

def check_readable_file(path: Path, what: str) -> None:
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


def unreadable_error(path: Path, fmt: str, exc: BaseException) -> DataFormatError:
    return DataFormatError(
        f"{path}: could not read the file as {fmt} ({type(exc).__name__}: {exc}). Check that it is a valid "
        f"{fmt} file (not truncated, compressed or of another type); pass fmt= / --format if the suffix is misleading."
    )

# --------------------------------------------------------------------------------------------
# Value helpers


def is_null(value: Any) -> bool:
    """None, NaN, pd.NA or NaT (the ways a missing cell arrives from JSON, CSV, Parquet or pandas)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    return False


def is_nonscalar(value: Any) -> bool:
    return isinstance(value, (list, tuple, dict, set, np.ndarray))


def scalar_str(value: Any) -> str:
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


def as_int(value: Any) -> int | None:
    """An integer from an int, an integral float or an integer string; None otherwise."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if math.isfinite(value) and float(value).is_integer() else None
    if isinstance(value, str) and INT_RE.match(value.strip()):
        return int(float(value.strip())) if "." in value else int(value.strip())
    return None


def column_values(table: Table, name: str) -> np.ndarray:
    return table.frame[name].to_numpy(dtype=object)


def _null_mask(values: np.ndarray) -> np.ndarray:
    return np.fromiter((is_null(v) for v in values), dtype=bool, count=len(values))


def _blank_mask(texts: np.ndarray) -> np.ndarray:
    """(n,) bool: empty or whitespace-only strings (texts must all be str)."""
    return (pd.Series(texts, dtype=object).str.strip() == "").to_numpy(dtype=bool)


def _flag_non_text(table: Table, column: str, values: np.ndarray, mask: np.ndarray, fix: str, *,
                   show_value: bool = False) -> None:
    """Flag the rows `mask` of `column` as non_text, naming the type (and with `show_value` the value) of the first."""
    if not mask.any():
        return
    example = values[np.flatnonzero(mask)[0]]
    shown = f" (e.g. {example!r})" if show_value else ""
    table.flag("non_text", f"column {column!r} holds {type(example).__name__} values{shown} instead of text", mask, fix)


def text_column(table: Table, column: str, *, required: bool) -> np.ndarray:
    """Validated texts of `column` as an object array; "" marks a missing optional value."""
    values = column_values(table, column)
    if pd.api.types.infer_dtype(values, skipna=False) == "string":  # fast path: all str, no nulls
        null = np.zeros(len(values), dtype=bool)
        flagged = null
        texts = values
    else:
        nonscalar = np.fromiter((is_nonscalar(v) for v in values), dtype=bool, count=len(values))
        _flag_non_text(
            table, column, values, nonscalar,
            "palrm expects plain strings. For TRL's conversational format (lists of messages) apply your chat "
            "template first, e.g. tokenizer.apply_chat_template(messages, tokenize=False).",
        )
        null = _null_mask(values)
        not_text = np.fromiter((not (n or s or isinstance(v, str)) for v, n, s in zip(values, null, nonscalar)), dtype=bool,
                               count=len(values))
        _flag_non_text(
            table, column, values, not_text,
            "If these are row ids into precomputed embeddings, pass embeddings=PATH (--embeddings PATH); "
            "otherwise store the texts as strings.",
            show_value=True,
        )
        flagged = nonscalar | not_text
        null |= flagged  # flagged above; read as missing from here on
        texts = np.where(null, "", values).astype(object)
    blank = _blank_mask(texts)
    if required:
        empty = blank & ~flagged
        if empty.any():
            kinds = "null (missing)" if null[empty].all() else "empty, whitespace-only or null"
            table.flag(
                "empty_response",
                f"column {column!r} is {kinds}",
                empty,
                "Every pair needs two non-empty responses; fill in or remove these rows.",
            )
        return texts
    return np.where(blank, "", texts).astype(object)


def missing_column_error(table: Table, columns: ColumnMap, field_name: str, extra: str = "") -> DataFormatError:
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
    number = None if is_null(value) or is_nonscalar(value) else as_int(value)
    return number if number in (1, -1, 0) else None


def _flag_values(table: Table, kind: str, values: np.ndarray, bad: np.ndarray, problem, fix: str) -> None:
    """Flag the rows `bad` as `kind`; `problem(seen)` words it from the first distinct bad values (their reprs)."""
    if bad.any():
        seen = sorted({repr(v) for v in values[bad]})[:MAX_ROWS_SHOWN]
        table.flag(kind, problem(", ".join(seen)), bad, fix)


def prefers_a(table: Table, columns: ColumnMap) -> np.ndarray:
    """(n,) bool: True where response_a is the preferred response."""
    values = column_values(table, columns.label)
    tokens = [_label_token(v) for v in values]
    bad = np.array([t is None for t in tokens], dtype=bool)
    accepted = "{1, -1}, {1, 0} or {'a', 'b'} (1 / 'a' = response_a preferred)"
    _flag_values(table, "invalid_label", values, bad,
                 lambda seen: f"label column {columns.label!r} has values outside the accepted sets (got {seen})",
                 f"Use one convention for the whole file: {accepted}.")
    present = {t for t in tokens if t is not None}
    if present and not any(present <= allowed for allowed in _LABEL_SETS):
        counts = [sum(t in allowed for t in tokens) for allowed in _LABEL_SETS]
        best = _LABEL_SETS[int(np.argmax(counts))]
        off = np.array([t is not None and t not in best for t in tokens], dtype=bool)
        table.flag(
            "invalid_label",
            f"label column {columns.label!r} mixes conventions (values {sorted(map(str, present))}); the rows that "
            f"do not fit the most common convention {sorted(map(str, best))} are",
            off,
            f"Use exactly one of {accepted}.",
        )
    return np.array([t in (1, "a") for t in tokens], dtype=bool)


def _optional_mask(table: Table, column: str, what: str) -> tuple[np.ndarray, bool]:
    """Null mask of an optional column and whether the column is entirely empty (then ignored)."""
    values = column_values(table, column)
    empty = np.array([is_null(v) or (isinstance(v, str) and not v.strip()) for v in values], dtype=bool)
    if empty.all():
        logger.info("%s: column %r is empty in every row; ignoring it (no %s)", table.name, column, what)
        return empty, True
    table.flag(
        f"missing_{what}",
        f"column {column!r} ({what}) is empty in some rows but not others",
        empty,
        f"Fill in {what} for every row or drop the column.",
    )
    return empty, False


def read_split(table: Table, columns: ColumnMap) -> np.ndarray | None:
    empty, all_empty = _optional_mask(table, columns.split, "split")
    if all_empty:
        return None
    values = column_values(table, columns.split)
    names = [_SPLIT_ALIASES.get(str(v).strip().lower()) if isinstance(v, str) else None for v in values]
    bad = np.array([n is None for n in names], dtype=bool) & ~empty
    _flag_values(table, "invalid_split", values, bad,
                 lambda seen: f"split column {columns.split!r} has unknown values ({seen})",
                 f"Use {', '.join(SPLITS)} (also accepted, case-insensitive: val, valid, dev for validation).")
    return np.array(names, dtype=object)


def read_group(table: Table, columns: ColumnMap) -> tuple[np.ndarray | None, dict[str, int] | None]:
    """(integer group per row or None, the label -> integer mapping when the column holds labels).

    Integer groups are kept as they are. Any other labels (e.g. "liberal") are mapped to 0, 1, ...
    in sorted order of the labels (as strings), and that mapping is returned (kept in
    ``PairData.meta["group_labels"]``).
    """
    empty, all_empty = _optional_mask(table, columns.group, "group")
    if all_empty:
        return None, None
    values = column_values(table, columns.group)
    bad = np.array([is_nonscalar(v) for v in values], dtype=bool) & ~empty
    table.flag("invalid_group", f"group column {columns.group!r} holds lists or mappings", bad,
               "A group is one integer or one label per row, e.g. 0 or \"liberal\".")
    ints = [None if e or b else as_int(v) for v, e, b in zip(values, empty, bad)]
    usable = ~(empty | bad)
    if all(i is not None for i, u in zip(ints, usable) if u):
        return np.asarray([0 if i is None else i for i in ints], dtype=np.int64), None
    labels = np.array(["" if not u else scalar_str(v).strip() for v, u in zip(values, usable)], dtype=object)
    mapping = {label: i for i, label in enumerate(sorted(set(labels[usable])))}
    logger.info("%s: group column %r holds labels; mapped to integers %s", table.name, columns.group, mapping)
    return np.asarray([mapping.get(label, 0) for label in labels], dtype=np.int64), mapping


def read_users(table: Table, columns: ColumnMap) -> np.ndarray:
    values = column_values(table, columns.user_id)
    kind = pd.api.types.infer_dtype(values, skipna=False)
    if kind == "string":  # fast path: all str, no nulls
        users = values
        bad = _blank_mask(users)
    elif kind == "integer":
        users = np.array([str(int(v)) for v in values], dtype=object)
        bad = np.zeros(len(values), dtype=bool)
    else:
        bad = np.array([is_null(v) or is_nonscalar(v) or not scalar_str(v).strip() for v in values], dtype=bool)
        users = np.array(["" if b else scalar_str(v) for v, b in zip(values, bad)], dtype=object)
    table.flag(
        "missing_user",
        f"user id column {columns.user_id!r} is null or empty",
        bad,
        "Every pair needs the id of the user who judged it; fill in or remove these rows (for data without "
        "user ids, add a constant user_id column).",
    )
    return users
