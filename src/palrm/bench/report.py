"""Regenerate the benchmark tables of docs/benchmarks.md between marker comments.

Only the text between `<!-- palrm-bench:NAME:start -->` and `<!-- palrm-bench:NAME:end -->` is
replaced (NAME = paper, perf or aggregation); the rest of the file stays hand-written. Missing markers are
appended at the end of the file. The PNGs the tables embed are copied to docs/img/bench/.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

PAPER_PNGS = ("accuracy_vs_k_persona.png", "accuracy_vs_k_synthetic.png", "few_shot_persona.png", "few_shot_synthetic.png",
              "synthetic_d2_partition.png", "synthetic_d2_mixture.png", "mixture_weights.png")
PERF_PNGS = ("perf.png",)
AGGREGATION_PNGS = ("aggregation.png",)


def _marker(name: str, end: bool = False) -> str:
    return f"<!-- palrm-bench:{name}:{'end' if end else 'start'} -->"


def replace_block(text: str, name: str, body: str) -> str:
    start, end = _marker(name), _marker(name, end=True)
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        return head + block + tail
    return text.rstrip() + "\n\n" + block + "\n"


def _f(x, nd=3) -> str:
    return "n/a" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines)


def map_effect(block: dict) -> list[str]:
    """One line per MAP prior: where it beats MLE (accuracy / log-loss differences per n)."""
    acc, ll = block["accuracy"], block["log_loss"]
    lines = []
    for name in [k for k in acc if "MAP" in k]:
        da = {n: acc[name][n] - acc["pal MLE"][n] for n in acc[name]}
        dl = {n: ll[name][n] - ll["pal MLE"][n] for n in ll[name]}
        better = [n for n in da if da[n] > 0.0005]
        worse = [n for n in da if da[n] < -0.0005]
        lines.append(f"{name.split('pal ')[1]} vs MLE: accuracy " + ", ".join(f"n={n} {100 * d:+.1f}" for n, d in da.items())
                     + " points; log-loss " + ", ".join(f"n={n} {d:+.3f}" for n, d in dl.items())
                     + f" (higher accuracy at n in {{{', '.join(better) or 'none'}}}, lower at n in {{{', '.join(worse) or 'none'}}})")
    return lines


def paper_markdown(results: Path, img_rel: str) -> str:
    s = json.loads((results / "summary.json").read_text())
    persona = json.loads((results / "persona.json").read_text())
    synth = json.loads((results / "synthetic.json").read_text())
    cmd = "palrm bench --suite paper" + (" --quick" if s["profile"] == "quick" else "")
    out = [f"Produced by `{cmd}` (profile `{s['profile']}`, seed {s['seed']}, {s['seconds']:.0f} s). "
           "Raw numbers: `results/paper/*.json`.", ""]
    out.append("**Checks against the issue's thresholds** (True = met): " +
               ", ".join(f"`{k}`: {v}" for k, v in s["checks"].items()))
    out += ["", "#### Synthetic Gaussian (d = 16, K* = 3, 100 users x 100 pairs, noise 1; PAL-A, K = 3)", ""]
    rows = []
    for mode, r in synth.items():
        rows.append([mode, r["bayes_accuracy"], r["pal"]["accuracy"], r["btl"]["accuracy"], r["per-user heads"]["accuracy"],
                     r["per-user heads + shrinkage"]["accuracy"], r["oracle groups"]["accuracy"],
                     f"{r['prototype_error']['mean_distance']:.3f} ({100 * r['prototype_error']['relative']:.0f}%)"])
    out.append(_table(["users", "Bayes ceiling", "PAL-A", "BTL", "per-user heads", "heads + shrinkage", "oracle groups",
                       "prototype error (relative)"], rows))
    out += ["", "Prototype error: mean Euclidean distance between learned and true prototypes after Hungarian matching "
            "(relative: divided by the mean true prototype norm). Oracle groups for mixture users uses each user's "
            "argmax group, so it is not a ceiling there.", ""]
    ks = sorted(next(iter(synth.values()))["accuracy_vs_k"], key=int)
    out.append(_table(["users \\ K"] + ks, [[m] + [r["accuracy_vs_k"][k]["seen"] for k in ks] for m, r in synth.items()]))
    for mode, r in synth.items():
        fs = r["few_shot"]
        shots = list(fs["accuracy"]["pal MLE"])
        out += ["", f"Synthetic {mode} users, unseen test users ({fs['n_test_users']} users, {fs['n_test_pairs']} held-out "
                f"pairs, Bayes ceiling {fs['bayes_accuracy']}), accuracy after n adaptation pairs:", ""]
        out.append(_table(["method"] + [f"n={n}" for n in shots],
                          [[m.replace("pal ", "PAL-A ")] + list(c.values()) for m, c in fs["accuracy"].items()]))
        out += [""] + [f"- {line}" for line in map_effect(fs)]
    out += ["", f"![accuracy vs K, synthetic]({img_rel}/accuracy_vs_k_synthetic.png)",
            f"![d=2 partition]({img_rel}/synthetic_d2_partition.png)", f"![d=2 mixture]({img_rel}/synthetic_d2_mixture.png)", ""]
    p = s["persona_k3"]
    out += ["#### Persona K* = 3 (default recipe, MiniLM embeddings)", ""]
    out.append(_table(["method", "seen-user test accuracy"], [[k, v["accuracy"]] for k, v in persona["seen"].items()] +
                      [["(user-agnostic ceiling)", p["agnostic_ceiling"]]]))
    out += ["", f"Few-shot curve of unseen test users ({persona['few_shot_details']['n_test_users']} users, "
            f"{persona['few_shot_details']['n_test_pairs']} held-out pairs, nested shots; MAP prior strength tuned on "
            "separate validation users):", ""]
    shots = list(next(iter(persona["few_shot"].values())))
    out.append(_table(["method"] + [f"n={n}" for n in shots], [[m] + list(c.values()) for m, c in persona["few_shot"].items()]))
    ll = persona["few_shot_details"]["log_loss"]
    out += ["", "Log-loss of the PAL-B variants on the same pairs (lower is better):", ""]
    out.append(_table(["method"] + [f"n={n}" for n in shots], [[m.replace("pal ", "pal-b ")] + list(c.values()) for m, c in ll.items()]))
    tuning = persona["few_shot_details"]["prior_tuning"]
    out += ["", "Chosen prior strengths (validation users): " + ", ".join(f"{k}: {v['strength']}" for k, v in tuning.items()), ""]
    out += [f"- {line}" for line in map_effect(persona["few_shot_details"])] + [""]
    akv = persona["accuracy_vs_k"]
    ks = sorted(next(iter(akv.values())), key=int)
    rows = []
    for kind, d in akv.items():
        rows.append([f"{kind} seen"] + [d[k]["seen"] for k in ks])
        rows.append([f"{kind} unseen@10"] + [d[k]["unseen@10"] for k in ks])
    out.append(_table(["Persona K* = 3, K ="] + ks, rows))
    out += ["", f"![accuracy vs K, Persona]({img_rel}/accuracy_vs_k_persona.png)",
            f"![few-shot Persona]({img_rel}/few_shot_persona.png)", f"![few-shot synthetic]({img_rel}/few_shot_synthetic.png)",
            f"![mixture weights]({img_rel}/mixture_weights.png)", ""]
    if "persona_sweep" in s:
        out += ["#### Persona sweep (PAL-B with K = K*)", ""]
        out.append(_table(["set", "PAL-B seen", "BTL seen", "oracle groups", "agnostic ceiling", "PAL-B unseen@10"],
                          [[k, v["pal-b"], v["btl"], v.get("oracle"), v["agnostic_ceiling"], v["pal-b unseen@10"]]
                           for k, v in s["persona_sweep"].items()]))
        out.append("")
    if "paircomp" in s:
        out += ["#### psychotools paired comparisons (one-hot items, held-out pairs per subject)", ""]
        ks = sorted(next(iter(s["paircomp"].values()))["pal_a"], key=int)
        out.append(_table(["data set", "BTL"] + [f"PAL-A K={k}" for k in ks],
                          [[n, v["btl"]] + [v["pal_a"][k] for k in ks] for n, v in s["paircomp"].items()]))
        cov = s["paircomp"].get("Topmodel2007", {}).get("covariates")
        if cov:
            parts = [f"{c}: Cramér's V {cov[c]['cramers_v']}, chi-square p = {cov[c]['p_value']}"
                     for c in ("gender", "age") if c in cov and "cramers_v" in cov[c]]
            out += ["", f"Topmodel2007, PAL-A K = 2 learned groups (argmax weight, sizes {cov['group_sizes']}) vs covariates: "
                    + "; ".join(parts) + " (age split at the median)."]
        out.append("")
    for note in s.get("notes", []):
        out.append(f"- Note: {note}")
    return "\n".join(out)


def perf_markdown(results: Path, img_rel: str) -> str:
    r = json.loads((results / "perf.json").read_text())
    m = r["machine"]
    cmd = "palrm bench --suite perf" + (" --quick" if r["profile"] == "quick" else "")
    out = [f"Produced by `{cmd}` ({r['seconds']:.0f} s). Machine: {m['cpu_count']} CPUs, torch {m['torch']} "
           f"with {m['torch_threads']} thread(s), load average at start {m['loadavg_at_start']} (a shared machine: "
           "timings are noisy). Raw numbers: `results/perf/*.json`.", ""]
    out.append("**Targets** (True = met): " + ", ".join(f"`{k}`: {v}" for k, v in r["target_met"].items()))
    t = r["throughput"]
    bss = list(next(iter(t["by_kind"].values())))
    out += ["", f"Training throughput, pairs/s (Persona, {t['n_train_pairs']} training pairs, {t['input_dim']}-d cached "
            "embeddings, K = 3, default MLPs):", ""]
    out.append(_table(["model"] + [f"batch {b}" for b in bss], [[k] + [d[b]["pairs_per_s"] for b in bss] for k, d in t["by_kind"].items()]))
    out += ["", "Time to the final validation accuracy (default fit, early stopping on validation loss; within 0.5 point):", ""]
    out.append(_table(["model", "final val acc", "test acc", "epochs run", "s to final", "fit wall s"],
                      [[k, v["final_val_accuracy"], v["test_accuracy"], v["epochs_run"], f"{v['seconds_to_final']:.1f}", f"{v['fit_wall_s']:.1f}"]
                       for k, v in r["time_to_accuracy"].items()]))
    a = r["adapt"]
    out += ["", "New-user adaptation (PAL-B, 300 Adam steps):", ""]
    out.append(_table(["case", "measured", "target"], [
        ["1 user x 20 pairs, `model.adapt` (median)", f"{a['one_user_facade_ms']} ms", "< 20 ms"],
        ["1 user x 20 pairs, core `adapt_user_logits` (median)", f"{a['one_user_core_ms']} ms", ""],
        [f"{a['many_users']:,} users x 20 pairs at once, `model.adapt`", f"{a['many_users_s']} s", "< 10 s"]]))
    sc, tx = r["scoring"], r["text_scoring"]
    out += ["", "Scoring:", ""]
    out.append(_table(["case", "measured"], [
        [f"`predict_logits`, cached embeddings ({sc['n']:,} pairs)", f"{sc['predict_logits_pairs_per_s']:,} pairs/s"],
        ["raw `net.score` (PAL-B)", f"{sc['net_score_rewards_per_s']:,} rewards/s"],
        [f"MiniLM encoder alone, {tx['n_distinct_texts']} texts", f"{tx['encoder_s']} s"],
        [f"`reward_batch` end to end, {tx['n_items']} items (cache off)", f"{tx['end_to_end_s']} s"],
        ["PAL's own time in `reward_batch` (encoder replaced by a lookup)", f"{tx['pal_own_s']} s"],
        ["PAL overhead = own time / encoder time (target < 5%)", f"{100 * tx['overhead_ratio']:.1f}%"],
        ["(end to end / encoder) - 1, interleaved medians (noisy)", f"{100 * tx['end_to_end_ratio_minus_1']:.1f}%"]]))
    out += ["", "Scale (synthetic d = 16, PAL-A default MLP, K = 3, batch 1024, one epoch, fresh process per row; peak "
            "RSS measured during the fit after resetting the high-water mark):", ""]
    out.append(_table(["users", "pairs/user", "pairs", "epoch s", "pairs/s", "RSS before fit MB", "peak RSS in fit MB"],
                      [[f"{x['n_users']:,}", x["pairs_per_user"], f"{x['n_pairs']:,}", f"{x['epoch_s']:.2f}", f"{x['pairs_per_s']:,}",
                        f"{x['rss_before_fit_mb']:.0f}", f"{x['peak_rss_during_fit_mb']:.0f}"] for x in r["scale"]]))
    rows = sorted(r["scale"], key=lambda x: x["n_pairs"])
    if len(rows) >= 2:
        import numpy as np

        n = np.array([x["n_pairs"] for x in rows], dtype=float)
        t = np.array([x["epoch_s"] for x in rows], dtype=float)
        mem = np.array([x["peak_rss_during_fit_mb"] for x in rows], dtype=float)
        slope = np.polyfit(np.log(n), np.log(t), 1)[0]
        per_m = np.polyfit(n / 1e6, mem, 1)[0]
        out += ["", f"Growth over these sizes (least squares): epoch time ~ pairs^{slope:.2f}; peak RSS "
                f"+{per_m:.0f} MB per million pairs on top of a {mem.min():.0f} MB process at the smallest size."]
    out += ["", f"![throughput and scale]({img_rel}/perf.png)"]
    return "\n".join(out)


def aggregation_markdown(results: Path, img_rel: str) -> str:
    """Best-of-N win rates and standardised true rewards per group under each aggregate; the target; the cost."""
    s = json.loads((results / "summary.json").read_text())
    n = s.get("summary_n", 16)
    pops = [p for p in ("synthetic_10to1", "synthetic_3to1", "persona_10to1", "persona_3to1") if p in s]
    out = [f"Profile `{s['profile']}`. Best-of-{n}: each draw of {n} candidates keeps the one with the highest aggregated "
           "reward of the trained model (K = 2); each TRUE group judges it: win rate against a random candidate of the "
           "draw (ties half) and mean standardised true reward. `btl` = the BTL baseline's reward; `true maxmin` selects "
           "with the true rewards (the egalitarian ceiling). Cells: majority / minority.", ""]
    aggs = [a for a in ("btl", "mean", "mean:size", "maxmin", "alpha:1", "softmin:1", "quantile:0.1", "true maxmin") if a in s[pops[0]]]
    rows = []
    for a in aggs:
        row = [f"`{a}`"]
        for p in pops:
            w, r = s[p][a]["group_win_rate"], s[p][a]["group_reward"]
            row.append(f"{w['majority']:.3f} / {w['minority']:.3f} ({r['majority']:+.2f} / {r['minority']:+.2f})")
        rows.append(row)
    out.append(_table(["aggregate", *[f"{p}: win rate (reward)" for p in pops]], rows))
    acc_rows = [[p, *[f"{s[p]['test_accuracy'][m][g]:.3f}" if s[p]["test_accuracy"][m][g] is not None else "n/a"
                      for m in ("pal", "btl") for g in ("majority", "minority")]] for p in pops]
    out += ["", "Test accuracy of the trained models per true group (PAL majority, PAL minority, BTL majority, BTL minority):", "",
            _table(["population", "PAL maj.", "PAL min.", "BTL maj.", "BTL min."], acc_rows)]
    c = s["checks"]
    gain = c["synthetic_10to1_minority_gain_over"]
    out += ["", f"Target (synthetic_10to1: maxmin raises the minority's win rate by >= 15 points over `btl` and `mean`, the "
            f"majority keeps >= 50%): **{'met' if c['synthetic_10to1_target_met'] else 'missed'}**. Minority gain of "
            f"`maxmin` over `btl` {100 * gain['btl']:+.1f} points, over `mean` {100 * gain['mean']:+.1f}, over `mean:size` "
            f"{100 * gain['mean:size']:+.1f}; majority win rate under `maxmin` {c['synthetic_10to1_majority_win_rate_maxmin']:.3f}."]
    if s.get("cost"):
        cost = s["cost"]
        out += ["", f"Cost of aggregated scoring ({cost['items']} items, precomputed embeddings, {cost['population']} PAL-B, "
                f"median of {cost['repeats']} interleaved calls): one user {1000 * cost['seconds']['one_user']:.2f} ms; "
                + ", ".join(f"`{k}` {100 * v:+.1f}%" for k, v in cost["overhead_vs_one_user"].items()) + " over one user."]
    out += ["", f"![aggregation]({img_rel}/aggregation.png)"]
    return "\n".join(out)


def update_docs(doc: Path, results_root: Path, suites: list[str]) -> list[Path]:
    """Rewrite the marked blocks of `doc` for `suites` from `results_root/<suite>/`; copy the PNGs."""
    img_dir = doc.parent / "img" / "bench"
    img_dir.mkdir(parents=True, exist_ok=True)
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    written = []
    for suite in suites:
        res = results_root / suite
        if suite == "real":
            from palrm.bench.real import real_markdown

            text = replace_block(text, suite, real_markdown(json.loads((res / "summary.json").read_text())))
            written.append(doc)
            continue
        if suite == "onboarding":
            from palrm.bench.onboarding import PNGS, onboarding_markdown

            render, pngs = onboarding_markdown, PNGS
        else:
            render, pngs = {"paper": (paper_markdown, PAPER_PNGS), "perf": (perf_markdown, PERF_PNGS),
                            "aggregation": (aggregation_markdown, AGGREGATION_PNGS)}[suite]
        text = replace_block(text, suite, render(res, "img/bench"))
        for name in pngs:
            if (res / name).exists():
                shutil.copyfile(res / name, img_dir / name)
                written.append(img_dir / name)
    doc.write_text(text)
    return [doc, *written]
