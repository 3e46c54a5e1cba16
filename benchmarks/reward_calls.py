"""Successive `PALRewardModel.reward` calls of fresh texts: is the time per call flat over the run?

Trains a small PAL-B model on a two-group toy table (embedding cache ON, in a fresh cache directory
that the training fills), then makes N successive `model.reward(user, prompt, [r1, r2])` calls, each
with texts never seen before (the RLHF pattern: completions are unique). Reports the time per call
in blocks of 100 calls, the last block / first block ratio (1.0 = flat), and how many cache shard
files exist after the run (scoring must not write any). Prints a table and writes JSON.

    python benchmarks/reward_calls.py                          # hashing and MiniLM, 1,000 calls each
    python benchmarks/reward_calls.py --encoders hashing --calls 300

Only the public API is used, so the same script measures older palrm versions too
(PYTHONPATH=path/to/other/src). Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def toy_frame(n_users: int = 8, pairs_per_user: int = 40, seed: int = 0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    cats = [f"I love cats, answer {i}" for i in range(50)]
    dogs = [f"Dogs are the best, reply {i}" for i in range(50)]
    rows = []
    for u in range(n_users):
        for _ in range(pairs_per_user):
            c, d = cats[rng.integers(50)], dogs[rng.integers(50)]
            chosen, rejected = (c, d) if u % 2 == 0 else (d, c)
            rows.append({"user_id": f"user{u}", "prompt": f"Which pet? ({rng.integers(200)})", "chosen": chosen,
                         "rejected": rejected})
    return pd.DataFrame(rows)


def run(encoder: str, calls: int, block: int, cache_dir: Path) -> dict:
    from palrm import PALRewardModel

    os.environ["PALRM_CACHE_DIR"] = str(cache_dir)
    start = time.perf_counter()
    model = PALRewardModel(kind="pal-b", k=2, encoder=encoder, epochs=3, seed=0, progress=False).fit(toy_frame())
    fit_s = time.perf_counter() - start
    shards_before = len(list(cache_dir.rglob("shard-*")))
    model.reward("user0", "warm-up prompt", ["warm-up response"])
    times = []
    for i in range(calls):
        t0 = time.perf_counter()
        model.reward(f"user{i % 8}", f"fresh prompt number {i}", [f"fresh answer A {i}", f"fresh answer B {i}"])
        times.append(time.perf_counter() - t0)
    blocks = [round(1000 * statistics.mean(times[s:s + block]), 3) for s in range(0, calls, block)]
    return {"encoder": encoder, "calls": calls, "texts_per_call": 3, "fit_s": round(fit_s, 2),
            "ms_per_call_by_block": blocks, "block": block,
            "median_ms": round(1000 * statistics.median(times), 3),
            "last_over_first_block": round(blocks[-1] / blocks[0], 3),
            "total_s": round(sum(times), 2),
            "cache_shards_before": shards_before, "cache_shards_after": len(list(cache_dir.rglob("shard-*")))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoders", default="hashing,minilm", help="comma-separated encoder specs")
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--block", type=int, default=100)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier timings on a shared machine)")
    p.add_argument("--out", default="results/bench/reward_calls.json")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    results = []
    for enc in args.encoders.split(","):
        with tempfile.TemporaryDirectory(prefix="palrm-reward-calls-") as tmp:
            res = run(enc, args.calls, args.block, Path(tmp))
        results.append(res)
        print(f"{enc:>10}: {res['calls']} calls, ms/call per {args.block}-call block {res['ms_per_call_by_block']}, "
              f"last/first {res['last_over_first_block']}, cache shards {res['cache_shards_before']} -> "
              f"{res['cache_shards_after']}")
    import palrm

    out = {"benchmark": "reward_calls", "palrm_version": palrm.__version__, "palrm_source": str(Path(palrm.__file__).parent),
           "python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
           "date": time.strftime("%Y-%m-%d %H:%M:%S"), "torch_threads": args.threads, "results": results}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
