"""Shared helpers of the benchmark suites: profiles, threads, embeddings, fitting, JSON output."""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from palrm.data.schema import PairData

logger = logging.getLogger(__name__)

SUITES = ("paper", "perf", "all")
PROFILES = ("full", "quick", "smoke")


def set_threads(threads: int | None) -> None:
    """Pin torch's intra-op threads. On a small shared machine one thread is much faster than two
    competing with other processes (measured: up to 20x for PAL-B training under load)."""
    if threads:
        torch.set_num_threads(int(threads))


def prepare_run(out_dir: str | Path, threads: int | None) -> Path:
    """What every suite does first: pin the threads (`set_threads`) and create its results folder."""
    set_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def with_embeddings(pairs: PairData, encoder: str = "minilm", *, cache_dir: str | None = None) -> PairData:
    """`pairs` with `embeddings` filled by `encoder` (disk-cached), so every model shares one table."""
    if pairs.embeddings is not None:
        return pairs
    from palrm.encoders import embed_texts, make_encoder

    vectors = embed_texts(list(pairs.texts), make_encoder(encoder), cache_dir=cache_dir, progress=False)
    return replace(pairs, embeddings=np.asarray(vectors, dtype=np.float32))


def fit(kind: str, train: PairData, val: PairData | None, *, seed: int = 0, **overrides: Any):
    """A fitted PALRewardModel (no progress bars) and its fit time in seconds."""
    from palrm.reward_model import PALRewardModel

    start = time.perf_counter()
    model = PALRewardModel(kind=kind, progress=False, seed=seed, **overrides).fit(train, val)
    return model, time.perf_counter() - start


def acc(model, pairs: PairData) -> float:
    return float(model.evaluate(pairs)["accuracy"])


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=_default) + "\n")
    return path


def _default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@contextmanager
def timed(store: dict, key: str):
    start = time.perf_counter()
    yield
    store[key] = round(time.perf_counter() - start, 3)


def r4(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)
