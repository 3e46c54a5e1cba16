"""Streaming training over memory-mapped data: time per epoch and peak resident memory vs data size.

For each size (users, pairs) it writes synthetic data straight to disk in chunks (pair index arrays
and an embedding table, as `palrm.data.memmap` lays them out; no PairData is built), then trains
PAL-B with the streaming loop in a fresh subprocess and records that subprocess's peak RSS
(ru_maxrss, which includes the file pages of the memory maps it touched) and its step time. When
`--max-steps` is below an epoch's steps, the epoch time is extrapolated from the measured steps
(said so in the output: "extrapolated": true).

    python benchmarks/scale.py --sizes 10000:100000,100000:1000000,1000000:10000000 --max-steps 400

Writes results/scale/scale.json (or --output) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHUNK = 1_000_000


def generate(directory: Path, n_users: int, n_pairs: int, n_texts: int, dim: int, seed: int = 0) -> None:
    """Planted data in chunks: each user prefers responses near one of 3 prototype directions."""
    from palrm.data.memmap import MemmapPairWriter

    rng = np.random.default_rng(seed)
    w = MemmapPairWriter(directory, n_pairs=n_pairs, n_users=n_users, n_texts=n_texts, dim=dim)
    protos = rng.normal(size=(3, dim)).astype(np.float32)
    group = rng.integers(0, 3, size=n_users)
    for start in range(0, n_texts, CHUNK):
        m = min(CHUNK, n_texts - start)
        w.write_embeddings(start, rng.normal(size=(m, dim)).astype(np.float32))
    emb = w.embeddings
    n_prompts = max(1, n_texts // 10)
    for start in range(0, n_pairs, CHUNK):
        m = min(CHUNK, n_pairs - start)
        user = rng.integers(0, n_users, size=m)
        a = rng.integers(n_prompts, n_texts, size=m)
        b = rng.integers(n_prompts, n_texts - 1, size=m)
        b = b + (b >= a)  # distinct responses
        pa = rng.integers(0, n_prompts, size=m)
        score = np.einsum("nd,nd->n", np.asarray(emb[a]) - np.asarray(emb[b]), protos[group[user]])
        chosen, rejected = np.where(score > 0, a, b), np.where(score > 0, b, a)
        w.write_pairs(start, user=user, prompt=pa, chosen=chosen, rejected=rejected)
    w.close()


def train_child(directory: str, batch_size: int, max_steps: int, threads: int) -> dict:
    """Runs in the measured subprocess: train one epoch (or max_steps) and report."""
    import torch

    from palrm.config import PALConfig
    from palrm.data.memmap import open_memmap_pairs
    from palrm.models import build_net
    from palrm.training import ArraySource, param_groups
    from palrm.training.engine import train_stream

    torch.set_num_threads(threads)
    data = open_memmap_pairs(directory)
    cfg = PALConfig.from_dict({"model": {"kind": "pal-b", "k": 3, "d": 32, "hidden": [64]},
                               "train": {"epochs": 1, "batch_size": batch_size, "progress": False, "patience": 0}})
    torch.manual_seed(0)
    net = build_net(cfg.model, int(data.embeddings.shape[1]), data.n_users)
    steps_per_epoch = (len(data) + batch_size - 1) // batch_size
    src = ArraySource.from_memmap(data)
    counter = {"steps": 0, "t_first": None}

    class Enough(Exception):
        pass

    class Limited:
        def __len__(self):
            return len(src)

        def batch(self, positions):
            if counter["steps"] == 1:
                counter["t_first"] = time.perf_counter()  # exclude the first step (allocation warm-up)
            if counter["steps"] >= max_steps:
                raise Enough
            counter["steps"] += 1
            return src.batch(positions)

        def forward(self, module, batch):
            return src.forward(module, batch)

    t0 = time.perf_counter()
    try:
        train_stream(net, Limited(), None, cfg.train, param_groups=param_groups(net, cfg.train))
    except Enough:
        pass
    t1 = time.perf_counter()
    done = counter["steps"]
    timed = done - 1 if counter["t_first"] else done
    per_step = (t1 - (counter["t_first"] or t0)) / max(timed, 1)
    return {"steps_run": done, "steps_per_epoch": steps_per_epoch, "seconds_per_step": per_step,
            "epoch_seconds": per_step * steps_per_epoch if done < steps_per_epoch else t1 - t0,
            "extrapolated": done < steps_per_epoch, "wall_seconds": t1 - t0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000:100000,100000:1000000,1000000:10000000", help="users:pairs,...")
    ap.add_argument("--texts-per-pair", type=float, default=0.05, help="distinct texts per pair (embedding rows)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--max-steps", type=int, default=400, help="steps measured per size (epoch time extrapolated beyond)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=None, help="where the synthetic data goes (default: a temporary directory)")
    ap.add_argument("--output", default="results/scale/scale.json")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        d, bs, steps, th = args.child
        print(json.dumps(train_child(d, int(bs), int(steps), int(th))))
        return
    rows = []
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for spec in args.sizes.split(","):
            users, pairs = (int(x) for x in spec.split(":"))
            texts = max(1000, int(pairs * args.texts_per_pair))
            d = Path(tmp) / f"u{users}-p{pairs}"
            t0 = time.perf_counter()
            generate(d, users, pairs, texts, args.dim)
            gen_s = time.perf_counter() - t0
            disk_mb = sum(f.stat().st_size for f in d.iterdir()) / 2**20
            out = subprocess.run([sys.executable, __file__, "--child", str(d), str(args.batch_size), str(args.max_steps),
                                  str(args.threads)], capture_output=True, text=True, check=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            row = {"users": users, "pairs": pairs, "texts": texts, "dim": args.dim, "data_on_disk_mb": round(disk_mb, 1),
                   "generate_seconds": round(gen_s, 1), "batch_size": args.batch_size, "threads": args.threads, **res}
            rows.append(row)
            print(f"{users:>9} users {pairs:>10} pairs  disk {disk_mb:8.1f} MB  step {res['seconds_per_step'] * 1e3:7.1f} ms  "
                  f"epoch {res['epoch_seconds']:8.1f} s{' (extrapolated)' if res['extrapolated'] else ''}  "
                  f"peak RSS {res['peak_rss_mb']:7.1f} MB", flush=True)
            import shutil

            shutil.rmtree(d, ignore_errors=True)
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"command": " ".join(sys.argv), "load_average": os.getloadavg(), "rows": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
