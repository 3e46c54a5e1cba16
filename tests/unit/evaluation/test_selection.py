"""Model selection on validation data with held-out users (evaluation/selection.py)."""

from __future__ import annotations

import copy

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
    report = select_model(CFG, table, tr, va, n_users, candidates=cands, shots=(1, 5), weight_decays=[0.01],
                          dropouts=[0.0])
    names = [r["name"] for r in report["candidates"]]
    assert names == [c.name for c in cands]
    assert report["regularization"]["chosen"] == {"weight_decay": 0.01, "dropout": 0.0}
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
    assert [c.name for c in grid] == ["btl", "btl + input offset", "pal-b K=1", "pal-b K=1 + input offset", "pal-b K=2",
                                      "pal-b K=2 + input offset"]
    assert [c.name for c in candidate_grid(ks=(2,), offsets=("none", "latent"))] == ["btl", "pal-b K=2", "pal-b K=2 + latent offset"]


def test_user_level_early_stopping_and_the_regularisation_stage(synthetic_splits):
    splits, _, _ = synthetic_splits
    table, tr, va, n_users = _index(splits)
    cands = [Candidate("pal-a", 1), Candidate("pal-a", 3)]
    report, net, held = select_model(CFG, table, tr, va, n_users, candidates=cands, shots=(2,),
                                     weight_decays=[0.01, 0.5], dropouts=[0.0, 0.2], return_net=True)
    rows = report["candidates"]
    stage1 = [r for r in rows if r["stage"] == 1]
    stage2 = [r for r in rows if r["stage"] == 2]
    assert [r["name"] for r in stage1] == ["pal-a K=1", "pal-a K=3"]
    best1 = min(stage1, key=lambda r: r["score"])
    # the second stage refits only the stage-1 winner, with every other (weight decay, dropout) pair
    assert {(r["weight_decay"], r["dropout"]) for r in stage2} == {(0.01, 0.2), (0.5, 0.0), (0.5, 0.2)}
    assert all(r["name"].startswith(best1["name"] + " wd=") and r["k"] == best1["k"] for r in stage2)
    best = min(rows, key=lambda r: r["score"])
    assert report["winner"] == best["name"]
    assert report["regularization"]["chosen"] == {"weight_decay": best["weight_decay"], "dropout": best["dropout"]}
    assert report["overrides"]["train.weight_decay"] == best["weight_decay"]
    assert report["overrides"]["model.dropout"] == best["dropout"]
    # early stopping judged held-out users: the best epoch is recorded and lies within the epochs run
    assert report["early_stopping"].startswith("user-level")
    for r in rows:
        assert 1 <= r["best_epoch"] <= r["epochs"] <= CFG.train.epochs
    assert net.k == best["k"] and net.num_users == report["known_users"]
    assert len(held) == report["heldout_users"] > 0


def test_user_level_stop_loss_drives_early_stopping():
    """train_stream keeps the epoch of the lowest `stop_loss` when extra_validation returns one."""
    from palrm.models import build_net
    from palrm.training import train_net
    from palrm.training.pairs import IndexedPairs

    g = torch.Generator().manual_seed(0)
    table = torch.randn(41, 6, generator=g)
    pairs = IndexedPairs(torch.randint(0, 4, (200,), generator=g), torch.full((200,), 40),
                         torch.randint(0, 40, (200,), generator=g), torch.randint(0, 40, (200,), generator=g))
    cfg = CFG.updated({"model.kind": "pal-a", "model.k": 2, "train.epochs": 6, "train.patience": 0})
    net = build_net(cfg.model, 6, 4)
    snapshots = []

    def stop(module, row):  # lowest at epoch 2
        snapshots.append({k: v.clone() for k, v in module.state_dict().items()})
        return {"stop_loss": abs(row["epoch"] - 2) + 0.0}

    history = train_net(net, table, pairs, pairs, cfg.train, extra_validation=stop)
    assert len(history) == 6 and [h["stop_loss"] for h in history][1] == 0.0
    assert all(torch.equal(v, snapshots[1][k]) for k, v in net.state_dict().items())


def test_onboarding_offset_variance_is_chosen_on_held_out_users(synthetic_splits):
    splits, _, _ = synthetic_splits
    table, tr, va, n_users = _index(splits)
    report = select_model(CFG, table, tr, va, n_users, candidates=[Candidate("btl"), Candidate("btl", 1, "input")],
                          shots=(1, 5), weight_decays=[0.01], dropouts=[0.0])
    row = next(r for r in report["candidates"] if r["name"] == "btl + input offset")
    tried = row["adapt_offset_vars"]
    assert [t["var"] for t in tried][0] == row["offset_var"] and len(tried) == 5  # model.offset_var, then its multiples
    best = min(tried, key=lambda t: t["log_loss"])
    assert row["adapt_offset_var"] == best["var"] and row["heldout_mean_log_loss"] == best["log_loss"]
    if report["winner"] == "btl + input offset":
        assert report["overrides"]["adapt.offset_var"] == row["adapt_offset_var"]


def test_adapt_uses_the_onboarding_offset_variance(synthetic_splits):
    from palrm import PALRewardModel

    splits, shots, _ = synthetic_splits
    model = PALRewardModel(kind="btl", offset="input", hidden=[16], epochs=5, seed=0, progress=False)
    model.fit(splits.train, splits.validation)
    user = shots.user_ids[0]
    one = shots.for_users([user]).compact_users()
    norms = {}
    for var in (0.0, 1e-8):  # 0: model.offset_var; a tiny onboarding variance pins the new head to zero
        m = copy.deepcopy(model)
        m.config_.adapt.offset_var = var
        m.adapt(one)
        norms[var] = float(m.net_.user_offsets[m.user_index_[user]].abs().sum())
    assert norms[0.0] > 100 * norms[1e-8], norms
