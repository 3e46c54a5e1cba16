"""Helpers of the serving tests: a tiny text model (hashing encoder) and the real server in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
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
