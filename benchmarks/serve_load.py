"""Load benchmark of `palrm serve`: loopback only, bounded in request count and time.

One run measures, side by side on the same machine and the same texts:

* **traffic shapes**: `single` (one item per POST /v1/reward, a known user, a unique completion)
  and `grpo` (one request = the G completions (default 8) of one prompt for one user, as a GRPO
  trainer scores a group; prompts drawn from a pool of `--prompts` distinct prompts, completions
  unique);
* **batching** on (the micro-batcher) and off (`--no-batching`);
* **stores**: the embedded SQLite store and PostgreSQL (`--pg-url URL`, or `--pg auto` to start a
  private throw-away cluster with Debian's initdb / pg_ctl, as the tests do); for each store the
  latency of `--adapts` sequential user adapts (6 pairs each);
* **the encoder alone** on the distinct texts of the GRPO traffic, in this process while no
  server runs: the ceiling for items/s.

For every (traffic, batching, store) run it reports requests/s, items/s, latency p50 / p95 / p99 /
max and the error count (anything but HTTP 200, or a transport error), checks the targets of
issue 11 and writes JSON.

The load generator (`--client`): `raw` (default) keeps one HTTP/1.1 keep-alive connection per client
on plain asyncio streams; `httpx` is the earlier generator (one `httpx.AsyncClient` shared by the
clients). Same load shape either way: `--clients` closed-loop clients, each sending its next request
when the previous answer arrived. Profiling the httpx generator (request ids matched with the
server's own timestamps) showed its tail was its own: with 64 clients the server saw a request up to
5.5 s after the client started it, and wrote a request's body only then (the client had not
written it), while the server's own time per request had p99 / p50 = 1.4. httpx's per-request
Python work (h11 on both sides of the pool) was the load generator's bottleneck on 2 shared cores.

    python benchmarks/serve_load.py --pg auto                   # the full matrix, MiniLM, 5000 requests per run
    python benchmarks/serve_load.py --quick --pg auto           # 1000 requests per run
    python benchmarks/serve_load.py --encoder-backend onnx      # the server on ONNX Runtime
    python benchmarks/serve_load.py --model runs/quickstart/model --traffic grpo --modes batching

Without --model it trains a small PAL-B model on a two-group toy table with the chosen encoder.
The load generator shares the machine's cores with the server; timings on a shared machine are
noisy, so run it when the machine is otherwise idle and read the load averages in the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("cats", "dogs", "fish", "birds", "calm", "loyal", "playful", "quiet", "clever", "friendly", "small", "large")


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


def start_server(model: Path, store: str, batching: bool, log: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "palrm", "serve", str(model), "--host", "127.0.0.1", "--port", str(port), "--store", store, *extra]
    if not batching:
        cmd.append("--no-batching")
    proc = subprocess.Popen(cmd, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
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


def completion(rng: random.Random, i: int) -> str:
    return f"{' '.join(rng.choice(WORDS) for _ in range(rng.randint(4, 24)))}, take {i}"


def make_bodies(traffic: str, users: list[str], total: int, group: int, prompts: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    pool = [f"Question {j}: which pet suits a {rng.choice(WORDS)} {rng.choice(WORDS)} household?" for j in range(prompts)]
    if traffic == "single":
        return [{"items": [{"user_id": rng.choice(users), "prompt": rng.choice(pool), "response": completion(rng, i)}]}
                for i in range(total)]
    bodies = []
    for i in range(total):
        user, prompt = rng.choice(users), rng.choice(pool)
        bodies.append({"items": [{"user_id": user, "prompt": prompt, "response": completion(rng, i * group + g)}
                                 for g in range(group)]})
    return bodies


async def drive(url: str, bodies: list[dict], clients: int, time_limit: float, client: str = "raw") -> dict:
    if client == "raw":
        return await drive_raw(url, bodies, clients, time_limit)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    next_i = 0
    items = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        start = time.perf_counter()
        stop_at = start + time_limit

        async def worker():
            nonlocal next_i, items
            while next_i < len(bodies) and time.perf_counter() < stop_at:
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
                else:
                    items += len(body["items"])

        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return summary(latencies, errors, items, elapsed, len(bodies))


async def drive_raw(url: str, bodies: list[dict], clients: int, time_limit: float) -> dict:
    """`drive` on plain asyncio streams: one keep-alive HTTP/1.1 connection per client, minimal parsing."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    next_i = 0
    items = 0
    start = time.perf_counter()
    stop_at = start + time_limit

    async def worker():
        nonlocal next_i, items
        reader = writer = None
        while next_i < len(bodies) and time.perf_counter() < stop_at:
            body = bodies[next_i]
            next_i += 1
            data = json.dumps(body).encode()
            t0 = time.perf_counter()
            key = None
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(b"POST /v1/reward HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(data), data))
                await writer.drain()
                head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 120)).split(b"\r\n")
                status = int(head[0].split()[1])
                fields = dict(line.split(b":", 1) for line in head[1:] if b":" in line)
                length = int(next(v for k, v in fields.items() if k.strip().lower() == b"content-length"))
                await reader.readexactly(length)
                key = None if status == 200 else f"http {status}"
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, StopIteration) as exc:
                key = type(exc).__name__
                if writer is not None:
                    writer.close()
                reader = writer = None
            latencies.append(time.perf_counter() - t0)
            if key:
                errors[key] = errors.get(key, 0) + 1
            else:
                items += len(body["items"])
        if writer is not None:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(clients)))
    return summary(latencies, errors, items, time.perf_counter() - start, len(bodies))


def summary(latencies: list[float], errors: dict, items: int, elapsed: float, total: int) -> dict:
    lat = np.array(latencies) * 1000
    pct = {f"p{q}_ms": round(float(np.percentile(lat, q)), 2) for q in (50, 95, 99)}
    return {"requests": len(latencies), "items": items, "seconds": round(elapsed, 3),
            "requests_per_s": round(len(latencies) / elapsed, 1), "items_per_s": round(items / elapsed, 1), **pct,
            "max_ms": round(float(lat.max()), 2), "p99_over_p50": round(pct["p99_ms"] / max(pct["p50_ms"], 1e-9), 2),
            "errors": int(sum(errors.values())), "error_kinds": errors, "completed_all": len(latencies) == total}


def adapt_latency(url: str, n: int, tag: str) -> dict:
    """`n` sequential adapts of new users (6 pairs each): p50 / p95 / max in ms."""
    times, errors = [], 0
    with httpx.Client(base_url=url, timeout=120) as client:
        for i in range(n):
            pairs = [{"prompt": "Which pet?", "chosen": f"Dogs are the best, reply {j}", "rejected": f"I love cats, answer {j}"}
                     for j in range(i % 7, i % 7 + 6)]
            t0 = time.perf_counter()
            r = client.post(f"/v1/users/{tag}-{i}/adapt", json={"pairs": pairs})
            times.append((time.perf_counter() - t0) * 1000)
            errors += r.status_code != 200
    t = np.array(times)
    return {"adapts": n, "p50_ms": round(float(np.percentile(t, 50)), 2), "p95_ms": round(float(np.percentile(t, 95)), 2),
            "max_ms": round(float(t.max()), 2), "errors": int(errors)}


def encoder_ceiling(spec: str, backend: str, texts: list[str], chunk: int, sample: int = 2048, repeats: int = 1) -> dict:
    """Texts/s of the model's encoder alone on `texts` (a seeded sample of at most `sample` of them, so the
    ceiling costs a bounded time), `chunk` texts per call, best of `repeats`."""
    all_texts = len(texts)
    if len(texts) > sample:
        texts = random.Random(0).sample(texts, sample)
    from palrm.encoders import make_encoder

    enc = make_encoder(spec)
    if backend != "torch":
        from palrm.encoders.onnx import OnnxEncoder

        enc = OnnxEncoder(enc, quantize="int8" if backend == "onnx-int8" else None)
    def timed() -> float:
        t = time.perf_counter()
        for i in range(0, len(texts), chunk):
            enc.encode(texts[i:i + chunk])
        return time.perf_counter() - t

    # on one worker thread, as the server's model thread runs it (torch on the main thread measured up
    # to 3x slower than on a worker thread on the shared 2-core machine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(timed).result()  # load, and a first pass over the same texts (oneDNN builds kernels per shape)
        best = min(pool.submit(timed).result() for _ in range(repeats))
    rate = len(texts) / best
    return {"texts": all_texts, "timed_texts": len(texts), "texts_per_s": round(rate, 1),
            "seconds": round(all_texts / rate, 3), "chunk": chunk}


def postgres_url(arg: str | None, stack: list) -> str | None:
    if not arg:
        return None
    if arg != "auto":
        return arg
    sys.path.insert(0, str(ROOT))
    from tests.serving.pg import PrivateCluster, why_unavailable

    reason = why_unavailable()
    if reason:
        print(f"PostgreSQL runs skipped: {reason}", flush=True)
        return None
    cluster = PrivateCluster().start()
    stack.append(cluster)
    return cluster.new_database("palrm_bench")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="a trained palrm model directory (default: train a toy one)")
    ap.add_argument("--encoder", default="minilm", help="encoder of the toy model (minilm or hashing)")
    ap.add_argument("--encoder-backend", default="torch", choices=["torch", "onnx", "onnx-int8"])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=5000, help="requests per run")
    ap.add_argument("--quick", action="store_true", help="1000 requests per run, 20 adapts per store")
    ap.add_argument("--time-limit", type=float, default=300.0, help="seconds per run at most")
    ap.add_argument("--traffic", default="single,grpo")
    ap.add_argument("--modes", default="batching,no-batching")
    ap.add_argument("--group-size", type=int, default=8, help="completions per prompt in GRPO traffic")
    ap.add_argument("--prompts", type=int, default=256, help="distinct prompts in the traffic")
    ap.add_argument("--adapts", type=int, default=50, help="sequential adapts per store")
    ap.add_argument("--pg", metavar="URL|auto", help="also run on a PostgreSQL store (auto: a private cluster)")
    ap.add_argument("--client", default="raw", choices=["raw", "httpx"],
                    help="load generator: raw asyncio streams (default) or the earlier shared httpx.AsyncClient")
    ap.add_argument("--server-args", default="", help="more `palrm serve` flags, space-separated")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "serve_load.json")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up (servers, the private cluster)
    if args.quick:
        args.requests, args.adapts = min(args.requests, 1000), min(args.adapts, 20)
    work = Path(tempfile.mkdtemp(prefix="palrm-serve-load-"))
    if args.model:
        from palrm import PALRewardModel

        model_dir, users = args.model, PALRewardModel.load(args.model).users_
    else:
        model_dir, users = toy_model(work / "model", args.encoder)
    meta = json.loads((model_dir / "config.json").read_text())
    spec = meta["config"]["encoder"]["spec"]
    stack: list = []
    pg = postgres_url(args.pg, stack)
    stores = {"sqlite": str(work / "users.sqlite"), **({"postgresql": pg} if pg else {})}
    extra = (["--encoder-backend", args.encoder_backend] if args.encoder_backend != "torch" else []) + args.server_args.split()
    results = {"model": str(model_dir), "encoder": spec, "encoder_backend": args.encoder_backend, "clients": args.clients,
               "requests_per_run": args.requests, "group_size": args.group_size, "distinct_prompts": args.prompts,
               "server_args": extra, "client": args.client, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
               "load_average_before": os.getloadavg(), "runs": {}, "adapt_latency": {}}
    traffics = args.traffic.split(",")
    bodies = {t: make_bodies(t, users, args.requests, args.group_size, args.prompts, seed=0) for t in traffics}
    grpo_texts = sorted({t for b in bodies.get("grpo", bodies[traffics[0]]) for it in b["items"] for t in (it["prompt"], it["response"])})
    results["encoder_alone"] = encoder_ceiling(spec, args.encoder_backend, grpo_texts, chunk=256)
    print(f"encoder alone: {results['encoder_alone']['texts_per_s']} texts/s on {len(grpo_texts)} distinct texts", flush=True)
    try:
        for store_name, store in stores.items():
            for mode in args.modes.split(","):
                if store_name != "sqlite" and mode != "batching":
                    continue  # the store does not take part in scoring: one PostgreSQL run per traffic is enough
                proc, url = start_server(model_dir, store, mode == "batching", work / f"{store_name}-{mode}.log", extra)
                try:
                    for traffic in traffics:
                        warm = make_bodies(traffic, users, 100, args.group_size, args.prompts, seed=1)
                        asyncio.run(drive(url, warm, args.clients, 60, args.client))
                        run = asyncio.run(drive(url, bodies[traffic], args.clients, args.time_limit, args.client))
                        run["server"] = httpx.get(url + "/healthz", timeout=10).json()
                        results["runs"][f"{traffic}/{mode}/{store_name}"] = run
                        print(f"{traffic}/{mode}/{store_name}: {run['items_per_s']} items/s, p50 {run['p50_ms']} ms, "
                              f"p99 {run['p99_ms']} ms, errors {run['errors']}", flush=True)
                    if mode == "batching":
                        results["adapt_latency"][store_name] = adapt_latency(url, args.adapts, f"bench-{store_name}")
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
    finally:
        for cluster in stack:
            cluster.stop()
    results["load_average_after"] = os.getloadavg()
    results["targets"] = targets(results, args.group_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\npalrm serve load: {args.clients} clients ({args.client}), {args.requests} requests per run, encoder {spec} "
          f"({args.encoder_backend})")
    print(f"{'run':<30} {'req/s':>8} {'items/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7}")
    for name, r in results["runs"].items():
        print(f"{name:<30} {r['requests_per_s']:>8} {r['items_per_s']:>8} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['p99_ms']:>8} "
              f"{r['max_ms']:>8} {r['errors']:>7}")
    for name, a in results["adapt_latency"].items():
        print(f"adapt latency ({name}): p50 {a['p50_ms']} ms, p95 {a['p95_ms']} ms, max {a['max_ms']} ms, errors {a['errors']}")
    for name, t in results["targets"].items():
        print(f"target {name}: {'met' if t['met'] else 'MISSED'} ({t['detail']})")
    print(f"wrote {args.out}")
    runs = results["runs"].values()
    return 0 if all(r["errors"] == 0 and r["completed_all"] for r in runs) else 1


def targets(results: dict, group: int) -> dict:
    """Issue 11's targets, from this run's figures."""
    out = {}
    runs, ceiling = results["runs"], results["encoder_alone"]["texts_per_s"]
    grpo = runs.get("grpo/batching/sqlite")
    if grpo:
        # the encoder alone embeds the traffic's distinct texts (every completion, each distinct prompt once)
        # in `seconds`; the service at that pace would score requests x group items in the same time
        items = results["requests_per_run"] * group
        ceiling_items = items / results["encoder_alone"]["seconds"]
        ratio = grpo["items_per_s"] / ceiling_items
        out["grpo_items_vs_encoder"] = {"met": ratio >= 0.8, "ratio": round(ratio, 3),
                                        "detail": f"{grpo['items_per_s']} items/s vs the encoder alone at {ceiling} texts/s "
                                                  f"= {ceiling_items:.1f} items/s on the same distinct texts; target >= 0.8"}
    single = runs.get("single/batching/sqlite")
    if single:
        out["p99_at_most_3x_p50"] = {"met": single["p99_over_p50"] <= 3, "detail": f"single items, batching: p99 "
                                     f"{single['p99_ms']} ms / p50 {single['p50_ms']} ms = {single['p99_over_p50']}"}
    errors = sum(r["errors"] for r in runs.values())
    out["zero_errors"] = {"met": errors == 0, "detail": f"{errors} errors over {sum(r['requests'] for r in runs.values())} requests"}
    a = results["adapt_latency"]
    if "sqlite" in a and "postgresql" in a:
        ratio = a["postgresql"]["p50_ms"] / max(a["sqlite"]["p50_ms"], 1e-9)
        out["postgres_adapt_at_most_2x_sqlite"] = {"met": ratio <= 2, "ratio": round(ratio, 2),
                                                    "detail": f"adapt p50 {a['postgresql']['p50_ms']} ms vs {a['sqlite']['p50_ms']} ms"}
    return out


if __name__ == "__main__":
    sys.exit(main())
