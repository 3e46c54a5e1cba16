"""Load benchmark of `palrm serve`: loopback only, bounded in request count and time.

Starts the real server (a subprocess on 127.0.0.1, a free port) once with micro-batching and once
without, and drives each with N concurrent clients (asyncio + httpx) sending single-item
POST /v1/reward requests for known users until M requests are done. Reports requests/s, p50 and
p99 latency and the error count (anything but HTTP 200, or a transport error), prints a table and
writes JSON.

    python benchmarks/serve_load.py                      # 64 clients, 5000 requests per mode, MiniLM
    python benchmarks/serve_load.py --model runs/quickstart/model
    python benchmarks/serve_load.py --encoder hashing --requests 2000

Without --model it trains a small PAL-B model on a two-group toy table with the chosen encoder.
Timings on a shared machine are noisy; run it when the machine is otherwise idle.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def toy_model(directory: Path, encoder: str) -> tuple[Path, list[str]]:
    import pandas as pd

    from palrm import PALRewardModel

    rng = np.random.default_rng(0)
    cats = [f"I love cats, answer {i}" for i in range(20)]
    dogs = [f"Dogs are the best, reply {i}" for i in range(20)]
    rows = []
    for u in range(16):
        for _ in range(20):
            c, d = cats[rng.integers(20)], dogs[rng.integers(20)]
            chosen, rejected = (c, d) if u % 2 == 0 else (d, c)
            rows.append({"user_id": f"user{u}", "prompt": "Which pet?", "chosen": chosen, "rejected": rejected})
    model = PALRewardModel(kind="pal-b", k=2, encoder=encoder, epochs=10, progress=False).fit(pd.DataFrame(rows))
    model.save(directory)
    return directory, list(model.users_)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, store: Path, batching: bool, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "palrm", "serve", str(model), "--host", "127.0.0.1", "--port", str(port), "--store", str(store)]
    if not batching:
        cmd.append("--no-batching")
    proc = subprocess.Popen(cmd, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


async def drive(url: str, users: list[str], clients: int, total: int, time_limit: float, seed: int) -> dict:
    rng = random.Random(seed)
    bodies = [{"items": [{"user_id": rng.choice(users), "prompt": "Which pet?",
                          "response": f"{rng.choice(['I love cats', 'Dogs are the best', 'Fish are calm'])}, take {i}"}]}
              for i in range(total)]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    next_i = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        start = time.perf_counter()
        stop_at = start + time_limit

        async def worker():
            nonlocal next_i
            while next_i < total and time.perf_counter() < stop_at:
                body = bodies[next_i]
                next_i += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/reward", json=body)
                    key = None if r.status_code == 200 else f"http {r.status_code}"
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                latencies.append(time.perf_counter() - t0)
                if key:
                    errors[key] = errors.get(key, 0) + 1

        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    return {"requests": len(latencies), "seconds": round(elapsed, 3), "requests_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2), "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "errors": int(sum(errors.values())), "error_kinds": errors, "completed_all": len(latencies) == total}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="a trained palrm model directory (default: train a toy one)")
    ap.add_argument("--encoder", default="minilm", help="encoder of the toy model (minilm or hashing)")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--time-limit", type=float, default=300.0, help="seconds per mode at most")
    ap.add_argument("--modes", default="batching,no-batching")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "serve_load.json")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="palrm-serve-load-"))
    if args.model:
        from palrm import PALRewardModel

        model_dir, users = args.model, PALRewardModel.load(args.model).users_
    else:
        model_dir, users = toy_model(work / "model", args.encoder)
    meta = json.loads((model_dir / "config.json").read_text())
    results = {"model": str(model_dir), "encoder": meta["config"]["encoder"]["spec"], "clients": args.clients,
               "requests": args.requests, "items_per_request": 1, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
               "load_average_before": os.getloadavg(), "modes": {}}
    for mode in args.modes.split(","):
        proc, url = start_server(model_dir, work / f"{mode}.sqlite", mode == "batching", work / f"{mode}.log")
        try:
            asyncio.run(drive(url, users, args.clients, min(200, args.requests), 60, seed=1))  # warm-up
            results["modes"][mode] = asyncio.run(drive(url, users, args.clients, args.requests, args.time_limit, seed=0))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    results["load_average_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"palrm serve load: {args.clients} clients, {args.requests} single-item /v1/reward requests per mode, "
          f"encoder {results['encoder']}")
    print(f"{'mode':<12} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for mode, r in results["modes"].items():
        print(f"{mode:<12} {r['requests']:>9} {r['requests_per_s']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['errors']:>7}")
    print(f"wrote {args.out}")
    return 0 if all(r["errors"] == 0 and r["completed_all"] for r in results["modes"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
