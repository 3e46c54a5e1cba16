"""`palrm onboard`: scripted replies, a real terminal (tmux), and a crash in the middle."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from palrm import PALRewardModel
from palrm.cli import main
from tests.conftest import text_pairs_frame


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("onboard")
    PALRewardModel(kind="pal-a", k=2, encoder="hashing", epochs=20, progress=False, seed=0).fit(text_pairs_frame()).save(root / "model")
    text_pairs_frame(n_users=1, pairs_per_user=12, seed=3).drop(columns="user_id").to_json(root / "pool.jsonl", orient="records", lines=True)
    return root


def _copy(setup, tmp_path) -> Path:
    shutil.copytree(setup / "model", tmp_path / "model")
    shutil.copy(setup / "pool.jsonl", tmp_path / "pool.jsonl")
    return tmp_path


def _session(d: Path) -> list[dict]:
    p = d / "session.jsonl"
    return [json.loads(ln) for ln in p.read_text().splitlines()] if p.exists() else []


def test_scripted_replies_and_clear_messages_for_bad_ones(setup, tmp_path, capsys):
    d = _copy(setup, tmp_path)
    (d / "ans.txt").write_text('1\nx\n{"pair": 99, "answer": "1"}\ns\n2\n')
    rc = main(["onboard", str(d / "model"), "--user", "alice", "--pool", str(d / "pool.jsonl"), "--answers", str(d / "ans.txt"),
               "--session", str(d / "session.jsonl")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "unknown answer 'x': type 1 (the first response is better), 2 (the second), s (skip) or q (quit)" in out
    assert "pool pair 99 not found: the pool has 12 pairs (0..11)" in out
    answers = _session(d)
    assert len(answers) == 2 and all(a["user_id"] == "alice" for a in answers)
    model = PALRewardModel.load(d / "model")
    assert model.user_posterior("alice").n_pairs == 2


def test_empty_pool_and_missing_pool_are_clear(setup, tmp_path, capsys):
    d = _copy(setup, tmp_path)
    (d / "empty.jsonl").write_text("")
    assert main(["onboard", str(d / "model"), "--user", "a", "--pool", str(d / "empty.jsonl")]) != 0
    assert "the pool is empty" in capsys.readouterr().err
    assert main(["onboard", str(d / "model"), "--user", "a", "--pool", str(d / "nope.jsonl")]) != 0
    assert "no such file" in capsys.readouterr().err


tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install -y tmux)")


class Terminal:
    """`palrm onboard` running in a detached tmux session (a real pseudo-terminal)."""

    def __init__(self, name: str, command: list[str], cwd: Path) -> None:
        self.name = name
        env = " ".join(f"{k}={v}" for k, v in (("PYTHONPATH", os.environ.get("PYTHONPATH", "")), ("HF_HUB_OFFLINE", "1")))
        script = cwd / f"{name}.sh"
        script.write_text(f"cd {cwd} && env {env} {' '.join(command)}; echo EXITED-$?; sleep 600\n")
        subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "200", "-y", "50", "bash", str(script)], check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name, "-S", "-200"], capture_output=True, text=True).stdout

    def wait_for(self, text: str, count: int = 1, timeout: float = 90.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            screen = self.screen()
            if screen.count(text) >= count:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} x{count} not on the screen after {timeout} s:\n{self.screen()}")

    def send(self, keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, keys, "Enter"], check=True)

    def pane_pid(self) -> int:
        return int(subprocess.run(["tmux", "list-panes", "-t", self.name, "-F", "#{pane_pid}"], capture_output=True, text=True).stdout.split()[0])

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def _onboard_command(d: Path) -> list[str]:
    return [str(Path(sys.executable).with_name("palrm")), "onboard", str(d / "model"), "--user", "bob", "--pool", str(d / "pool.jsonl"),
            "--session", str(d / "session.jsonl"), "--questions", "5"]


@pytest.mark.slow
@tmux
def test_interactive_session_under_tmux(setup, tmp_path):
    d = _copy(setup, tmp_path)
    term = Terminal(f"palrm-onboard-{os.getpid()}", _onboard_command(d), d)
    try:
        term.wait_for("[1/2/s/q] >")
        assert "1) " in term.screen() and "2) " in term.screen()
        term.send("1")
        term.wait_for("(1 answers; saved)")
        term.send("maybe")
        term.wait_for("unknown answer 'maybe'")
        term.wait_for("[1/2/s/q] >", count=3)
        term.send("s")
        term.wait_for("[1/2/s/q] >", count=4)
        term.send("2")
        term.wait_for("(2 answers; saved)")
        term.send("q")
        term.wait_for("EXITED-0")
    finally:
        term.close()
    assert len(_session(d)) == 2
    assert PALRewardModel.load(d / "model").user_posterior("bob").n_pairs == 2


@pytest.mark.slow
@tmux
def test_crash_in_the_middle_loses_no_saved_answer(setup, tmp_path):
    d = _copy(setup, tmp_path)
    term = Terminal(f"palrm-onboard-crash-{os.getpid()}", _onboard_command(d), d)
    try:
        term.wait_for("[1/2/s/q] >")
        term.send("1")
        term.wait_for("(1 answers; saved)")
        term.send("2")
        term.wait_for("(2 answers; saved)")
        term.wait_for("[1/2/s/q] >", count=3)
        kids = subprocess.run(["pgrep", "-P", str(term.pane_pid())], capture_output=True, text=True).stdout.split()
        for pid in kids:  # the palrm process under the pane's shell
            os.kill(int(pid), signal.SIGKILL)
        term.wait_for("EXITED-137")
    finally:
        term.close()
    saved = _session(d)
    assert len(saved) == 2
    model = PALRewardModel.load(d / "model")  # the model directory is whole, with both answers in it
    assert model.user_posterior("bob").n_pairs == 2
    (d / "quit.txt").write_text("q\n")
    proc = subprocess.run([*_onboard_command(d), "--answers", str(d / "quit.txt")], capture_output=True, text=True, cwd=d,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "resuming: 2 saved answers of bob" in proc.stdout
