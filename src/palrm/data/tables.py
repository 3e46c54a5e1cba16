"""Pair tables: reading JSONL / JSON / CSV / Parquet files or DataFrames into `PairData`, and writing them back.

File format (TRL's explicit preference format plus a user id), one pair per row:

=========== ======== =====================================================================
column      required meaning
=========== ======== =====================================================================
user_id     yes      who judged the pair (any scalar; stored as str)
prompt      no       the prompt; absent, null or empty -> no prompt (``NO_PROMPT``)
chosen      yes      the preferred response
rejected    yes      the other response
split       no       train / validation / test ("val", "valid", "dev" mean validation)
group       no       true group of the user: integers, or labels such as "liberal" (mapped to
                     0, 1, ... in sorted order; the mapping is kept in ``meta["group_labels"]``)
=========== ======== =====================================================================

Instead of ``chosen`` / ``rejected`` a table may hold the unordered form ``response_a``,
``response_b``, ``label`` where ``label`` uses one of the conventions {1, -1}, {1, 0} or
{"a", "b"}; 1 (or "a") means ``response_a`` is preferred. Every column name can be remapped with a
`ColumnMap` (the CLI fills it from ``--user-column``, ``--chosen-column``, ...).

With precomputed embeddings (how image data arrives) the prompt / response columns hold integer row
ids into an embedding table (`load_embeddings`) instead of text.

Loading never writes anything. A problem with the file as a whole (unreadable, a missing column)
raises `DataFormatError` at once. Invalid rows (an empty or identical response, a missing user id,
an unknown split, ...) are all collected first: with ``on_invalid="error"`` (the default) one
`DataFormatError` lists every kind of problem with its count and first rows (1-based data rows; line
numbers for JSONL) and the fix; with ``on_invalid="skip"`` those rows are dropped and described in
``meta["rejected"]`` / ``meta["rejected_counts"]`` (`save_rejected` writes them as JSONL); nothing
else about the data is changed.

Column and value checks live in `palrm.data.validation`; precomputed embedding tables in
`palrm.data.embeddings`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Union

import numpy as np
import pandas as pd

from palrm.atomic import atomic_file
from palrm.data.embeddings import embedding_rows, resolve_embeddings
from palrm.data.schema import NO_PROMPT, PairData
from palrm.data.validation import (
    INT_RE,
    MAX_ROWS_SHOWN,
    ColumnMap,
    Table,
    check_readable_file,
    column_values,
    invalid_rows_error,
    is_nonscalar,
    is_null,
    missing_column_error,
    prefers_a,
    read_group,
    read_split,
    read_users,
    text_column,
    unreadable_error,
)
from palrm.errors import ConfigError, DataFormatError

logger = logging.getLogger(__name__)

__all__ = ["FORMATS", "ON_INVALID", "load_pairs", "read_table", "resolve_format", "save_pairs", "save_rejected"]

PathLike = Union[str, "os.PathLike[str]"]

FORMATS = ("jsonl", "json", "csv", "parquet")
"""File formats `load_pairs` / `save_pairs` understand (the ``fmt`` argument)."""

ON_INVALID = ("error", "skip")
"""What `load_pairs` does with invalid rows: raise one error listing them all, or drop them."""

_SUFFIX_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
def resolve_format(path: Path, fmt: str | None) -> str:
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

def _read_jsonl(path: Path, text: str) -> Table:
    """The JSON objects of a JSONL text; lines that are not objects go to `Table.malformed` (load_pairs reports them)."""
    records: list[dict] = []
    numbers: list[int] = []
    bad: list[tuple[int, str, str]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append((lineno, f"{exc.msg} at column {exc.colno}", line))
            continue
        if not isinstance(record, dict):
            bad.append((lineno, f"expected a JSON object, got {type(record).__name__}", line))
            continue
        records.append(record)
        numbers.append(lineno)
    frame = pd.DataFrame(records, dtype=object) if records else pd.DataFrame()
    return Table(frame.astype(object), str(path), "line", np.asarray(numbers, dtype=np.int64), malformed=bad)


def _read_json(path: Path, text: str) -> Table:
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
            f"{path}: records {', '.join(map(str, bad[:MAX_ROWS_SHOWN]))} (1-based) of the JSON array are not "
            "objects. Every record must be an object with user_id, prompt, chosen and rejected."
        )
    frame = pd.DataFrame(records, dtype=object) if records else pd.DataFrame()
    return Table(frame.astype(object), str(path), "record", np.arange(1, len(frame) + 1), "(1-based)")


def read_table(source: PathLike | pd.DataFrame, fmt: str | None) -> Table:
    """Read `source` into a `Table` of object columns, raising DataFormatError on any failure (JSONL lines that
    are not JSON objects are kept aside in `Table.malformed`)."""
    if isinstance(source, pd.DataFrame):
        return Table(source.astype(object), "<DataFrame>", "row", np.arange(1, len(source) + 1), "(1-based positions)")
    if not isinstance(source, (str, os.PathLike)):
        raise DataFormatError(
            f"load_pairs got a {type(source).__name__}; expected a path (str or Path) to a JSONL / CSV / "
            "Parquet file or a pandas DataFrame."
        )
    path = Path(source)
    kind = resolve_format(path, fmt)
    check_readable_file(path, "pair file")
    try:
        if kind in ("jsonl", "json"):
            text = path.read_text(encoding="utf-8-sig")
            return _read_jsonl(path, text) if kind == "jsonl" else _read_json(path, text)
        if kind == "csv":
            try:
                frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
            except pd.errors.EmptyDataError:
                frame = pd.DataFrame()
            return Table(frame.astype(object), str(path), "data row", np.arange(1, len(frame) + 1), "(1-based, header not counted)")
        frame = pd.read_parquet(path, engine="pyarrow")
        return Table(frame.astype(object), str(path), "row", np.arange(1, len(frame) + 1), "(1-based)")
    except DataFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoding, parser, OS and pyarrow errors all mean "unreadable"
        raise unreadable_error(path, kind, exc) from exc

# --------------------------------------------------------------------------------------------
# load_pairs


def load_pairs(
    source: PathLike | pd.DataFrame,
    *,
    columns: ColumnMap | None = None,
    embeddings: PathLike | np.ndarray | tuple | None = None,
    fmt: str | None = None,
    on_invalid: str = "error",
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
        on_invalid: ``"error"`` raises one DataFormatError listing every kind of invalid row (count and
            first rows of each); ``"skip"`` drops the invalid rows, logs how many per reason, and keeps
            them in ``meta["rejected"]`` (row number, reasons, the original record) and
            ``meta["rejected_counts"]`` ({reason: rows}); write them with `save_rejected`.

    Returns:
        A PairData: one entry per row, every distinct text (or embedding row) stored once; user ids
        as strings in order of first appearance.

    Raises:
        DataFormatError: any problem with the file or its contents (the message names the file, the
            first offending rows and the fix).
    """
    if on_invalid not in ON_INVALID:
        raise ConfigError(f"on_invalid={on_invalid!r}: expected one of {', '.join(ON_INVALID)}")
    columns = columns or ColumnMap()
    table = read_table(source, fmt)
    frame = table.frame
    if len(frame) == 0 and table.malformed:
        raise invalid_rows_error(table)
    if len(frame) == 0:
        header = f" (columns: {', '.join(map(str, frame.columns))})" if len(frame.columns) else ""
        raise DataFormatError(
            f"{table.name}: no pairs; the file has no data rows{header}. Write at least one pair "
            "(user_id, prompt, chosen, rejected) per row."
        )
    present = set(map(str, frame.columns))

    if columns.user_id not in present:
        raise missing_column_error(table, columns, "user_id")
    for name in ("prompt", "split", "group"):
        if not columns.is_default(name) and getattr(columns, name) not in present:
            raise missing_column_error(table, columns, name, " (named explicitly in the column mapping)")

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
            raise missing_column_error(table, columns, missing[0], " (needed with response_a/response_b/label)")
        raise missing_column_error(table, columns, "chosen", f" (nor {columns.response_a!r}/{columns.response_b!r}/{columns.label!r})")
    if explicit:
        for name in ("chosen", "rejected"):
            if getattr(columns, name) not in present:
                raise missing_column_error(table, columns, name)
        first_col, second_col = columns.chosen, columns.rejected
    else:
        first_col, second_col = columns.response_a, columns.response_b

    users = read_users(table, columns)
    has_prompt = columns.prompt in present
    split = read_split(table, columns) if columns.split in present else None
    group, group_labels = read_group(table, columns) if columns.group in present else (None, None)
    prefer_first = np.ones(len(frame), dtype=bool) if explicit else prefers_a(table, columns)

    meta: dict[str, Any] = {"columns": dataclasses.asdict(columns), "form": "chosen/rejected" if explicit else "response_a/response_b/label"}
    if group_labels:
        meta["group_labels"] = group_labels
    n = len(frame)
    if embeddings is None:
        first = text_column(table, first_col, required=True)
        second = text_column(table, second_col, required=True)
        prompts = text_column(table, columns.prompt, required=False) if has_prompt else np.full(n, "", dtype=object)
        same = np.fromiter((a.strip() != "" and a.strip() == b.strip() for a, b in zip(first, second)), dtype=bool, count=n)
        keep = _flag_identical(table, same, f"{first_col!r} and {second_col!r} are identical (ignoring surrounding whitespace)",
                               on_invalid, meta)
        if keep is not None:
            users, first, second, prompts, prefer_first, split, group = _rows(
                keep, users, first, second, prompts, prefer_first, split, group)
            n = len(users)
        if all(INT_RE.match(t.strip()) for t in np.concatenate([first, second])):
            logger.warning(
                "%s: every %r / %r value is an integer; if these are embedding row ids, pass embeddings= "
                "(--embeddings); they are being read as texts",
                table.name, first_col, second_col,
            )
        # One table of unique texts, in order of first appearance (prompt, first, second per row).
        stacked = np.stack([prompts, first, second], axis=1).ravel()
        codes, uniques = _codes(stacked, stacked != "", n)
        texts = [str(t) for t in uniques]
        matrix = None
    else:
        ids, full_matrix, emb_name = resolve_embeddings(embeddings)
        rows_first = embedding_rows(table, first_col, column_values(table, first_col), ids, len(full_matrix), emb_name, required=True)
        rows_second = embedding_rows(table, second_col, column_values(table, second_col), ids, len(full_matrix), emb_name, required=True)
        rows_prompt = (
            embedding_rows(table, columns.prompt, column_values(table, columns.prompt), ids, len(full_matrix), emb_name, required=False)
            if has_prompt
            else np.full(n, -1, dtype=np.int64)
        )
        same = (rows_first == rows_second) & (rows_first >= 0)
        keep = _flag_identical(table, same, f"{first_col!r} and {second_col!r} reference the same embedding row", on_invalid, meta)
        if keep is not None:
            users, rows_first, rows_second, rows_prompt, prefer_first, split, group = _rows(
                keep, users, rows_first, rows_second, rows_prompt, prefer_first, split, group)
            n = len(users)
        stacked = np.stack([rows_prompt, rows_first, rows_second], axis=1).ravel()
        codes, used_rows = _codes(stacked, stacked >= 0, n)
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


def _flag_identical(table: Table, same: np.ndarray, problem: str, on_invalid: str, meta: dict) -> np.ndarray | None:
    """Flag the rows `same` (both responses the same, as `problem` says), then `_drop_invalid` every invalid row."""
    table.flag("identical_responses", problem, same, "A pair must compare two different responses; remove these rows.")
    return _drop_invalid(table, on_invalid, meta)


def _rows(keep: np.ndarray, *arrays: np.ndarray | None) -> tuple[np.ndarray | None, ...]:
    """Each of `arrays` restricted to the rows `keep` (None stays None)."""
    return tuple(None if a is None else a[keep] for a in arrays)


def _codes(stacked: np.ndarray, present: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """((n, 3) codes, uniques): the stacked (prompt, first, second) values of `n` rows numbered in order of first
    appearance among the `present` ones; NO_PROMPT where a value is not present (an absent prompt)."""
    codes = np.full(len(stacked), NO_PROMPT, dtype=np.int64)
    kept_codes, uniques = pd.factorize(stacked[present])
    codes[present] = kept_codes
    return codes.reshape(n, 3), uniques


def _drop_invalid(table: Table, on_invalid: str, meta: dict) -> np.ndarray | None:
    """None when every row is valid; else raise (on_invalid="error") or return the rows to keep (and
    describe the dropped ones in `meta`)."""
    if not table.problems and not table.malformed:
        return None
    if on_invalid == "error":
        raise invalid_rows_error(table)
    bad = table.invalid()
    if bad.all() and len(bad):
        raise DataFormatError(f"{table.name}: every row is invalid, nothing is left to load.\n" + str(invalid_rows_error(table)))
    reasons: dict[int, list[str]] = {}
    for p in table.problems:
        for i in np.flatnonzero(p.mask):
            if p.reason not in reasons.setdefault(int(i), []):
                reasons[int(i)].append(p.reason)
    records = table.frame.iloc[sorted(reasons)].to_dict(orient="records")
    meta["rejected"] = [{table.unit.replace(" ", "_"): int(table.numbers[i]), "reasons": reasons[i],
                         "record": {str(k): _plain(v) for k, v in record.items()}}
                        for i, record in zip(sorted(reasons), records)]
    meta["rejected"] += [{"line": n, "reasons": ["malformed_json"], "raw": raw} for n, _, raw in table.malformed]
    meta["rejected"].sort(key=lambda r: next(iter(r.values())))  # in file order
    counts = {p.reason: sum(p.reason in r for r in reasons.values()) for p in table.problems}  # rows per reason
    if table.malformed:
        counts["malformed_json"] = len(table.malformed)
    meta["rejected_counts"] = counts
    logger.warning("%s: skipped %d invalid rows of %d (%s)", table.name, int(bad.sum()) + len(table.malformed),
                   len(bad) + len(table.malformed),
                   ", ".join(f"{k} {v}" for k, v in counts.items()))
    return ~bad


def _plain(value: Any) -> Any:
    """A JSON-ready copy of a cell (missing -> None, numpy scalars and arrays -> Python)."""
    if is_nonscalar(value):
        return [_plain(v) for v in value] if not isinstance(value, dict) else {str(k): _plain(v) for k, v in value.items()}
    if is_null(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


# --------------------------------------------------------------------------------------------
# Writing


def save_rejected(data: PairData | list[PairData], path: PathLike) -> Path | None:
    """Write the rows `load_pairs(..., on_invalid="skip")` dropped (``meta["rejected"]`` of one or more
    PairData) as JSONL, one object per row: the file it came from (``source``), its row / line number,
    the reasons, and the original record. None (and nothing written) when no row was dropped."""
    parts = [data] if isinstance(data, PairData) else list(data)
    rejected = [{"source": p.source, **item} for p in parts for item in p.meta.get("rejected", [])]
    if not rejected:
        return None
    path = Path(path)
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for item in rejected:
            handle.write(json.dumps(item, ensure_ascii=False, default=str) + "\n")
    logger.info("Wrote %d rejected rows to %s", len(rejected), path)
    return path


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
    kind = resolve_format(path, fmt)
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

    with atomic_file(path) as tmp:
        write(tmp)
    logger.info("Wrote %d pairs to %s", len(data), path)
    return path
