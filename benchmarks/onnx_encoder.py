"""ONNX Runtime backend vs the torch encoder: texts/s and the Persona accuracy change, side by side.

Embeds the Persona benchmark's distinct texts with all-MiniLM-L6-v2 three ways (torch through
sentence-transformers, ONNX fp32, ONNX int8), timing each on the same texts (one warm-up pass
first, then `--repeats` rounds in which every backend embeds the texts once, interleaved, so a load
spike on the shared machine hits every backend of a round alike; texts/s of the best and the median
round, and the speed-up over torch within each round, median and range), each on one worker thread
as the server's model thread runs it (on the shared 2-core machine torch on the main thread measured
up to 3x slower than on a worker thread). Then trains PAL-B once on the torch
embeddings and evaluates the same trained model on the seen users' test pairs embedded by each
backend: the accuracy change is what serving with `--encoder-backend onnx` costs. Writes JSON.

    python benchmarks/onnx_encoder.py            # full Persona (901 texts), ~2 minutes on 2 cores
    python benchmarks/onnx_encoder.py --quick    # 30 seen users
    python benchmarks/onnx_encoder.py --threads 1   # one thread each (fairer on a shared machine)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="30 seen users instead of 100")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, help="threads for torch and ONNX Runtime alike (default: torch's default)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "onnx_encoder.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from palrm import PALRewardModel
    from palrm.data.persona import build_persona
    from palrm.data.splits import split_pairs
    from palrm.encoders import SentenceTransformerEncoder
    from palrm.encoders.onnx import OnnxEncoder

    if args.threads:
        torch.set_num_threads(args.threads)  # OnnxEncoder takes torch's thread count by default
    ds = build_persona(k=3, seed=0, **({"n_seen_users": 30, "n_unseen_users": 10} if args.quick else {}))
    seen = ds.pairs.for_users(ds.seen_users).compact_users()
    splits = split_pairs(seen, val_frac=0.1, test_frac=0.2, seed=0)
    texts = list(ds.pairs.texts)
    backends = {"torch": SentenceTransformerEncoder(batch_size=args.batch_size),
                "onnx-fp32": OnnxEncoder(SentenceTransformerEncoder(), batch_size=args.batch_size),
                "onnx-int8": OnnxEncoder(SentenceTransformerEncoder(), quantize="int8", batch_size=args.batch_size)}
    vectors, seconds = {}, {name: [] for name in backends}
    load_before = os.getloadavg()
    pool = ThreadPoolExecutor(max_workers=1)  # every encoder runs on one worker thread, as in the server
    for name, enc in backends.items():
        pool.submit(enc.encode, texts).result()  # load, export once, and a first pass (kernels per shape) untimed
    for r in range(max(1, args.repeats)):  # interleaved rounds: a load spike hits every backend of a round alike
        for name, enc in backends.items():
            t = time.perf_counter()
            vectors[name] = pool.submit(enc.encode, texts).result()
            seconds[name].append(time.perf_counter() - t)
        print(f"round {r + 1}: " + ", ".join(f"{n} {len(texts) / s[-1]:.1f}" for n, s in seconds.items()), flush=True)
    speed, speedup = {}, {}
    for name, times in seconds.items():
        best, median = min(times), float(np.median(times))
        per_round = [b / s for b, s in zip(seconds["torch"], times)]  # texts/s over torch's, within each round
        speed[name] = {"seconds": round(best, 3), "texts_per_s": round(len(texts) / best, 1),
                       "median_texts_per_s": round(len(texts) / median, 1),
                       "per_round_texts_per_s": [round(len(texts) / s, 1) for s in times]}
        speedup[name] = {"of_best": round(min(seconds["torch"]) / best, 2),
                         "of_median": round(float(np.median(seconds["torch"])) / median, 2),
                         "per_round_median": round(float(np.median(per_round)), 2),
                         "per_round_min": round(min(per_round), 2), "per_round_max": round(max(per_round), 2)}
    row = {t: i for i, t in enumerate(texts)}

    def with_vectors(pairs, name):
        return dataclasses.replace(pairs, embeddings=vectors[name][[row[t] for t in pairs.texts]])

    model = PALRewardModel(kind="pal-b", k=3, seed=0, progress=False)
    model.fit(with_vectors(splits.train, "torch"), with_vectors(splits.validation, "torch"))
    accuracy = {name: round(float(model.evaluate(with_vectors(splits.test, name))["accuracy"]), 4) for name in backends}
    diff = {name: float(np.abs(vectors[name] - vectors["torch"]).max()) for name in backends}
    results = {
        "texts": len(texts), "test_pairs": len(splits.test), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "torch_threads": torch.get_num_threads(), "batch_size": args.batch_size, "speed": speed,
        "rounds": max(1, args.repeats), "speedup_vs_torch": {n: speedup[n]["of_best"] for n in backends},
        "speedup_detail": speedup,
        "seen_test_accuracy": accuracy,
        "accuracy_change_points": {n: round(100 * (accuracy[n] - accuracy["torch"]), 2) for n in backends},
        "max_abs_diff_vs_torch": diff, "load_average_before": load_before, "load_average": os.getloadavg(),
        "command": " ".join(["python benchmarks/onnx_encoder.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"{'backend':<10} {'best':>7} {'median':>7} {'x best':>7} {'x median':>9} {'x per round (min-max)':>22} "
          f"{'accuracy':>9} {'change (pts)':>13} {'max |diff|':>11}")
    for n in backends:
        x = speedup[n]
        print(f"{n:<10} {speed[n]['texts_per_s']:>7} {speed[n]['median_texts_per_s']:>7} {x['of_best']:>7} {x['of_median']:>9} "
              f"{x['per_round_median']:>8} ({x['per_round_min']}-{x['per_round_max']}) {accuracy[n]:>9} "
              f"{results['accuracy_change_points'][n]:>13} {diff[n]:>11.2e}")
    print(f"load average before {load_before}, after {results['load_average']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
