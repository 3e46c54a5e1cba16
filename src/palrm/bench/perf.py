"""The perf suite: training throughput, time to accuracy, adaptation latency, scoring, scale.

All timings are wall-clock on the machine that runs the suite (`machine` in every JSON records it);
nothing here is a test. Each scale point runs in a fresh subprocess so that its peak memory
(VmHWM, reset after the data set is built) is its own.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from palrm.bench import plots
from palrm.bench.common import prepare_run, r4, set_threads, with_embeddings, write_json

logger = logging.getLogger(__name__)

TARGETS = {"adapt_1_user_ms": 20.0, "adapt_10000_users_s": 10.0, "text_scoring_overhead": 0.05}


def machine(threads: int | None) -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "requested_threads": threads,
            "loadavg_at_start": [round(x, 2) for x in load] if load else None}


def _persona(seed: int, encoder: str):
    from palrm.data.persona import build_persona
    from palrm.data.splits import split_pairs

    ds = build_persona(seed=seed)
    pairs = with_embeddings(ds.pairs, encoder)
    seen = pairs.for_users(ds.seen_users).compact_users()
    return ds, pairs, split_pairs(seen, val_frac=0.1, test_frac=0.2, seed=seed)


def _median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


# ------------------------------------------------------------------------------------------ pieces
def throughput(sp, batch_sizes, epochs: int, seed: int) -> dict:
    """Training pairs per second (best epoch of `epochs`; no validation pass) on cached embeddings."""
    from palrm.reward_model import PALRewardModel

    out: dict = {}
    for kind in ("pal-a", "pal-b", "btl"):
        out[kind] = {}
        for bs in batch_sizes:
            model = PALRewardModel(kind=kind, k=3, epochs=epochs, batch_size=bs, patience=0, progress=False, seed=seed)
            model.fit(sp.train)
            best = min(r["seconds"] for r in model.history_)
            out[kind][str(bs)] = {"pairs_per_s": round(len(sp.train) / best), "epoch_s": round(best, 3)}
    return {"n_train_pairs": len(sp.train), "input_dim": int(sp.train.embeddings.shape[1]), "by_kind": out}


def time_to_accuracy(sp, seed: int) -> tuple[dict, dict]:
    """Default fit (early stopping on validation loss): when does validation accuracy reach its final value?"""
    from palrm.reward_model import PALRewardModel

    out, models = {}, {}
    for kind in ("pal-b", "pal-a", "btl"):
        start = time.perf_counter()
        model = PALRewardModel(kind=kind, k=3, progress=False, seed=seed).fit(sp.train, sp.validation)
        wall = time.perf_counter() - start
        hist = model.history_
        best = min(hist, key=lambda r: r["val_loss"])
        final = best["val_accuracy"]
        cum = np.cumsum([r["seconds"] for r in hist])
        reach = next(i for i, r in enumerate(hist) if r["val_accuracy"] >= final - 0.005)
        out[kind] = {"final_val_accuracy": r4(final), "test_accuracy": r4(model.evaluate(sp.test)["accuracy"]),
                     "epochs_run": len(hist), "best_epoch": best["epoch"], "epoch_reaching_final": reach + 1,
                     "seconds_to_final": round(float(cum[reach]), 2), "fit_wall_s": round(wall, 2),
                     "curve": [{"epoch": r["epoch"], "t": round(float(c), 2), "val_accuracy": r4(r["val_accuracy"])}
                               for r, c in zip(hist, cum)]}
        models[kind] = model
    return out, models


def adapt_latency(model, ds, pairs, seed: int, encoder: str, n_big: int, repeats: int) -> dict:
    """One new user with 20 pairs (facade and core), and `n_big` new users x 20 pairs at once."""
    from palrm.core import pair_index, pair_table
    from palrm.data.persona import build_persona
    from palrm.training import adapt_user_logits

    user = ds.unseen_users[0]
    one = pairs.for_users([user]).compact_users()
    one = one.select(np.arange(20))
    res: dict = {"pairs_per_user": 20, "steps": model.config_.adapt.steps}
    med, times = _median_time(lambda: model.adapt(one, reset=True), repeats, warmup=3)
    res["one_user_facade_ms"] = round(med * 1000, 2)
    res["one_user_facade_ms_all"] = [round(t * 1000, 2) for t in times]
    table = pair_table(model.fitted_, one)
    idx = pair_index(one, np.zeros(20, dtype=np.int64), table)
    init = torch.zeros(1, model.k)
    med, _ = _median_time(lambda: adapt_user_logits(model.net_, table, idx, 1, model.config_.adapt, init), repeats, warmup=3)
    res["one_user_core_ms"] = round(med * 1000, 2)
    start = time.perf_counter()
    big = build_persona(seed=seed + 1, n_seen_users=1, n_unseen_users=n_big, pairs_per_user=20)
    big_pairs = with_embeddings(big.pairs, encoder).for_users(big.unseen_users).compact_users()
    big_pairs.user_ids = [f"new-{u}" for u in big_pairs.user_ids]
    res["many_users_build_s"] = round(time.perf_counter() - start, 2)
    times = []
    for _ in range(2):
        fresh = _clone(model)
        start = time.perf_counter()
        fresh.adapt(big_pairs)
        times.append(time.perf_counter() - start)
    res["many_users"] = n_big
    res["many_users_pairs"] = len(big_pairs)
    res["many_users_s"] = round(min(times), 3)
    res["many_users_s_all"] = [round(t, 3) for t in times]
    res["workload_note"] = ("Persona texts (901 distinct statements): f and the anchors run once per distinct text, "
                            "then 300 Adam steps on K numbers per user")
    return res


def _clone(model):
    import copy

    fresh = copy.copy(model)
    fresh.fitted_ = model.fitted_.copy_users()
    return fresh


def scoring(model, sp, n_pairs: int, repeats: int) -> dict:
    """Pairs scored per second on cached embeddings (facade predict_logits and the raw net)."""
    reps = int(np.ceil(n_pairs / len(sp.test)))
    big = sp.test.select(np.tile(np.arange(len(sp.test)), reps)[:n_pairs])
    med, _ = _median_time(lambda: model.predict_logits(big), repeats)
    net = model.net_
    emb = torch.from_numpy(np.asarray(sp.test.embeddings, dtype=np.float32))
    resp = emb[torch.from_numpy(big.chosen)]
    prompt = emb[torch.zeros(n_pairs, dtype=torch.long)]
    w = torch.full((n_pairs, net.k), 1.0 / net.k)
    with torch.no_grad():
        med_raw, _ = _median_time(lambda: net.score(w, prompt, resp), repeats)
    return {"n": n_pairs, "predict_logits_pairs_per_s": round(n_pairs / med), "net_score_rewards_per_s": round(n_pairs / med_raw)}


def text_overhead(ds, seed: int, n_items: int, repeats: int) -> dict:
    """End-to-end text scoring (reward_batch, cache off) against the MiniLM encoder alone on the same texts."""
    from palrm.data.persona import PERSONA_PROMPT
    from palrm.data.splits import split_pairs
    from palrm.reward_model import PALRewardModel

    seen = ds.pairs.for_users(ds.seen_users[:30]).compact_users()
    sp = split_pairs(seen, val_frac=0.1, test_frac=0.0, seed=seed)
    model = PALRewardModel(kind="pal-b", k=3, encoder="minilm", progress=False, seed=seed, epochs=3).fit(sp.train)
    model.config_.encoder.use_cache = False
    enc = model.encoder_
    responses = list(ds.statements[:n_items])
    prompts = [PERSONA_PROMPT] * n_items
    users = [model.users_[i % len(model.users_)] for i in range(n_items)]
    texts = sorted(set(prompts) | set(responses))
    bs = model.config_.encoder.batch_size
    enc_t, e2e_t = [], []
    enc.encode(texts[:8], batch_size=bs)  # warm up
    for i in range(repeats):  # interleaved, alternating which goes first, so slow phases of a loaded machine hit both
        for which in ("enc", "e2e") if i % 2 == 0 else ("e2e", "enc"):
            start = time.perf_counter()
            if which == "enc":
                enc.encode(texts, batch_size=bs)
            else:
                model.reward_batch(prompts, responses, user_ids=users)
            (enc_t if which == "enc" else e2e_t).append(time.perf_counter() - start)
    enc_m, e2e_m = statistics.median(enc_t), statistics.median(e2e_t)
    # PAL's own share, isolated: the same reward_batch call with the encoder replaced by a dictionary
    # lookup of the vectors it returned (the lookup's cost counts as overhead, so this overestimates).
    lookup = _LookupEncoder(enc, texts, bs)
    model.encoder_ = lookup
    own, own_all = _median_time(lambda: model.reward_batch(prompts, responses, user_ids=users), max(5, repeats), warmup=1)
    model.encoder_ = enc
    return {"n_items": n_items, "n_distinct_texts": len(texts), "encoder_s": round(enc_m, 3), "end_to_end_s": round(e2e_m, 3),
            "pal_own_s": round(own, 4), "overhead_ratio": r4(own / enc_m), "end_to_end_ratio_minus_1": r4(e2e_m / enc_m - 1),
            "encoder_s_all": [round(t, 3) for t in enc_t], "end_to_end_s_all": [round(t, 3) for t in e2e_t],
            "note": "overhead_ratio = PAL's own time (reward_batch with a lookup encoder) / MiniLM time; "
                    "end_to_end_ratio_minus_1 = (end to end / encoder) - 1 from interleaved runs (noisier)"}


class _LookupEncoder:
    """An Encoder that returns precomputed vectors of a real encoder (to time everything but the encoder)."""

    def __init__(self, enc, texts: list[str], batch_size: int) -> None:
        vectors = enc.encode(texts, batch_size=batch_size)
        self.table = {t: v for t, v in zip(texts, np.asarray(vectors, dtype=np.float32))}
        self.identity, self.spec, self.dim = f"lookup:{enc.identity}", "lookup", int(vectors.shape[1])

    def encode(self, texts, *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        return np.stack([self.table[t] for t in texts])


def scale_point(n_users: int, pairs_per_user: int, *, batch_size: int = 1024, seed: int = 0, threads: int = 1) -> dict:
    """One epoch of PAL-A (default MLP, K = 3) on synthetic d = 16 data; run in a fresh process."""
    from palrm.data.synthetic import build_synthetic
    from palrm.reward_model import PALRewardModel

    set_threads(threads)
    start = time.perf_counter()
    ds = build_synthetic(d=16, k=3, n_users=n_users, pairs_per_user=pairs_per_user, n_items=1000, seed=seed)
    build_s = time.perf_counter() - start
    rss_before = _status_mb("VmRSS")
    _reset_peak()
    start = time.perf_counter()
    model = PALRewardModel(kind="pal-a", k=3, epochs=1, batch_size=batch_size, patience=0, progress=False, seed=seed)
    model.fit(ds.pairs)
    total = time.perf_counter() - start
    return {"n_users": n_users, "pairs_per_user": pairs_per_user, "n_pairs": len(ds.pairs), "batch_size": batch_size,
            "build_s": round(build_s, 2), "epoch_s": round(model.history_[0]["seconds"], 2), "fit_s": round(total, 2),
            "pairs_per_s": round(len(ds.pairs) / model.history_[0]["seconds"]), "rss_before_fit_mb": rss_before,
            "peak_rss_during_fit_mb": _status_mb("VmHWM"), "peak_reset": _PEAK_RESET[0]}


_PEAK_RESET = [False]


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _PEAK_RESET[0] = True
    except OSError:
        _PEAK_RESET[0] = False


def _status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def scale(points, threads: int, seed: int, say) -> list[dict]:
    rows = []
    for n_users, ppu in points:
        cmd = [sys.executable, "-m", "palrm.bench.perf", "--scale-point", str(n_users), str(ppu), "--threads", str(threads),
               "--seed", str(seed)]
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"scale point {n_users} x {ppu} failed: {done.stderr[-2000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        say(f"  scale {n_users} users x {ppu} pairs: epoch {row['epoch_s']} s, peak {row['peak_rss_during_fit_mb']} MB")
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ suite
PERF_PROFILE = {
    "full": dict(batch_sizes=(64, 256, 1024, 4096), epochs=2, repeats=30, n_big=10_000, score_n=100_000, text_n=512,
                 text_repeats=5, scale=((10_000, 20), (30_000, 20), (100_000, 20), (10_000, 60), (10_000, 200))),
    "quick": dict(batch_sizes=(64, 256, 1024), epochs=1, repeats=15, n_big=10_000, score_n=50_000, text_n=256,
                  text_repeats=4, scale=((10_000, 20), (30_000, 20), (100_000, 20))),
    "smoke": dict(batch_sizes=(256,), epochs=1, repeats=5, n_big=500, score_n=5_000, text_n=32, text_repeats=1,
                  scale=((2_000, 20),)),
}


def run_perf(out_dir: str | Path = "results/perf", *, profile: str = "quick", seed: int = 0, threads: int | None = 1,
             encoder: str = "minilm", say: Callable[[str], None] | None = None) -> dict:
    say = say or (lambda _m: None)
    p = PERF_PROFILE[profile]
    out = prepare_run(out_dir, threads)
    start = time.perf_counter()
    res: dict = {"profile": profile, "machine": machine(threads), "targets": TARGETS}
    ds, pairs, sp = _persona(seed, encoder)
    say(f"[perf/{profile}] training throughput (Persona, {len(sp.train)} train pairs, MiniLM 384-d cached)")
    res["throughput"] = throughput(sp, p["batch_sizes"], p["epochs"], seed)
    write_json(out / "throughput.json", res["throughput"])
    say("  " + "; ".join(f"{k}: " + ", ".join(f"bs {b} {v['pairs_per_s']}/s" for b, v in d.items())
                         for k, d in res["throughput"]["by_kind"].items()))
    say(f"[perf/{profile}] time to final accuracy (default Persona fit)")
    res["time_to_accuracy"], models = time_to_accuracy(sp, seed)
    write_json(out / "time_to_accuracy.json", res["time_to_accuracy"])
    say(f"[perf/{profile}] adaptation latency")
    res["adapt"] = adapt_latency(models["pal-b"], ds, pairs, seed, encoder, p["n_big"], p["repeats"])
    write_json(out / "adapt.json", res["adapt"])
    say(f"  1 user x 20 pairs: {res['adapt']['one_user_facade_ms']} ms; {res['adapt']['many_users']} users: {res['adapt']['many_users_s']} s")
    say(f"[perf/{profile}] scoring")
    res["scoring"] = scoring(models["pal-b"], sp, p["score_n"], 5)
    res["text_scoring"] = text_overhead(ds, seed, p["text_n"], p["text_repeats"])
    write_json(out / "scoring.json", {"cached": res["scoring"], "text": res["text_scoring"]})
    say(f"  text scoring overhead over MiniLM: {res['text_scoring']['overhead_ratio']}")
    say(f"[perf/{profile}] scale (synthetic, one epoch of PAL-A per size, fresh process each)")
    res["scale"] = scale(p["scale"], threads or 1, seed, say)
    write_json(out / "scale.json", res["scale"])
    res["target_met"] = {
        "adapt_1_user_under_20ms": res["adapt"]["one_user_facade_ms"] < TARGETS["adapt_1_user_ms"],
        "adapt_10000_users_under_10s": res["adapt"]["many_users"] >= 10_000 and res["adapt"]["many_users_s"] < TARGETS["adapt_10000_users_s"],
        "text_overhead_under_5pct": res["text_scoring"]["overhead_ratio"] < TARGETS["text_scoring_overhead"],
    }
    res["seconds"] = round(time.perf_counter() - start, 1)
    write_json(out / "perf.json", res)
    _perf_plots(res, out)
    say(f"[perf/{profile}] done in {res['seconds']:.0f} s; targets: {res['target_met']}")
    return res


def _perf_plots(res: dict, out: Path) -> None:
    plt = plots._plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for kind, d in res["throughput"]["by_kind"].items():
        axes[0].plot([int(b) for b in d], [v["pairs_per_s"] for v in d.values()], "o-", label=kind)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("batch size")
    axes[0].set_ylabel("training pairs / s")
    axes[0].set_title("training throughput (Persona, cached MiniLM)", fontsize=9)
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    rows = sorted(res["scale"], key=lambda r: r["n_pairs"])
    axes[1].plot([r["n_pairs"] for r in rows], [r["epoch_s"] for r in rows], "o-", label="epoch seconds")
    ax2 = axes[1].twinx()
    ax2.plot([r["n_pairs"] for r in rows], [r["peak_rss_during_fit_mb"] for r in rows], "s--", color="tab:red", label="peak RSS MB")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("pairs (synthetic)")
    axes[1].set_ylabel("one epoch (s)")
    ax2.set_ylabel("peak RSS (MB)", color="tab:red")
    axes[1].set_title("scale: PAL-A, one epoch", fontsize=9)
    axes[1].grid(alpha=0.3)
    plots._save(fig, out / "perf.png")


def _main(argv: list[str] | None = None) -> int:
    """One scale point in its own process (run by `scale` above, not a user command):
    `python -m palrm.bench.perf --scale-point USERS PAIRS_PER_USER --threads T --seed S`."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 7 or argv[0] != "--scale-point" or argv[3] != "--threads" or argv[5] != "--seed":
        sys.stderr.write("usage: python -m palrm.bench.perf --scale-point USERS PAIRS_PER_USER --threads T --seed S\n")
        return 2
    row = scale_point(int(argv[1]), int(argv[2]), threads=int(argv[4]), seed=int(argv[6]))
    sys.stdout.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
