"""Every CLI subcommand, run in-process through palrm.cli.main."""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from palrm.cli import main

COMMANDS = ["train", "evaluate", "adapt", "score", "report", "quickstart", "export", "serve", "onboard", "data", "bench"]
SRC = str(Path(__file__).resolve().parents[2] / "src")
FAST = ["--encoder", "hashing", "--epochs", "15", "--no-progress", "--k", "2"]


def test_every_command_is_registered_and_answers_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    listed = re.findall(r"^    (\w+)", capsys.readouterr().out, flags=re.M)
    assert listed == COMMANDS  # every command module is registered, in this order, and nothing else
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0, command
        capsys.readouterr()


@pytest.mark.parametrize("command", ["train", "evaluate", "adapt", "score", "export", "serve"])
def test_commands_that_load_or_train_a_model_take_device(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--device DEVICE" in capsys.readouterr().out


def test_mixture_flags_are_the_same_for_score_and_export(capsys):
    def who(command):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        return [" ".join(m) for m in re.findall(r"^\s+(--user ID|--population|--group K|--weights W1,...,WK)\s+(\S.*)$", text, flags=re.M)]

    assert len(who("score")) == 4 and who("score") == who("export")


def test_python_dash_m_entry_points_run_the_cli():
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for module, usage in (("palrm", "usage: palrm [-h]"), ("palrm.bench", "usage: palrm bench")):
        out = subprocess.run([sys.executable, "-m", module, "--help"], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and usage in out.stdout, (module, out.stderr)


def test_argparse_lives_only_in_the_cli_package():
    package = Path(SRC, "palrm")
    offenders = [str(path.relative_to(package)) for path in package.rglob("*.py") if path.relative_to(package).parts[0] != "cli"
                 and re.search(r"^\s*(import argparse|from argparse )|add_argument\(|\._actions", path.read_text(), flags=re.M)]
    assert offenders == []
    cli_sources = "\n".join(p.read_text() for p in Path(SRC, "palrm", "cli").glob("*.py"))
    assert "._actions" not in cli_sources  # no patching of parser internals
    assert not re.search(r"^\s*(from|import) palrm\.cli", Path(SRC, "palrm", "export.py").read_text(), flags=re.M)  # no cycle


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
    assert set(results["unseen"]["pal"]) == {"0", "1", "2", "5", "10", "20", "50"}
    assert results["seen"]["pal"]["accuracy"] > results["seen"]["btl"]["accuracy"]
    assert (out / "few_shot.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "PAL" in printed and "selected: " + results["selected"] in printed  # the selection table
    selection = json.loads((out / "selection.json").read_text())
    assert selection["winner"] == results["selected"] and len(selection["candidates"]) > 1


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


def test_adapt_on_a_btl_model_with_a_split_column_reports_btl_accuracy(tmp_path, text_pairs_file, capsys):
    # regression (issue 9): BTL has no per-user parameters; adapt used to raise unknown-user here
    from tests.conftest import text_pairs_frame

    run = tmp_path / "btl"
    assert main(["train", "--data", str(text_pairs_file), "--kind", "btl", "-o", str(run), *FAST]) == 0
    new = text_pairs_frame(n_users=2, pairs_per_user=10, seed=2)
    new["user_id"] = new["user_id"].map({"user0": "carol", "user1": "dave"})
    new["split"] = ["train"] * 4 + ["test"] * 6 + ["train"] * 4 + ["test"] * 6
    new.to_json(tmp_path / "new.jsonl", orient="records", lines=True)
    capsys.readouterr()
    assert main(["adapt", "--model", str(run / "model"), "--data", str(tmp_path / "new.jsonl"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["held_out"]["n_pairs"] == 12 and out["held_out"]["unknown_users"]["n_pairs"] == 0
    assert out["weights"] == {}


def test_btl_with_personal_heads_trains_adapts_and_scores_from_the_cli(tmp_path, text_pairs_file, capsys):
    # BTL + input offset (per-user heads on the shared reward): new users are learned, unlike plain BTL
    from tests.conftest import text_pairs_frame

    run = tmp_path / "heads"
    assert main(["train", "--data", str(text_pairs_file), "--kind", "btl", "--offset", "input", "-o", str(run),
                 *FAST]) == 0
    assert "trained btl + input offset on" in capsys.readouterr().out
    new = text_pairs_frame(n_users=2, pairs_per_user=10, seed=2)
    new["user_id"] = new["user_id"].map({"user0": "carol", "user1": "dave"})
    new["split"] = (["train"] * 6 + ["test"] * 4) * 2
    new.to_json(tmp_path / "new.jsonl", orient="records", lines=True)
    assert main(["adapt", "--model", str(run / "model"), "--data", str(tmp_path / "new.jsonl"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["new_users"] == ["carol", "dave"] and out["weights"]["carol"] == [1.0]
    assert out["held_out"]["n_pairs"] == 8 and out["held_out"]["unknown_users"]["n_pairs"] == 0
    from palrm import PALRewardModel

    model = PALRewardModel.load(run / "model")
    offsets = model.net_.user_offsets[[model.user_index_["carol"], model.user_index_["dave"]]]
    assert (offsets.abs().sum(-1) > 0).all()  # each new user got a personal head from its 6 pairs


def test_train_k_auto_prints_and_saves_the_selection(tmp_path, text_pairs_file, capsys):
    run = tmp_path / "auto"
    assert main(["train", "--data", str(text_pairs_file), "-o", str(run), "--set", "model.auto_ks=[1,2]",
                 "--set", "model.auto_offsets=[none]", *FAST[:-2]]) == 0
    printed = capsys.readouterr().out
    selection = json.loads((run / "selection.json").read_text())
    stage1 = [c["name"] for c in selection["candidates"] if c["stage"] == 1]
    assert stage1 == ["btl", "pal-b K=1", "pal-b K=2"]
    # the regularisation stage: the stage-1 winner with the 3 other (weight decay, dropout) pairs
    stage2 = [c for c in selection["candidates"] if c["stage"] == 2]
    assert len(stage2) == 3 and all(" wd=" in c["name"] for c in stage2)
    assert "selected: " + selection["winner"] in printed
    config = json.loads((run / "model" / "config.json").read_text())["config"]
    assert config["model"]["k"] == selection["overrides"]["model.k"]
    chosen = selection["regularization"]["chosen"]  # the final values are in the saved config
    assert config["train"]["weight_decay"] == chosen["weight_decay"] and config["model"]["dropout"] == chosen["dropout"]
    assert len(selection["heldout_user_ids"]) == selection["heldout_users"] > 0


def test_train_fixed_k_chooses_prints_and_saves_the_onboarding_prior(tmp_path, text_pairs_file, capsys):
    run = tmp_path / "k2"
    assert main(["train", "--data", str(text_pairs_file), "-o", str(run), *FAST]) == 0
    printed = capsys.readouterr().out
    meta = json.loads((run / "model" / "config.json").read_text())
    strength = meta["config"]["adapt"]["prior_strength"]
    assert isinstance(strength, float) and meta["prior_choice"]["strength"] == strength
    assert re.search(r"^onboarding prior: gaussian, strength [0-9.]+( = maximum likelihood)? "
                     r"\(chosen on \d+ known users' validation pairs\)$", printed, flags=re.M), printed


def test_train_with_val_never_trains_on_split_test_rows(tmp_path, capsys):
    # regression (issue 8, defect 4): with --val, the split column of --data was ignored and its
    # split=test rows were trained on
    from tests.conftest import text_pairs_frame

    data = text_pairs_frame(n_users=12, pairs_per_user=30, seed=0)
    data["split"] = (["train"] * 20 + ["test"] * 10) * 12
    val = text_pairs_frame(n_users=12, pairs_per_user=5, seed=4)
    val["split"] = "test"  # a split column in the --val file: every row still only validates
    data.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    val.to_json(tmp_path / "v.jsonl", orient="records", lines=True)
    assert main(["train", "--data", str(tmp_path / "d.jsonl"), "--val", str(tmp_path / "v.jsonl"), "-o", str(tmp_path / "r"),
                 "--json", *FAST]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["train"]["n_pairs"] == 240  # the split=train rows only
    assert metrics["test"]["n_pairs"] == 120  # the split=test rows are reported, not trained on
    assert metrics["validation"]["n_pairs"] == 60


def test_export_never_replaces_a_trained_model(trained, text_pairs_file, tmp_path, capsys):
    # regression (issue 8, defect 5): `palrm export MODEL_DIR -o MODEL_DIR` replaced the trained model
    model = trained / "model"
    digest = lambda d: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}  # noqa: E731
    before = digest(model)
    assert main(["export", str(model), "--user", "user0", "-o", str(model)]) == 2
    assert "is the model being exported" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"not": "an export"}')
    assert main(["export", str(model), "--user", "user0", "-o", str(other)]) == 2
    assert "not an earlier scalar export" in capsys.readouterr().err
    assert json.loads((other / "config.json").read_text()) == {"not": "an export"}
    assert digest(model) == before
    assert main(["evaluate", "--model", str(model), "--data", str(text_pairs_file), "--json"]) == 0
    capsys.readouterr()
    rm = tmp_path / "rm"  # an earlier export may be replaced
    assert main(["export", str(model), "--user", "user0", "-o", str(rm)]) == 0
    assert main(["export", str(model), "--user", "user1", "-o", str(rm)]) == 0
    assert json.loads((rm / "config.json").read_text())["mixture"]["user_id"] == "user1"


def test_evaluate_adapt_and_score_load_the_model_on_the_given_device(trained, text_pairs_file, tmp_path, monkeypatch, capsys):
    # issue 8, defect 2 (CLI part): evaluate, adapt and score had no --device
    from palrm import PALRewardModel

    seen = []
    real_load = PALRewardModel.load.__func__

    def spy(cls, directory, *, device=None):
        seen.append(device)
        return real_load(cls, directory, device=device)

    monkeypatch.setattr(PALRewardModel, "load", classmethod(spy))
    model = str(trained / "model")
    assert main(["evaluate", "--model", model, "--data", str(text_pairs_file), "--device", "cpu:0", "--json"]) == 0
    assert main(["adapt", "--model", model, "--data", str(text_pairs_file), "--device", "cpu:0", "--json",
                 "--output", str(tmp_path / "adapted"), "--steps", "5", "--no-progress"]) == 0
    assert main(["score", "--model", model, "--user", "user0", "--response", "x", "--device", "cpu:0"]) == 0
    assert seen == ["cpu:0"] * 3
    capsys.readouterr()


def test_train_passes_every_shortcut_to_the_config():
    from palrm.cli import build_parser
    from palrm.cli.flags import config_from_args

    args = build_parser().parse_args(["train", "--data", "x.jsonl", "--device", "cuda:1", "--k", "5", "--lr", "0.5",
                                      "--batch-size", "7", "--encoder", "hashing:64", "--grad-accum", "7",
                                      "--checkpoint-every", "3", "--set", "model.hidden=[8]", "--no-progress"])
    cfg = config_from_args(args, ("grad_accum", "checkpoint_every"))
    assert (cfg.train.device, cfg.model.k, cfg.train.lr, cfg.train.batch_size, cfg.encoder.spec) == ("cuda:1", 5, 0.5, 7, "hashing:64")
    assert (cfg.scale.grad_accum_steps, cfg.scale.checkpoint_every, cfg.model.hidden, cfg.train.progress) == (7, 3, [8], False)
