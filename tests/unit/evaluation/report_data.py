"""A small text data set with three planted groups, in the layout `palrm report` reads."""

from __future__ import annotations

import numpy as np
import pandas as pd

TOPICS = ("cats", "dogs", "birds")


def three_group_frame(n_seen: int = 18, n_new: int = 6, pairs_per_user: int = 40, pool: int = 20, seed: int = 0,
                      string_groups: bool = False) -> pd.DataFrame:
    """Group g prefers answers about TOPICS[g] over the others. Seen users: split train/validation/test
    per user (70/10/20); new users ("new*"): the first `pool` pairs split=train, the rest split=test."""
    rng = np.random.default_rng(seed)
    answers = {t: [f"{t} are lovely, answer {i} about {t}" for i in range(12)] for t in TOPICS}
    rows = []
    users = [(f"user{u}", u % 3, False) for u in range(n_seen)] + [(f"new{u}", u % 3, True) for u in range(n_new)]
    for user, group, is_new in users:
        for i in range(pairs_per_user):
            other = TOPICS[(group + 1 + rng.integers(2)) % 3]
            good, bad = answers[TOPICS[group]][rng.integers(12)], answers[other][rng.integers(12)]
            if is_new:
                split = "train" if i < pool else "test"
            else:
                r = i / pairs_per_user
                split = "train" if r < 0.7 else ("validation" if r < 0.8 else "test")
            rows.append({"user_id": user, "prompt": "Which pet?", "chosen": good, "rejected": bad, "split": split,
                         "group": ["liberal", "moderate", "conservative"][group] if string_groups else group})
    return pd.DataFrame(rows)


def fit_three_group(frame: pd.DataFrame | None = None, **overrides):
    """(PAL-B K=3 fitted on the seen users' train rows (validation rows for early stopping), all the data)."""
    from palrm import PALRewardModel
    from palrm.data import load_pairs

    data = load_pairs(three_group_frame() if frame is None else frame)
    seen = np.array([u.startswith("user") for u in data.pair_user_ids])
    options = {**dict(kind="pal-b", k=3, encoder="hashing", epochs=12, hidden=[32], d=16, progress=False), **overrides}
    model = PALRewardModel(**options).fit(data.select(seen & (data.split == "train")), data.select(seen & (data.split == "validation")))
    return model, data
