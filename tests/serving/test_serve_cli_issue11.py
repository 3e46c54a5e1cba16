"""The command line of issue 11: serve flags (checked before anything is served), score / export --normalize."""

from __future__ import annotations

import json

import pytest

from palrm import PALRewardModel
from palrm.cli import main


@pytest.mark.parametrize("flags, needle", [
    (["--max-batch-tokens", "0"], "--max-batch-tokens 0"),
    (["--prompt-cache", "-1"], "--prompt-cache -1"),
    (["--poll-interval", "0"], "--poll-interval"),
    (["--store", "mysql://db/users"], "postgresql://"),
    (["--encoder-backend", "onnx"], "sentence-transformers"),  # the tiny model uses the hashing encoder
])
def test_bad_serve_flags_fail_before_serving(model_dir, tmp_path, capsys, flags, needle):
    args = ["serve", str(model_dir), "--port", "0", *flags]
    if "--store" not in flags:
        args += ["--store", str(tmp_path / "users.sqlite")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err


def test_score_and_export_normalize(model_dir, tmp_path, capsys):
    model = PALRewardModel.load(model_dir)
    responses = ["I love cats, answer 3", "Dogs are the best, reply 4"]
    base = ["score", "--model", str(model_dir), "--user", "user0", "--prompt", "Which pet?", "--json"]
    for r in responses:
        base += ["--response", r]
    assert main(base) == 0
    raw = [row["reward"] for row in json.loads(capsys.readouterr().out)]
    assert main([*base, "--normalize"]) == 0
    norm = [row["reward"] for row in json.loads(capsys.readouterr().out)]
    assert raw == pytest.approx(model.reward("user0", "Which pet?", responses), abs=1e-5)
    assert norm == pytest.approx(model.reward("user0", "Which pet?", responses, normalize=True), abs=1e-5)
    assert main(["export", str(model_dir), "--user", "user0", "-o", str(tmp_path / "rm"), "--normalize"]) == 0
    assert "normalised" in capsys.readouterr().out
    meta = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert meta["normalize"] is True and meta["reward_normalization"] == model.reward_stats_.to_dict()
