"""`palrm train --memmap DIR`: planted synthetic users written chunk by chunk, trained by streaming."""

import json

import numpy as np
import pytest

from palrm import PALRewardModel
from palrm.cli import main
from palrm.data.memmap import MemmapPairWriter
from palrm.data.synthetic import build_synthetic


def _write(ds, pairs, directory, chunk=500):
    w = MemmapPairWriter(directory, n_pairs=len(pairs), n_users=len(pairs.user_ids), n_texts=len(pairs.texts),
                         dim=pairs.embeddings.shape[1])
    for start in range(0, len(pairs), chunk):  # chunk by chunk, as one would for data larger than memory
        sl = slice(start, start + chunk)
        w.write_pairs(start, user=pairs.user[sl], prompt=pairs.prompt[sl], chosen=pairs.chosen[sl], rejected=pairs.rejected[sl])
    w.write_embeddings(0, pairs.embeddings)
    w.write_user_ids(pairs.user_ids)
    return w.close()


def test_train_on_memmap_directory_then_score_known_users(tmp_path, capsys):
    from palrm.data.splits import split_pairs

    ds = build_synthetic(d=8, k=2, n_users=30, pairs_per_user=60, noise=0.5, seed=3)
    splits = split_pairs(ds.pairs, val_frac=0.2, test_frac=0.0, seed=0)
    train_dir, val_dir = _write(ds, splits.train, tmp_path / "train"), _write(ds, splits.validation, tmp_path / "val")
    run = tmp_path / "run"
    code = main(["train", "--memmap", str(train_dir), "--val-memmap", str(val_dir), "-o", str(run), "--kind", "pal-a",
                 "--k", "2", "--epochs", "15", "--no-progress", "--json"])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["history_last_epoch"]["val_accuracy"] > 0.8
    model = PALRewardModel.load(run / "model")
    assert model.users_ == list(ds.pairs.user_ids)
    # the streamed model scores the in-memory validation pairs as well as its training log says
    assert model.evaluate(splits.validation)["accuracy"] == pytest.approx(metrics["history_last_epoch"]["val_accuracy"], abs=0.02)
    r = model.reward_embeddings(ds.pairs.user_ids[0], None, ds.pairs.embeddings[:3])
    assert len(r) == 3 and np.all(np.isfinite(r))


def test_memmap_and_data_are_exclusive(tmp_path, capsys):
    assert main(["train", "--memmap", str(tmp_path), "--data", "x.jsonl", "-o", str(tmp_path / "r")]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["train", "--memmap", str(tmp_path / "missing"), "-o", str(tmp_path / "r")]) == 2
    assert "pairs.json" in capsys.readouterr().err
