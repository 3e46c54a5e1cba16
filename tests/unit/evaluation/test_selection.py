"""Model selection on validation data with held-out users (evaluation/selection.py)."""

from __future__ import annotations

import numpy as np
import torch

from palrm.config import PALConfig
from palrm.evaluation.selection import Candidate, candidate_grid, format_table, select_model
from palrm.training import indexed


def _index(splits):
    data = splits.train
    table = torch.from_numpy(np.concatenate([data.embeddings, np.zeros((1, data.embeddings.shape[1]), np.float32)]))
    n = len(data.texts)
    tr = indexed(splits.train.user, splits.train.prompt, splits.train.chosen, splits.train.rejected, n)
    va = indexed(splits.validation.user, splits.validation.prompt, splits.validation.chosen, splits.validation.rejected, n)
    return table, tr, va, len(data.user_ids)


CFG = PALConfig().updated({"model.d": 8, "model.hidden": [16], "train.epochs": 12, "train.progress": False,
                           "adapt.steps": 100})


def test_selection_finds_the_planted_groups_and_reports_every_candidate(synthetic_splits):
    splits, _, _ = synthetic_splits
    table, tr, va, n_users = _index(splits)
    cands = [Candidate("btl"), Candidate("pal-a", 1), Candidate("pal-a", 3), Candidate("pal-a", 3, "input")]
    report = select_model(CFG, table, tr, va, n_users, candidates=cands, shots=(1, 5))
    names = [r["name"] for r in report["candidates"]]
    assert names == [c.name for c in cands]
    assert report["winner"] in {"pal-a K=3", "pal-a K=3 + input offset"}
    assert not report["no_personal_structure"]
    assert report["overrides"]["model.k"] == 3 and report["overrides"]["adapt.prior"] in {"none", "gaussian", "mixture"}
    assert report["heldout_users"] > 0
    for row in report["candidates"]:
        assert set(row["heldout"]) == {"0", "1", "5"}
        assert row["score"] == round((row["known"]["log_loss"] + row["heldout_mean_log_loss"]) / 2, 5) or abs(
            row["score"] - (row["known"]["log_loss"] + row["heldout_mean_log_loss"]) / 2) < 1e-4
    table_text = format_table(report)
    assert "selected: " + report["winner"] in table_text and "btl" in table_text


def test_selection_says_so_when_users_agree(synthetic_splits):
    splits, _, _ = synthetic_splits
    table, tr, va, n_users = _index(splits)
    # relabel every pair by one shared reward: no personal structure left
    w = torch.randn(table.shape[1], generator=torch.Generator().manual_seed(1))
    def agree(p):
        flip = (table[p.chosen] @ w) < (table[p.rejected] @ w)
        c = torch.where(flip, p.rejected, p.chosen)
        r = torch.where(flip, p.chosen, p.rejected)
        return type(p)(p.user, p.prompt, c, r)
    report = select_model(CFG, table, agree(tr), agree(va), n_users,
                          candidates=[Candidate("btl"), Candidate("pal-a", 1), Candidate("pal-a", 3)], shots=(2,))
    assert report["no_personal_structure"], format_table(report)
    assert "no personal structure found" in format_table(report)


def test_candidate_grid():
    grid = candidate_grid(ks=(1, 2), offsets=("none", "input"))
    assert [c.name for c in grid] == ["btl", "pal-b K=1", "pal-b K=1 + input offset", "pal-b K=2", "pal-b K=2 + input offset"]
