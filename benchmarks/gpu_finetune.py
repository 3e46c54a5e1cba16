"""PAL-Large fine-tuning throughput (pairs/s) and peak GPU memory on one GPU, bf16 autocast.

Self-contained and offline: the backbone is built from a config with random weights (an
OPT-125m-sized or OPT-350m-sized decoder; throughput does not depend on the weights' values), the
tokenizer is a word-level one built with the `tokenizers` library, and the pairs are synthetic
texts of a fixed token length. It runs the real training path (FineTuneModule + TextPairSource +
the streaming loop's step), full fine-tuning and LoRA, for a few timed steps each.

    python benchmarks/gpu_finetune.py                 # default: opt-125m and opt-350m sizes, ~2-4 minutes
    python benchmarks/gpu_finetune.py --sizes opt-125m --steps 10

Writes gpu_finetune.json into $OUT when that is set, else results/gpu/. On a machine without CUDA
it prints a message and exits with status 0 without measuring anything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

SIZES = {  # OPT configurations (hidden, layers, heads, ffn, word_embed_proj_dim)
    "opt-125m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, ffn_dim=3072, word_embed_proj_dim=768),
    "opt-350m": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, ffn_dim=4096, word_embed_proj_dim=512),
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, ffn_dim=64, word_embed_proj_dim=32),  # smoke test
}


def build_backbone(directory: Path, size: str, vocab_size: int = 50272) -> None:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import OPTConfig, OPTModel, PreTrainedTokenizerFast

    vocab = {"<pad>": 1, "</s>": 2, "<unk>": 3, **{f"w{i}": i + 4 for i in range(vocab_size - 4)}, "<s>": 0}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>", padding_side="left")
    config = OPTConfig(vocab_size=vocab_size, max_position_embeddings=2048, pad_token_id=1, bos_token_id=2,
                       eos_token_id=2, **SIZES[size])
    torch.manual_seed(0)
    OPTModel(config).save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))


def measure(directory: Path, *, lora: bool, batch_pairs: int, tokens: int, steps: int, warmup: int,
            gradient_checkpointing: bool, device: str = "cuda") -> dict:
    import numpy as np
    import torch

    from palrm.config import PALConfig
    from palrm.finetune import BackboneEncoder, FineTuneModule, TextPairSource, load_transformer
    from palrm.losses import bce_pair_loss
    from palrm.models import build_net

    cfg = PALConfig.from_dict({"model": {"kind": "pal-b", "k": 3, "d": 64, "hidden": [256]},
                               "encoder": {"spec": f"hf:{directory}:last"},
                               "finetune": {"enabled": True, "lora": lora, "lora_target_modules": ["q_proj", "v_proj"],
                                            "gradient_checkpointing": gradient_checkpointing, "bf16": True,
                                            "warmup_steps": 0}})
    model, tok = load_transformer(directory, device)
    enc = BackboneEncoder(model, tok, pooling="last", max_length=tokens, device=device, bf16=True)
    head = build_net(cfg.model, enc.dim, 64).to(device)
    module = FineTuneModule(enc, head, cfg.finetune).to(device)
    opt = torch.optim.AdamW(module.param_groups(cfg.train, cfg.finetune))
    rng = np.random.default_rng(0)
    n_texts = batch_pairs * 3 * (steps + warmup)
    texts = [" ".join(f"w{x}" for x in rng.integers(0, 50000, size=tokens - 2)) for _ in range(n_texts)]
    n = batch_pairs * (steps + warmup)
    idx = np.arange(n)
    src = TextPairSource(enc.tokens.encode(texts), rng.integers(0, 64, n), 3 * idx, 3 * idx + 1, 3 * idx + 2,
                         enc.tokens, device)
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.parameters())
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    module.train()
    times = []
    for s in range(steps + warmup):
        batch = src.batch(torch.arange(s * batch_pairs, (s + 1) * batch_pairs))
        sync()
        t0 = time.perf_counter()
        loss = bce_pair_loss(src.forward(module, batch))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        if s >= warmup:
            times.append(time.perf_counter() - t0)
    step_s = float(np.median(times))
    out = {"lora": lora, "gradient_checkpointing": gradient_checkpointing, "batch_pairs": batch_pairs,
           "tokens_per_text": tokens, "texts_per_step": 3 * batch_pairs, "steps_timed": steps,
           "median_step_seconds": round(step_s, 4), "pairs_per_second": round(batch_pairs / step_s, 1),
           "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
           "trainable_parameters": trainable, "total_parameters": total, "final_loss": float(loss)}
    del module, opt, model, head
    if cuda:
        torch.cuda.empty_cache()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="opt-125m,opt-350m", help=f"comma-separated, from {', '.join(SIZES)}")
    ap.add_argument("--batch-pairs", type=int, default=16, help="pairs per step (3 texts each: prompt and both responses)")
    ap.add_argument("--tokens", type=int, default=256, help="tokens per text")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per setting")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--cpu-smoke", action="store_true", help=argparse.SUPPRESS)  # tiny model on the CPU (tests)
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("gpu_finetune: torch is not installed; nothing measured.")
        return 0
    device = "cuda"
    if args.cpu_smoke:
        device, args.sizes, args.steps, args.warmup, args.batch_pairs, args.tokens = "cpu", "tiny", 2, 1, 4, 16
    elif not torch.cuda.is_available():
        print("gpu_finetune: no CUDA GPU on this machine; nothing measured. Run it on a GPU machine "
              "(it needs no network: the model is built from a config).")
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path("results/gpu" if device == "cuda" else "results/gpu-smoke")
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch": torch.__version__, "command": " ".join(sys.argv),
               "runs": []}
    t_start = time.perf_counter()
    for size in args.sizes.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            build_backbone(Path(tmp), size)
            for lora, ckpt in ((False, False), (False, True), (True, False)):
                try:
                    r = measure(Path(tmp), lora=lora, batch_pairs=args.batch_pairs, tokens=args.tokens, steps=args.steps,
                                warmup=args.warmup, gradient_checkpointing=ckpt, device=device)
                except torch.cuda.OutOfMemoryError as err:
                    r = {"lora": lora, "gradient_checkpointing": ckpt, "error": f"out of memory: {err}"[:300]}
                    torch.cuda.empty_cache()
                r["size"] = size
                results["runs"].append(r)
                print(json.dumps(r), flush=True)
                (out_dir / "gpu_finetune.json").write_text(json.dumps(results, indent=2))
    results["total_seconds"] = round(time.perf_counter() - t_start, 1)
    (out_dir / "gpu_finetune.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out_dir / 'gpu_finetune.json'} in {results['total_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
