"""Confidence intervals over users, and the adjusted Rand index.

Pairs of one user are not independent (the same person judged them), so intervals resample
*users*, not pairs: draw U users with replacement, recompute the pair-weighted accuracy

    acc* = sum_{u in draw} c_u / sum_{u in draw} n_u        (c_u correct pairs of user u, n_u its pairs)

B times, and report the (alpha/2, 1 - alpha/2) percentiles. A difference between two models scored
on the same pairs uses the same draws for both (paired bootstrap).
"""

from __future__ import annotations

import numpy as np


def correct_pairs(logits: np.ndarray) -> np.ndarray:
    """(n,) 1 where the preference logit of the chosen response is positive, 0.5 where exactly 0, else 0."""
    z = np.asarray(logits, dtype=np.float64)
    return (z > 0) + 0.5 * (z == 0)


def per_user_sums(values: np.ndarray, pair_users: np.ndarray, users: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(sum of `values` per user (U,), pairs per user (U,)) in the order of `users`."""
    position = {u: i for i, u in enumerate(users)}
    index = np.fromiter((position[str(u)] for u in pair_users), dtype=np.int64, count=len(pair_users))
    sums = np.bincount(index, weights=np.asarray(values, dtype=np.float64), minlength=len(users))
    return sums, np.bincount(index, minlength=len(users)).astype(np.float64)


def user_bootstrap(sums: dict[str, np.ndarray], counts: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95, differences: list[tuple[str, str]] = ()) -> dict:
    """Pair-weighted accuracy of each entry of `sums` (correct pairs per user, (U,)) with a bootstrap
    interval over users, and of each difference `a - b` in `differences` (paired draws).

    Returns {name: {"estimate", "low", "high"}} with "a - b" keys for the differences, plus
    "n_users" and "n_pairs". With no users every estimate is None.
    """
    counts = np.asarray(counts, dtype=np.float64)
    n_users = int((counts > 0).sum())
    out: dict = {"n_users": n_users, "n_pairs": int(counts.sum()), "level": level, "n_boot": n_boot}
    names = list(sums) + [f"{a} - {b}" for a, b in differences]
    if counts.sum() == 0:
        out.update({name: {"estimate": None, "low": None, "high": None} for name in names})
        return out
    keep = counts > 0
    counts = counts[keep]
    rates = {}
    draws = np.random.default_rng(seed).integers(0, len(counts), size=(n_boot, len(counts)))  # (B, U)
    total = counts[draws].sum(1)  # (B,)
    for name, s in sums.items():
        s = np.asarray(s, dtype=np.float64)[keep]
        rates[name] = (s.sum() / counts.sum(), s[draws].sum(1) / total)
    for a, b in differences:
        rates[f"{a} - {b}"] = (rates[a][0] - rates[b][0], rates[a][1] - rates[b][1])
    tail = 100 * (1 - level) / 2
    for name in names:
        point, boot = rates[name]
        low, high = np.percentile(boot, [tail, 100 - tail])
        out[name] = {"estimate": float(point), "low": float(low), "high": float(high)}
    return out


def adjusted_rand_index(labels_a, labels_b) -> float:
    """Adjusted Rand index of two labelings of the same items (1 = identical partitions, ~0 = chance).

    ARI = (sum_ij C(n_ij, 2) - E) / ((sum_i C(a_i, 2) + sum_j C(b_j, 2)) / 2 - E),
    E = sum_i C(a_i, 2) sum_j C(b_j, 2) / C(n, 2), with n_ij the contingency table and a_i, b_j its
    margins. Two partitions that each put every item in one cluster (or each item alone) score 1.
    """
    a, b = np.asarray(labels_a), np.asarray(labels_b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"labelings must be 1-D and of equal length, got {a.shape} and {b.shape}")
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max(initial=-1) + 1, bi.max(initial=-1) + 1))
    np.add.at(table, (ai, bi), 1)

    def pairs(x):
        return (x * (x - 1) / 2).sum()

    index, sum_a, sum_b, total = pairs(table), pairs(table.sum(1)), pairs(table.sum(0)), pairs(np.array([len(a)], float))
    expected = sum_a * sum_b / total if total else 0.0
    maximum = (sum_a + sum_b) / 2
    if maximum == expected:
        return 1.0
    return float((index - expected) / (maximum - expected))
