"""Small shared test data for the model tests."""

from __future__ import annotations

import numpy as np
import torch

from palrm.training import indexed


def small_pairs(n_users: int = 6, per_user: int = 20, d_in: int = 8, seed: int = 0):
    """(table (31, d_in) with the zero row last, IndexedPairs): random pairs over 30 items, 5 prompts."""
    rng = np.random.default_rng(seed)
    table = torch.cat([torch.randn(30, d_in), torch.zeros(1, d_in)])
    n = n_users * per_user
    return table, indexed(np.repeat(np.arange(n_users), per_user), rng.integers(0, 5, n), rng.integers(5, 30, n),
                          rng.integers(5, 30, n), 30)
