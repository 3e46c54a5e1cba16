"""`palrm data NAME --out FILE`: files that `palrm train` reads back, clear errors otherwise."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from palrm.bench.report import replace_block
from palrm.cli import main
from palrm.data import load_pairs


def test_synthetic_writes_splits_groups_unseen_and_embeddings(tmp_path, capsys):
    out = tmp_path / "syn.jsonl"
    args = ["data", "synthetic", "--out", str(out), "--opt", "n_users=12", "--opt", "pairs_per_user=20",
            "--opt", "n_unseen_users=4", "--opt", "d=4", "--k", "2", "--shots", "5", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    frame = pd.read_json(out, lines=True)
    assert set(frame.columns) >= {"user_id", "prompt", "chosen", "rejected", "split", "group"}
    assert set(frame["split"]) == {"train", "validation", "test"}
    assert frame["user_id"].nunique() == 12 and len(frame) == 240
    unseen = pd.read_json(result["unseen"], lines=True)
    assert unseen["user_id"].nunique() == 4
    assert (unseen[unseen["split"] == "train"].groupby("user_id").size() == 5).all()
    assert set(unseen["user_id"]).isdisjoint(frame["user_id"])
    # round trip: the pairs load back with the written embeddings, ready for palrm train
    data = load_pairs(out, embeddings=result["embeddings"])
    assert data.embeddings.shape[1] == 4 and len(data) == 240 and data.split is not None


def test_train_reads_what_data_wrote(tmp_path, capsys):
    out = tmp_path / "syn.jsonl"
    assert main(["data", "synthetic", "--out", str(out), "--opt", "n_users=10", "--opt", "pairs_per_user=20",
                 "--opt", "d=4", "--json"]) == 0
    emb = json.loads(capsys.readouterr().out)["embeddings"]
    run = tmp_path / "run"
    assert main(["train", "--data", str(out), "--embeddings", emb, "--output-dir", str(run), "--kind", "pal-a",
                 "--epochs", "2", "--no-progress", "--json"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["n_pairs"] > 0  # the split column's test rows were honoured


def test_persona_has_texts_and_no_embeddings_file(tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert main(["data", "persona", "--out", str(out), "--opt", "n_seen_users=6", "--opt", "n_unseen_users=3",
                 "--opt", "pairs_per_user=10", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["embeddings"] is None and result["unseen"].endswith("p.unseen.csv")
    frame = pd.read_csv(out)
    assert frame["chosen"].str.len().min() > 3 and frame["group"].notna().all()


@pytest.mark.parametrize(
    "args, message",
    [
        (["synthetic", "--opt", "bogus=1"], "unknown option(s) bogus; accepted:"),
        (["synthetic", "--opt", "novalue"], "expected KEY=VALUE"),
        (["tldr"], "needs --source"),
        (["pickafilter"], "needs --source"),
        (["paircomp"], "needs --name"),
        (["tldr", "--source", "/nonexistent/comparisons"], "nonexistent"),
    ],
)
def test_bad_requests_exit_2_with_one_clear_line(tmp_path, capsys, args, message):
    assert main(["data", args[0], "--out", str(tmp_path / "x.jsonl"), *args[1:]]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bad_output_suffix(tmp_path, capsys):
    assert main(["data", "synthetic", "--out", str(tmp_path / "x.txt")]) == 2
    assert ".jsonl" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["data", "bench"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: palrm " + command in capsys.readouterr().out


def test_docs_blocks_are_replaced_in_place_and_appended_when_missing():
    text = "# Bench\nhand-written\n<!-- palrm-bench:paper:start -->\nold\n<!-- palrm-bench:paper:end -->\ntail\n"
    new = replace_block(text, "paper", "NEW TABLE")
    assert "old" not in new and "NEW TABLE" in new and new.startswith("# Bench\nhand-written\n") and new.endswith("tail\n")
    appended = replace_block(new, "perf", "PERF")
    assert appended.startswith(new.rstrip()) and "<!-- palrm-bench:perf:start -->\nPERF\n<!-- palrm-bench:perf:end -->" in appended
    assert replace_block(appended, "perf", "PERF2").count("palrm-bench:perf:start") == 1
