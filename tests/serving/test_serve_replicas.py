"""Two `palrm serve` replicas on one PostgreSQL user store (a private cluster): shared users,
durability under SIGKILL, and start-up failures."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.serving.helpers import SRC, Server, adapt_storm_then_kill, free_port

pytestmark = pytest.mark.slow

PROMPT = "Which pet?"
DOG_FAN_PAIRS = [{"prompt": PROMPT, "chosen": f"Dogs are the best, reply {i}", "rejected": f"I love cats, answer {i}"}
                 for i in range(6)]


def wait_for_user(srv: Server, user: str, version: int, timeout: float = 15.0) -> dict:
    """The user's record on `srv` once it has `version` (replicas poll the store every 0.2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        got = srv.client.get(f"/v1/users/{user}")
        if got.status_code == 200 and got.json()["version"] >= version:
            return got.json()
        if time.monotonic() > deadline:
            raise AssertionError(f"user {user} v{version} never reached the other replica: {got.status_code} {got.text}")
        time.sleep(0.05)


def test_a_user_adapted_on_one_replica_is_served_by_the_other(model_dir, pg_url, tmp_path):
    a = Server(model_dir, "--store", pg_url, log=tmp_path / "a.log")
    b = Server(model_dir, "--store", pg_url, log=tmp_path / "b.log")
    try:
        assert b.client.get("/v1/users/newbie").status_code == 404
        out = a.client.post("/v1/users/newbie/adapt", json={"pairs": DOG_FAN_PAIRS})
        assert out.status_code == 200, out.text
        seen = wait_for_user(b, "newbie", 1)
        assert seen["weights"] == pytest.approx(out.json()["weights"], abs=1e-7) and seen["source"] == "store"
        item = {"items": [{"user_id": "newbie", "prompt": PROMPT, "response": "Dogs are the best, reply 9"}]}
        ra, rb = a.client.post("/v1/reward", json=item), b.client.post("/v1/reward", json=item)
        assert ra.status_code == rb.status_code == 200 and ra.json() == rb.json()
        # more data through the other replica: it re-fits on all of the user's pairs, and a sees it
        again = b.client.post("/v1/users/newbie/adapt", json={"pairs": DOG_FAN_PAIRS[:2]})
        assert again.status_code == 200 and again.json()["version"] == 2 and again.json()["n_pairs"] == 8
        assert wait_for_user(a, "newbie", 2)["weights"] == pytest.approx(again.json()["weights"], abs=1e-7)
        health = a.client.get("/healthz").json()
        assert health["store"]["kind"] == "postgresql" and health["store"]["location"] == pg_url
    finally:
        a.stop()
        b.stop()


def test_sigkill_during_an_adapt_storm_loses_no_acknowledged_user(model_dir, pg_url, tmp_path):
    a = Server(model_dir, "--store", pg_url, log=tmp_path / "a.log")
    b = Server(model_dir, "--store", pg_url, log=tmp_path / "b.log")
    acked, _ = adapt_storm_then_kill(a, DOG_FAN_PAIRS, workers=6, min_acked=30)
    assert len(acked) >= 30
    try:
        for user, out in acked.items():  # the surviving replica serves every acknowledged user
            got = wait_for_user(b, user, out["version"])
            assert got["weights"] == pytest.approx(out["weights"], abs=1e-7), user
        fresh = Server(model_dir, "--store", pg_url, log=tmp_path / "c.log")  # and a new replica loads them at start
        try:
            for user, out in acked.items():
                got = fresh.client.get(f"/v1/users/{user}")
                assert got.status_code == 200 and got.json()["weights"] == pytest.approx(out["weights"], abs=1e-7)
        finally:
            fresh.stop()
    finally:
        b.stop()


def test_unreachable_store_fails_at_start_up_with_one_line(model_dir):
    url = f"postgresql://palrm:s3cret-pw@127.0.0.1:{free_port()}/palrm"
    env = {"PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "palrm", "serve", str(model_dir), "--store", url, "--port", str(free_port())],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot be reached" in lines[0] and "127.0.0.1" in lines[0], proc.stderr
    assert "s3cret-pw" not in proc.stderr


def test_a_poll_that_finds_nothing_new_leaves_the_model_thread_alone(model_dir, pg_url):
    """The change poll's query runs on the store thread: while the model thread is busy (a reward batch), an
    empty poll still completes; rows another replica wrote wait for the model thread and are applied there."""
    import asyncio
    import threading

    from palrm.serve.engine import RewardEngine, ServeSettings

    reader = RewardEngine(model_dir, ServeSettings(store_url=pg_url))
    writer = RewardEngine(model_dir, ServeSettings(store_url=pg_url))
    release = threading.Event()

    async def run():
        busy = asyncio.ensure_future(reader.run_model(release.wait, 30))  # the model thread is taken
        try:
            assert await asyncio.wait_for(reader.poll_store(), 10) == 0  # nothing new: answered without it
            writer.adapt_sync("dog-fan", DOG_FAN_PAIRS)
            poll = asyncio.ensure_future(reader.poll_store())
            await asyncio.sleep(0.5)
            assert not poll.done()  # the row waits for the model thread
        finally:
            release.set()
        assert await asyncio.wait_for(poll, 10) == 1 and await busy
        assert await asyncio.wait_for(reader.poll_store(), 10) == 0  # the cursor moved past it

    asyncio.run(run())
    assert reader.state.user_logits("dog-fan").tolist() == writer.state.user_logits("dog-fan").tolist()
    for engine in (reader, writer):
        engine.executor.shutdown()
        engine.store.close()
