"""Pairwise metrics from preference logits: accuracy, log-loss, per user."""

from __future__ import annotations

import numpy as np


def pair_metrics(logits: np.ndarray, user_ids: np.ndarray) -> dict:
    """Accuracy (a logit of exactly 0 counts as half right), log-loss, and the mean of per-user accuracies.

    logits: (n,) preference logits of the chosen response; user_ids: (n,) the user of each pair.
    """
    logits = np.asarray(logits, dtype=np.float64)
    n = len(logits)
    if n == 0:
        return {"accuracy": None, "log_loss": None, "user_mean_accuracy": None, "n_pairs": 0, "n_users": 0, "per_user": {}}
    correct = (logits > 0) + 0.5 * (logits == 0)
    nll = np.logaddexp(0.0, -logits)  # -log sigmoid(z), stable
    users, inverse = np.unique(np.asarray(user_ids, dtype=str), return_inverse=True)
    per_user_acc = np.bincount(inverse, weights=correct) / np.bincount(inverse)
    per_user_n = np.bincount(inverse)
    return {
        "accuracy": float(correct.mean()),
        "log_loss": float(nll.mean()),
        "user_mean_accuracy": float(per_user_acc.mean()),
        "n_pairs": int(n),
        "n_users": int(len(users)),
        "per_user": {str(u): {"accuracy": float(a), "n_pairs": int(c)} for u, a, c in zip(users, per_user_acc, per_user_n)},
    }
