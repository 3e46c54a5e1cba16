"""Every CLI subcommand, run in-process through palrm.cli.main."""

import json

import pytest

from palrm.cli import main

COMMANDS = ["train", "evaluate", "adapt", "score", "quickstart", "export", "serve", "data", "bench"]
FAST = ["--encoder", "hashing", "--epochs", "15", "--no-progress", "--k", "2"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_answers_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: palrm " + command in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "train" in capsys.readouterr().out


@pytest.fixture
def trained(tmp_path, text_pairs_file, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(text_pairs_file), "--output-dir", str(run), *FAST]) == 0
    capsys.readouterr()
    return run


def test_train_writes_a_complete_run_directory(trained):
    for name in ("config.yaml", "train_log.jsonl", "metrics.json", "model/config.json", "model/model.safetensors", "model/users.json"):
        assert (trained / name).is_file(), name
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] > 0.9


def test_evaluate_json(trained, text_pairs_file, capsys):
    assert main(["evaluate", "--model", str(trained / "model"), "--data", str(text_pairs_file), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"accuracy", "log_loss", "user_mean_accuracy", "n_pairs"} <= set(metrics)
    assert metrics["accuracy"] > 0.9 and metrics["n_pairs"] == 360


def test_adapt_onboards_a_new_user_then_score(trained, tmp_path, capsys):
    from tests.conftest import text_pairs_frame

    new = text_pairs_frame(n_users=2, pairs_per_user=6, seed=1)
    new["user_id"] = new["user_id"].map({"user0": "alice", "user1": "bob"})
    path = tmp_path / "new.csv"
    new.to_csv(path, index=False)
    model = trained / "model"
    assert main(["score", "--model", str(model), "--user", "alice", "--response", "x"]) == 2
    assert "unknown user 'alice'" in capsys.readouterr().err
    assert main(["adapt", "--model", str(model), "--data", str(path), "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(out["new_users"]) == ["alice", "bob"] and len(out["weights"]["alice"]) == 2
    assert main(["score", "--model", str(model), "--user", "alice", "--prompt", "Which pet?",
                 "--response", "I love cats, answer 1", "--response", "Dogs are the best, reply 2", "--json"]) == 0
    rewards = [r["reward"] for r in json.loads(capsys.readouterr().out)]
    assert rewards[0] > rewards[1]  # alice (even user) prefers cats
    assert main(["score", "--model", str(model), "--population", "--response", "a"]) == 0


def test_score_from_file(trained, tmp_path, capsys):
    path = tmp_path / "to_score.jsonl"
    path.write_text('{"user_id": "user1", "prompt": "Which pet?", "response": "Dogs are the best, reply 1"}\n'
                    '{"user_id": "user1", "prompt": "Which pet?", "response": "I love cats, answer 1"}\n')
    assert main(["score", "--model", str(trained / "model"), "--input", str(path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["reward"] > rows[1]["reward"]


def test_config_file_and_overrides_report_every_problem(tmp_path, text_pairs_file, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  kind: pal-z\n  k: 0\ntrain:\n  epoch: 3\n")
    code = main(["train", "--data", str(text_pairs_file), "--config", str(cfg), "--set", "model.d=-1", "--set", "broken", "-o", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2
    for needle in ("model.kind", "model.k", "train.epoch", "model.d", "--set 'broken'"):
        assert needle in err, needle
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_yaml_config_is_used(tmp_path, text_pairs_file):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  kind: pal-a\n  k: 2\n  hidden: [16]\ntrain:\n  epochs: 3\nencoder:\n  spec: hashing\n")
    assert main(["train", "--data", str(text_pairs_file), "--config", str(cfg), "-o", str(tmp_path / "r"), "--no-progress"]) == 0
    saved = json.loads((tmp_path / "r" / "model" / "config.json").read_text())
    assert saved["config"]["model"]["kind"] == "pal-a" and saved["config"]["model"]["hidden"] == [16]


def test_bad_data_is_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"user": "a", "prompt": "p", "chosen": "x", "rejected": "y"}\n')
    assert main(["train", "--data", str(bad), "-o", str(tmp_path / "r"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "user_id" in err and "--user-column" in err and "Traceback" not in err
    assert main(["train", "--data", str(bad), "--user-column", "user", "-o", str(tmp_path / "r"), *FAST]) == 0


def test_missing_model_dir(tmp_path, text_pairs_file, capsys):
    assert main(["evaluate", "--model", str(tmp_path / "nope"), "--data", str(text_pairs_file)]) == 2
    assert "not a palrm model directory" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path):
    from palrm.errors import ModelFileError

    with pytest.raises(ModelFileError):
        main(["--debug", "evaluate", "--model", str(tmp_path), "--data", "x.jsonl"])


def test_quickstart_small_with_hashing_encoder(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--small", "--encoder", "hashing", "-o", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["unseen"]["pal"]) == {"1", "2", "5", "10", "20", "50"}
    assert results["seen"]["pal"]["accuracy"] > results["seen"]["btl"]["accuracy"]
    assert (out / "few_shot.png").stat().st_size > 1000
    assert "PAL" in capsys.readouterr().out


def test_adapt_honours_a_split_column(trained, tmp_path, capsys):
    from tests.conftest import text_pairs_frame

    new = text_pairs_frame(n_users=2, pairs_per_user=10, seed=2)
    new["user_id"] = new["user_id"].map({"user0": "carol", "user1": "dave"})
    new["split"] = ["train"] * 4 + ["test"] * 6 + ["train"] * 4 + ["test"] * 6
    path = tmp_path / "new.jsonl"
    new.to_json(path, orient="records", lines=True)
    assert main(["adapt", "--model", str(trained / "model"), "--data", str(path), "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_pairs"] == 8  # only the split=train rows were used to adapt
    assert out["held_out"]["n_pairs"] == 12 and out["held_out"]["accuracy"] > 0.9
    new["split"] = "test"
    new.to_json(path, orient="records", lines=True)
    assert main(["adapt", "--model", str(trained / "model"), "--data", str(path)]) == 2
    assert "nothing is left to adapt on" in capsys.readouterr().err
