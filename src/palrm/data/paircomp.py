"""Real per-subject paired comparisons from the R packages psychotools / psychotree.

The data (Topmodel2007, FirstNames, GermanParties2009, SoundQuality) are GPL-2 licensed and are
*not* shipped with palrm: pass ``source=`` the directory holding ``<name>_comparisons.csv`` (columns
``row, subject, item_a, item_b, a_preferred``) and ``<name>_subjects.csv`` (``row`` plus the
covariates of that row of the R data frame). See docs/datasets.md, "psychotools paired comparisons".

Users are the subjects (for SoundQuality: the listener ``id``; one listener has several sessions,
i.e. several ``row``s). Items carry no text, so every item gets a one-hot embedding:
``PairData.texts`` are the item names and ``PairData.embeddings`` the identity matrix. With
``embedding="learned"`` the input is the same one-hot matrix: the model's first linear layer on a
one-hot input *is* a learned item-embedding table, so "learned" only records the intent.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from palrm.data.schema import NO_PROMPT, PairData
from palrm.errors import ConfigError, DataFormatError

logger = logging.getLogger(__name__)

KNOWN_DATASETS = ("Topmodel2007", "FirstNames", "GermanParties2009", "SoundQuality")
EMBEDDINGS = ("onehot", "learned")
SOURCE_ENV = "PALRM_PAIRCOMP_DIR"
COMPARISON_COLUMNS = ("row", "subject", "item_a", "item_b", "a_preferred")
_SUBJECT_ID_COLUMN = {"SoundQuality": "id"}  # covariate column holding the user id, where not `row`
_MAX_REPORTED = 5


@dataclass
class PaircompDataset:
    """A psychotools paired-comparison data set as PAL pairs.

    Attributes:
        pairs: one pair per comparison, in file order; no prompts; ``embeddings`` one-hot.
        covariates: one row per user (index ``user_id``, aligned with ``pairs.user_ids``): the
            subject covariates that are constant for that user, plus ``n_rows`` (sessions).
        row_covariates: the subjects file as read (one row per R data-frame row) with ``user_id``.
        items: item names; ``pairs.texts == items`` and item i's embedding is the unit vector e_i.
        name: the data set name.
    """

    pairs: PairData
    covariates: pd.DataFrame
    row_covariates: pd.DataFrame
    items: list[str]
    name: str


def default_source() -> Path | None:
    """The first existing candidate directory for the CSV files, or None.

    Looked up in order: ``$PALRM_PAIRCOMP_DIR``; ``../shared/data/psychotools-paircomp`` relative
    to the current directory; the same relative to the palrm source checkout.
    """
    candidates = []
    if os.environ.get(SOURCE_ENV):
        candidates.append(Path(os.environ[SOURCE_ENV]))
    relative = Path("..") / "shared" / "data" / "psychotools-paircomp"
    candidates.append(Path.cwd() / relative)
    candidates.append(Path(__file__).resolve().parents[3] / relative)  # <repo>/src/palrm/data/..
    return next((c for c in candidates if c.is_dir()), None)


def build_paircomp(
    name: str,
    *,
    source: str | Path | None = None,
    embedding: str = "onehot",
    seed: int = 0,
) -> PaircompDataset:
    """Load ``<name>_comparisons.csv`` and ``<name>_subjects.csv`` as a :class:`PaircompDataset`.

    Args:
        name: data set name, e.g. ``"Topmodel2007"`` (any name with both files in ``source``).
        source: directory with the CSV files; None looks in :func:`default_source`'s places.
        embedding: ``"onehot"`` or ``"learned"``; both give one-hot inputs (see module docstring).
        seed: recorded in ``pairs.meta`` for uniformity with the other builders; loading is not
            random (pairs keep the file order, so splits are left to the caller's seeded splitter).

    Raises:
        DataFormatError: the files are missing or malformed (naming the file and rows).
        ConfigError: an unknown ``embedding``.
    """
    if embedding not in EMBEDDINGS:
        raise ConfigError(f"embedding must be one of {EMBEDDINGS}, got {embedding!r}")
    directory = _resolve_source(source)
    comparisons_path = directory / f"{name}_comparisons.csv"
    subjects_path = directory / f"{name}_subjects.csv"
    for path in (comparisons_path, subjects_path):
        if not path.is_file():
            available = sorted(p.name[: -len("_comparisons.csv")] for p in directory.glob("*_comparisons.csv"))
            raise DataFormatError(f"{path}: file not found; data sets available in {directory}: {available} "
                                  f"(known: {list(KNOWN_DATASETS)}); pass one of those names")
    comparisons = _read_comparisons(comparisons_path)
    subjects = pd.read_csv(subjects_path, dtype=str, keep_default_na=False, na_values=["NA"])
    if "row" not in subjects.columns:
        raise DataFormatError(f"{subjects_path}: no 'row' column (found {list(subjects.columns)}); "
                              "expected 'row' plus one column per covariate")

    # Items in order of first appearance (row by row, item_a before item_b): R's factor order.
    items = list(dict.fromkeys(np.column_stack([comparisons["item_a"], comparisons["item_b"]]).ravel().tolist()))
    item_index = {item: i for i, item in enumerate(items)}
    user_ids = list(dict.fromkeys(comparisons["subject"]))
    user_index = {u: i for i, u in enumerate(user_ids)}
    a = comparisons["item_a"].map(item_index).to_numpy(np.int64)
    b = comparisons["item_b"].map(item_index).to_numpy(np.int64)
    a_won = comparisons["a_preferred"].to_numpy() == 1
    pairs = PairData(
        texts=items,
        user_ids=user_ids,
        user=comparisons["subject"].map(user_index).to_numpy(np.int64),
        prompt=np.full(len(comparisons), NO_PROMPT, dtype=np.int64),
        chosen=np.where(a_won, a, b),
        rejected=np.where(a_won, b, a),
        embeddings=np.eye(len(items), dtype=np.float32),
        source=str(comparisons_path),
        meta={"dataset": f"paircomp/{name}", "embedding": embedding, "seed": seed, "license": "GPL-2"},
    )
    row_covariates, covariates = _covariates(name, comparisons, subjects, user_ids, subjects_path)
    logger.info("loaded %s: %d users, %d items, %d comparisons", name, len(user_ids), len(items), len(pairs))
    return PaircompDataset(pairs=pairs, covariates=covariates, row_covariates=row_covariates,
                           items=items, name=name)


def _resolve_source(source: str | Path | None) -> Path:
    if source is None:
        found = default_source()
        if found is None:
            raise DataFormatError(
                "no psychotools paired-comparison data found (looked in $PALRM_PAIRCOMP_DIR and "
                "../shared/data/psychotools-paircomp from the current directory and the palrm "
                "checkout); pass source=<directory with <name>_comparisons.csv and <name>_subjects.csv>"
            )
        return found
    path = Path(source)
    if not path.is_dir():
        raise DataFormatError(f"{path}: not a directory; pass source=<directory holding "
                              "<name>_comparisons.csv and <name>_subjects.csv>")
    return path


def _read_comparisons(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=["NA", ""])
    missing = [c for c in COMPARISON_COLUMNS if c not in frame.columns]
    if missing:
        raise DataFormatError(f"{path}: missing column(s) {missing} (found {list(frame.columns)}); "
                              f"expected {list(COMPARISON_COLUMNS)}")
    problems = []
    empty = frame[list(COMPARISON_COLUMNS)].isna().any(axis=1).to_numpy()
    if empty.any():
        problems.append(("empty values", empty))
    outcome = frame["a_preferred"].isin(["0", "1"]).to_numpy() | empty
    if not outcome.all():
        problems.append(("a_preferred not 0 or 1", ~outcome))
    same = (frame["item_a"] == frame["item_b"]).to_numpy()
    if same.any():
        problems.append(("item_a equals item_b", same))
    if problems:
        # Line numbers: +2 for the header and 1-based counting.
        lines = "; ".join(f"{what} on line(s) {(np.flatnonzero(mask)[:_MAX_REPORTED] + 2).tolist()}"
                          for what, mask in problems)
        raise DataFormatError(f"{path}: {lines}; every row needs row, subject, two different items and "
                              "a_preferred = 1 (item_a preferred) or 0 (item_b preferred); fix those rows")
    frame["a_preferred"] = frame["a_preferred"].astype(np.int64)
    return frame


def _covariates(name: str, comparisons: pd.DataFrame, subjects: pd.DataFrame, user_ids: list[str],
                path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-row covariates with their user id, and the per-user table of covariates constant per user."""
    row_to_user = comparisons.drop_duplicates("row").set_index("row")["subject"]
    rows = subjects.copy()
    rows["user_id"] = rows["row"].map(row_to_user)
    id_column = _SUBJECT_ID_COLUMN.get(name)
    if id_column is not None and id_column in rows.columns:
        rows["user_id"] = rows["user_id"].fillna(rows[id_column])
    unknown = rows["user_id"].isna().to_numpy()
    if unknown.any():
        logger.warning("%s: %d subject row(s) have no comparisons (first rows: %s)", path, int(unknown.sum()),
                       rows.loc[unknown, "row"].head(_MAX_REPORTED).tolist())
    rows = rows[~unknown]
    missing_users = sorted(set(user_ids) - set(rows["user_id"]))
    if missing_users:
        raise DataFormatError(f"{path}: no covariate row for subject(s) {missing_users[:_MAX_REPORTED]} that "
                              "appear in the comparisons file; the two files must come from the same export")
    for column in rows.columns:  # numeric covariates back to numbers (the files were read as strings)
        if column not in ("user_id", id_column):
            converted = pd.to_numeric(rows[column], errors="coerce")
            if converted.notna().sum() == rows[column].notna().sum():
                rows[column] = converted
    redundant = ["row"] + [c for c in (id_column,) if c in rows.columns]  # the id is the index already
    grouped = rows.drop(columns=redundant).groupby("user_id", sort=False)
    constant = [c for c in grouped.obj.columns if c != "user_id" and (grouped[c].nunique(dropna=False) <= 1).all()]
    per_user = grouped[constant].first() if constant else pd.DataFrame(index=grouped.size().index)
    per_user["n_rows"] = grouped.size()
    per_user = per_user.reindex(user_ids)
    per_user.index.name = "user_id"
    return rows.reset_index(drop=True), per_user
