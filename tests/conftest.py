"""Shared fixtures: small planted heterogeneous data sets that train in a second or two."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test writes embeddings into its own cache, never the user's ~/.cache."""
    monkeypatch.setenv("PALRM_CACHE_DIR", str(tmp_path_factory.mktemp("emb-cache")))


@pytest.fixture(scope="session")
def synthetic():
    """Planted 3-prototype partition users on 8-d items (precomputed embeddings)."""
    from palrm.data.synthetic import build_synthetic

    return build_synthetic(d=8, k=3, n_users=60, n_unseen_users=12, pairs_per_user=80, noise=0.5, seed=0)


@pytest.fixture(scope="session")
def synthetic_splits(synthetic):
    from palrm.data.splits import few_shot_split, split_pairs

    seen = synthetic.pairs.for_users(synthetic.seen_users).compact_users()
    unseen = synthetic.pairs.for_users(synthetic.unseen_users).compact_users()
    splits = split_pairs(seen, val_frac=0.1, test_frac=0.2, seed=0)
    shots, test = few_shot_split(unseen, max_shots=40, seed=0)
    return splits, shots, test


def text_pairs_frame(n_users: int = 12, pairs_per_user: int = 30, seed: int = 0) -> pd.DataFrame:
    """A text pair table with two groups that disagree: group 0 prefers 'cats' answers, group 1 'dogs'."""
    rng = np.random.default_rng(seed)
    cats = [f"I love cats, answer {i}" for i in range(20)]
    dogs = [f"Dogs are the best, reply {i}" for i in range(20)]
    rows = []
    for u in range(n_users):
        for _ in range(pairs_per_user):
            c, d = cats[rng.integers(20)], dogs[rng.integers(20)]
            chosen, rejected = (c, d) if u % 2 == 0 else (d, c)
            rows.append({"user_id": f"user{u}", "prompt": "Which pet?", "chosen": chosen, "rejected": rejected})
    return pd.DataFrame(rows)


@pytest.fixture
def text_pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    text_pairs_frame().to_json(path, orient="records", lines=True)
    return path
