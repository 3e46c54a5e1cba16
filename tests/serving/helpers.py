"""Helpers of the serving tests: a tiny text model (hashing encoder), an in-process engine, the real server in a
subprocess, and an adapt storm that SIGKILLs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

import palrm
from tests.conftest import text_pairs_frame

SRC = str(Path(palrm.__file__).resolve().parents[1])


def train_tiny_model(directory: Path, *, kind: str = "pal-b", k: int = 2, seed: int = 0) -> Path:
    """A PAL model on the cats/dogs pair table (two groups that disagree), hashing encoder: ~2 s."""
    from palrm import PALRewardModel

    frame = text_pairs_frame(n_users=8, pairs_per_user=20, seed=seed)
    model = PALRewardModel(kind=kind, k=k, encoder="hashing:256", epochs=8, seed=seed, progress=False).fit(frame)
    model.save(directory)
    return directory


def make_engine(model_dir: Path, tmp_path: Path, **settings):
    """A `RewardEngine` on `model_dir` with its SQLite user store in `tmp_path` (`settings`: more `ServeSettings`)."""
    from palrm.serve.engine import RewardEngine, ServeSettings

    return RewardEngine(model_dir, ServeSettings(store_path=tmp_path / "users.sqlite", **settings))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`palrm serve` in a subprocess on a loopback port."""

    def __init__(self, model_dir: Path, *args: str, token: str | None = None, log: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]), HF_HUB_OFFLINE="1")
        self.log = log
        out = open(log, "ab") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-m", "palrm", "serve", str(model_dir), "--port", str(self.port), *args],
                                     env=env, stdout=out, stderr=out)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=60)
        self._wait()

    def _wait(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text()[-3000:] if self.log and self.log.exists() else ""
                raise RuntimeError(f"palrm serve exited with {self.proc.returncode}:\n{tail}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("palrm serve did not come up")

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers run."""
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.client.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.client.close()


def adapt_storm_then_kill(srv: Server, pairs: list[dict], *, workers: int, min_acked: int,
                          shared_user: str | None = None) -> tuple[dict[str, dict], list[dict]]:
    """Adapt users on `srv` from `workers` threads, SIGKILL it in the middle, and return what it acknowledged.

    Worker w's i-th adapt is of a new user `storm-w-i` (or, when `shared_user` is given, of `shared_user` for
    every third one) on the first 1 + (w + i) % len(pairs) of `pairs`. The server is killed once `min_acked`
    new users were acknowledged (or after 60 s). Returns (the answer of each acknowledged new user, the
    acknowledged answers of `shared_user` in the order they came).
    """
    acked: dict[str, dict] = {}
    shared: list[dict] = []
    lock = threading.Lock()
    stop = threading.Event()

    def storm(worker: int) -> None:
        client = httpx.Client(base_url=srv.url, timeout=30)
        i = 0
        while not stop.is_set():
            user = f"storm-{worker}-{i}" if shared_user is None or i % 3 else shared_user
            try:
                r = client.post(f"/v1/users/{user}/adapt", json={"pairs": pairs[: 1 + (worker + i) % len(pairs)]})
            except httpx.HTTPError:
                break  # the server is gone
            if r.status_code == 200:
                with lock:
                    (shared.append(r.json()) if user == shared_user else acked.__setitem__(user, r.json()))
            i += 1
        client.close()

    threads = [threading.Thread(target=storm, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < min_acked and time.monotonic() < deadline:
        time.sleep(0.05)
    srv.kill()  # SIGKILL in the middle of the storm
    stop.set()
    for t in threads:
        t.join(timeout=60)
    return acked, shared
