"""Query pools: candidate pairs a user has not judged yet (`palrm onboard --pool`, `palrm serve --query-pool`).

A pool file has `prompt`, `chosen` and `rejected` columns (.jsonl, .csv, .parquet or .json); the
order of the two responses carries no meaning, and `user_id` is optional.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from palrm.data.io import load_pairs
from palrm.data.schema import PairData
from palrm.errors import DataFormatError


def read_pool(path: str | os.PathLike) -> PairData:
    """Candidate pairs (prompt, chosen, rejected; user_id optional) as PairData; the order of the two
    responses carries no meaning."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"pool file {path}: no such file; pass a .jsonl / .csv / .parquet file with prompt, chosen and rejected columns")
    suffix = path.suffix.lower()
    try:
        frame = (pd.read_json(path, lines=True) if suffix == ".jsonl" else pd.read_csv(path) if suffix == ".csv"
                 else pd.read_parquet(path) if suffix in (".parquet", ".pq") else pd.read_json(path))
    except ValueError as exc:
        raise DataFormatError(f"pool file {path}: could not be read ({exc})") from None
    if len(frame) == 0:
        raise DataFormatError(f"pool file {path}: the pool is empty; it needs at least one candidate pair")
    if "user_id" not in frame.columns:
        frame = frame.assign(user_id="pool")
    pool = load_pairs(frame)
    return pool
