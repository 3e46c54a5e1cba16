"""`palrm train` at scale in real subprocesses: torchrun with 2 CPU processes, and SIGKILL + --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import text_pairs_frame

SRC = str(Path(__file__).resolve().parents[2] / "src")
RARE = ["rare0", "rare1", "rare2", "rare3"]


def _env(tmp_path, **extra):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1",
           "PALRM_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    env.update(extra)
    return env


def _noisy_pairs(path: Path) -> Path:
    """Two disagreeing groups, 15% flipped labels, and 4 users with a single pair each."""
    frame = text_pairs_frame(n_users=16, pairs_per_user=40, seed=3)
    rng = np.random.default_rng(0)
    flip = rng.random(len(frame)) < 0.15
    frame.loc[flip, ["chosen", "rejected"]] = frame.loc[flip, ["rejected", "chosen"]].to_numpy()
    rare = frame.iloc[:4].copy()
    rare["user_id"] = RARE
    frame = pd.concat([frame, rare], ignore_index=True)
    frame.to_json(path, orient="records", lines=True)
    return path


def _run(args, env, check=True, timeout=240):
    """Run in a new session; on timeout kill the whole group (torchrun's workers too), then fail."""
    with subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            raise AssertionError(f"{args} timed out after {timeout} s:\n{out}\n{err}") from None
    proc = subprocess.CompletedProcess(args, p.returncode, out, err)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


TRAIN = ["train", "--encoder", "hashing:64", "--epochs", "4", "--batch-size", "32", "--no-progress", "--json",
         "--set", "train.patience=0", "--set", "model.hidden=[32]", "--val-frac", "0.2"]


@pytest.mark.slow
def test_two_process_torchrun_matches_one_process(tmp_path):
    data = _noisy_pairs(tmp_path / "pairs.jsonl")
    env = _env(tmp_path)
    one = _run([sys.executable, "-m", "palrm", *TRAIN, "--data", str(data), "-o", str(tmp_path / "one"),
                "--checkpoint-every", "1000"], env)
    two = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                "-m", "palrm", *TRAIN, "--data", str(data), "-o", str(tmp_path / "two")], env)
    m1, m2 = json.loads(one.stdout), json.loads(two.stdout[two.stdout.index("{"):])
    assert m1["world_size"] == 1 and m2["world_size"] == 2
    # Same global batches, gradients averaged by DDP: equal up to float reduction order.
    # Stated tolerance: validation accuracy within 0.01 (in practice identical), log-loss within 1e-4.
    assert 0.6 < m1["validation"]["accuracy"] < 1.0  # a set where accuracy means something
    assert abs(m1["validation"]["accuracy"] - m2["validation"]["accuracy"]) <= 0.01
    assert abs(m1["validation"]["log_loss"] - m2["validation"]["log_loss"]) <= 1e-4
    log1 = [json.loads(x) for x in (tmp_path / "one" / "train_log.jsonl").read_text().splitlines()]
    log2 = [json.loads(x) for x in (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()]
    assert len(log1) == len(log2) == 4  # one log, written by rank 0 only
    np.testing.assert_allclose([r["val_loss"] for r in log1], [r["val_loss"] for r in log2], rtol=1e-4)
    # one merged embedding cache written by both ranks
    shards = list((tmp_path / "cache").glob("*/shard-*.safetensors"))
    assert len(shards) == 1
    # users with one pair are seen by exactly one rank in each epoch, and are still learned (DDP all-reduces
    # the dense gradient of their logit rows): their weights equal the 1-process run's and left the initialisation
    from palrm import PALRewardModel
    from palrm.models import build_net

    a, b = PALRewardModel.load(tmp_path / "one" / "model"), PALRewardModel.load(tmp_path / "two" / "model")
    torch.manual_seed(a.config_.train.seed)
    init = torch.softmax(build_net(a.config_.model, a.input_dim_, len(a.users_)).user_logits.weight, -1).detach().numpy()
    for u in RARE:
        np.testing.assert_allclose(a.user_weights(u), b.user_weights(u), atol=1e-4)
        assert np.abs(b.user_weights(u) - init[b.user_index_[u]]).max() > 0.01, u


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    data = _noisy_pairs(tmp_path / "pairs.jsonl")
    env = _env(tmp_path)
    base = [sys.executable, "-m", "palrm", *TRAIN, "--data", str(data), "--checkpoint-every", "7"]
    _run([*base, "-o", str(tmp_path / "full")], env)
    # 526 training pairs / 32 = 17 steps per epoch: checkpoints at steps 7, 14, 17 (epoch end), 21, ...;
    # step 26 is killed mid-epoch 2, so the resume starts from the mid-epoch checkpoint of step 21.
    killed = _run([*base, "-o", str(tmp_path / "cut")], _env(tmp_path, PALRM_DEBUG_SIGKILL_AT_STEP="26"), check=False)
    assert killed.returncode == -9, killed.stderr
    state = json.loads((tmp_path / "cut" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 21 and state["next_batch"] > 0 and not state["finished"]
    assert not (tmp_path / "cut" / "model").exists()
    _run([sys.executable, "-m", "palrm", "train", "--resume", str(tmp_path / "cut"), "--no-progress", "--json"], env)
    from safetensors.torch import load_file

    full = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    cut = load_file(str(tmp_path / "cut" / "model" / "model.safetensors"))
    assert set(full) == set(cut)
    for key, value in full.items():  # bit-identical on the CPU (file bytes differ: metadata order is a hash map's)
        assert torch.equal(cut[key], value), key
    assert (tmp_path / "cut" / "train_log.jsonl").read_text().count("\n") == 4
    strip = lambda p: [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in p.read_text().splitlines()]  # noqa: E731
    assert strip(tmp_path / "cut" / "train_log.jsonl") == strip(tmp_path / "full" / "train_log.jsonl")


def test_resume_needs_a_run_directory(tmp_path, capsys):
    from palrm.cli import main

    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a resumable run directory" in capsys.readouterr().err
