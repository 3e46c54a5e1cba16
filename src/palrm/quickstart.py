"""The main job (`palrm quickstart`, `make quickstart`): the shipped Persona benchmark end to end.

Builds the default heterogeneous Persona set (K* = 3 groups, 100 seen + 30 unseen users), embeds it
with MiniLM, trains PAL-B (k="auto": model selection, table printed and saved as selection.json) and the BTL
baseline on the same embeddings and splits, evaluates seen users
on held-out pairs and unseen users on the few-shot curve, prints a table, and writes
results.json, few_shot.png and the trained PAL model (model/) to the output directory.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

SHOTS = (0, 1, 2, 5, 10, 20, 50)
AUTO_KS = (1, 2, 3, 4)
AUTO_OFFSETS = ("none", "input")


def run_quickstart(
    output_dir: str | Path = "runs/quickstart",
    *,
    encoder: str = "minilm",
    seed: int = 0,
    progress: bool = True,
    small: bool = False,
    printer: Callable[[str], None] | None = None,
    threads: int | None = 1,
) -> dict:
    """Run the quickstart and return the results dict (also written to OUTPUT_DIR/results.json).

    `threads`: torch intra-op threads for the job (restored afterwards; None = torch's default). One is
    the fastest on a small shared machine: the networks are small and two threads competing with other
    processes spend most of their time waiting for each other (measured: 113 s instead of about 300 s
    for this job on 2 cores at load 5, the same figures).
    """
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return _run(output_dir, encoder=encoder, seed=seed, progress=progress, small=small, printer=printer)
    finally:
        torch.set_num_threads(before)


def _run(output_dir, *, encoder: str, seed: int, progress: bool, small: bool, printer) -> dict:
    from palrm.data.persona import build_persona
    from palrm.data.splits import few_shot_split, split_pairs
    from palrm.encoders import make_encoder
    from palrm.reward_model import PALRewardModel

    say = printer or (lambda _msg: None)
    start = time.perf_counter()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = {"n_seen_users": 30, "n_unseen_users": 10} if small else {}
    ds = build_persona(k=3, seed=seed, **sizes)
    seen = ds.pairs.for_users(ds.seen_users).compact_users()
    unseen = ds.pairs.for_users(ds.unseen_users).compact_users()
    splits = split_pairs(seen, val_frac=0.1, test_frac=0.2, seed=seed)
    shots, unseen_test = few_shot_split(unseen, max_shots=max(SHOTS), seed=seed)
    say(f"Persona benchmark: K*=3 groups ({', '.join(ds.personas)}), {len(ds.seen_users)} seen + "
        f"{len(ds.unseen_users)} unseen users, {len(ds.pairs)} pairs, {len(ds.pairs.texts)} distinct texts")

    enc = make_encoder(encoder)
    t_embed = time.perf_counter()
    from palrm.encoders import embed_texts

    embed_texts(ds.pairs.texts, enc, progress=progress)  # fills the cache once for both models
    embed_seconds = time.perf_counter() - t_embed

    results: dict = {"seen": {}, "unseen": {}}
    models = {}
    for name, kind in (("pal", "pal-b"), ("btl", "btl")):
        t = time.perf_counter()
        # PAL: the default k="auto" (model selection on validation pairs and held-out users), a small grid
        auto = {"auto_ks": list(AUTO_KS), "auto_offsets": list(AUTO_OFFSETS)} if name == "pal" else {}
        model = PALRewardModel(kind=kind, encoder=enc, seed=seed, progress=progress, **auto)
        model.fit(splits.train, splits.validation, log_path=out / f"train_log_{name}.jsonl")
        if model.selection_:
            from palrm.evaluation.selection import SELECTION_FILE
            from palrm.evaluation.selection import format_table as selection_table

            (out / SELECTION_FILE).write_text(json.dumps(model.selection_, indent=2))
            results["selected"] = model.selection_["winner"]
            say("model selection (validation log-loss of known users and of held-out users onboarded from n pairs):")
            for line in selection_table(model.selection_).splitlines():
                say("  " + line)
        seen_m = model.evaluate(splits.test)
        curve = model.few_shot_curve(shots, unseen_test, ns=SHOTS)
        results["seen"][name] = {k: seen_m[k] for k in ("accuracy", "log_loss", "user_mean_accuracy", "n_pairs", "n_users")}
        results["unseen"][name] = {n: m["accuracy"] for n, m in curve.items()}
        results.setdefault("unseen_log_loss", {})[name] = {n: m["log_loss"] for n, m in curve.items()}
        results.setdefault("train_seconds", {})[name] = round(time.perf_counter() - t, 2)
        models[name] = model
    models["pal"].save(out / "model")
    results["seconds"] = round(time.perf_counter() - start, 2)
    results["embed_seconds"] = round(embed_seconds, 2)
    results["dataset"] = {k: v for k, v in ds.stats.items() if isinstance(v, (int, float, str, list, dict))}
    results["encoder"] = getattr(enc, "identity", encoder)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    _plot(results, out / "few_shot.png")
    for line in format_table(results).splitlines():
        say(line)
    say(f"wrote {out / 'results.json'}, {out / 'few_shot.png'} and the PAL model in {out / 'model'} "
        f"({results['seconds']:.0f} s in all)")
    return results


def format_table(results: dict) -> str:
    seen, unseen = results["seen"], results["unseen"]
    shots = list(unseen["pal"])
    head = f"{'model':<6} {'seen acc':>9} " + " ".join(f"{'unseen@' + n:>10}" for n in shots)
    rows = [head, "-" * len(head)]
    for name in ("pal", "btl"):
        rows.append(f"{name.upper():<6} {seen[name]['accuracy']:>9.4f} " + " ".join(f"{unseen[name][n]:>10.4f}" for n in shots))
    if results.get("selected"):
        rows.append(f"(PAL = the selected model: {results['selected']}; unseen@0 = population weights, no pairs)")
    ceiling = results.get("dataset", {}).get("agnostic_ceiling_population")
    if ceiling is not None:
        rows.append(f"(best accuracy any user-agnostic model can reach on this set: {ceiling:.4f})")
    return "\n".join(rows)


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, style in (("pal", "o-"), ("btl", "s--")):
        curve = results["unseen"][name]
        ax.plot([int(n) for n in curve], list(curve.values()), style, label=f"{name.upper()} (unseen users)")
        ax.axhline(results["seen"][name]["accuracy"], ls=":", color=ax.lines[-1].get_color(), alpha=0.7,
                   label=f"{name.upper()} seen users")
    ax.set_xscale("symlog", linthresh=1)
    shots = [int(n) for n in results["unseen"]["pal"]]
    ax.set_xticks(shots, [str(n) for n in shots])
    ax.minorticks_off()
    ax.set_xlabel("adaptation pairs per new user")
    ax.set_ylabel("held-out pairwise accuracy")
    ax.set_title("Persona (K*=3): few-shot onboarding of unseen users")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
