"""Figures of the benchmark suites (matplotlib, Agg backend, small PNGs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _plt().close(fig)


def accuracy_vs_k(series: dict, path: Path, *, title: str, ceiling: dict | None = None, hline: dict | None = None,
                  ceiling_unseen: dict | None = None) -> None:
    """series: {label: {K: {"seen": acc, "unseen@10": acc}}}; two panels (seen, unseen@10)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, key in zip(axes, ("seen", "unseen@10")):
        for label, by_k in series.items():
            ks = sorted(by_k, key=int)
            vals = [by_k[k].get(key) for k in ks]
            if any(v is not None for v in vals):
                ax.plot([int(k) for k in ks], vals, "o-", label=label)
        for label, value in ((ceiling if key == "seen" else ceiling_unseen) or {}).items():
            ax.axhline(value, ls=":", color="gray")
            ax.text(1, value, f" {label} ceiling {value:.3f}", fontsize=7, va="bottom", color="gray")
        for label, value in (hline or {}).items():
            ax.axhline(value, ls="--", color="tab:red", alpha=0.6)
            ax.text(1, value, f" {label} {value:.3f}", fontsize=7, va="bottom", color="tab:red")
        ax.axvline(3, color="k", alpha=0.15)
        ax.set_xlabel("K (number of prototypes)")
        ax.set_title("seen users (held-out pairs)" if key == "seen" else "unseen users, 10 shots")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("pairwise accuracy")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def few_shot(blocks: dict, path: Path, *, title: str, rename: tuple | None = None) -> None:
    """blocks: {panel title: few-shot block with "accuracy" {method: {n: acc}}}."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(blocks), figsize=(5.2 * len(blocks), 3.8), squeeze=False)
    styles = {"MLE": "o-", "MAP": "^-", "btl": "s--", "heads": "x-.", "oracle": "k:"}
    for ax, (panel, block) in zip(axes[0], blocks.items()):
        for method, curve in block["accuracy"].items():
            style = next((v for k, v in styles.items() if k in method), "o-")
            label = method.replace(*rename) if rename else method
            ax.plot([int(n) for n in curve], list(curve.values()), style, label=label, ms=4)
        if "bayes_accuracy" in block:
            ax.axhline(block["bayes_accuracy"], color="gray", ls=":", label="Bayes-optimal")
        ax.set_xscale("log")
        ax.set_xlabel("adaptation pairs per new user (n)")
        ax.set_ylabel("held-out accuracy")
        ax.set_title(panel, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def ideal_points(arrays: dict, path: Path, *, title: str) -> None:
    """d = 2: true vs learned ideal points and prototypes (learned in the true prototypes' order)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharex=True, sharey=True)
    colours = np.argmax(arrays["true_weights"], 1)
    for ax, which in zip(axes, ("true", "learned")):
        ax.scatter(*arrays["items"].T, s=3, color="lightgray", label="items")
        ax.scatter(*arrays[f"{which}_ideal"].T, c=colours, cmap="tab10", vmin=0, vmax=9, s=14, alpha=0.8, label="user ideal points")
        ax.scatter(*arrays[f"{which}_protos"].T, marker="*", s=260, c=range(len(arrays[f"{which}_protos"])), cmap="tab10",
                   vmin=0, vmax=9, edgecolors="k", label="prototypes")
        if which == "learned":
            ax.scatter(*arrays["true_protos"].T, marker="+", s=120, color="k", label="true prototypes")
        ax.set_title(f"{which}", fontsize=9)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def weight_histograms(weights: dict, path: Path, *, extra: dict | None = None) -> None:
    """Histograms of the largest mixture weight per user (1 = a pure prototype), one panel per set."""
    items = dict(weights, **(extra or {}))
    plt = _plt()
    fig, axes = plt.subplots(1, len(items), figsize=(4.5 * len(items), 3.2), squeeze=False)
    for ax, (label, w) in zip(axes[0], items.items()):
        w = np.asarray(w)
        k = w.shape[1]
        ax.hist(w.max(1), bins=np.linspace(1 / k, 1, 21), color="tab:blue", alpha=0.8)
        ax.set_xlabel("largest mixture weight of a user")
        ax.set_ylabel("users")
        ax.set_title(label, fontsize=9)
    _save(fig, path)


def bars(values: dict, path: Path, *, title: str, ylabel: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.bar(list(values), list(values.values()), color="tab:blue")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelsize=7, rotation=20)
    _save(fig, path)


def aggregation(summary: dict, path: Path) -> None:
    """Best-of-N (summary_n) win rate of the majority and the minority under each aggregate, one panel per population."""
    plt = _plt()
    pops = [p for p in ("synthetic_10to1", "synthetic_3to1", "persona_10to1", "persona_3to1") if p in summary]
    aggs = [a for a in ("btl", "mean", "mean:size", "maxmin", "alpha:1", "softmin:1", "quantile:0.1", "true maxmin")
            if a in summary[pops[0]]]
    fig, axes = plt.subplots(1, len(pops), figsize=(3.3 * len(pops), 3.4), sharey=True, squeeze=False)
    x = np.arange(len(aggs))
    for ax, pop in zip(axes[0], pops):
        for j, (group, color) in enumerate((("majority", "tab:blue"), ("minority", "tab:orange"))):
            vals = [summary[pop][a]["group_win_rate"][group] for a in aggs]
            ax.bar(x + (j - 0.5) * 0.38, vals, 0.38, label=group, color=color)
        ax.axhline(0.5, ls=":", color="gray")
        ax.set_xticks(x, aggs, rotation=60, fontsize=7)
        ax.set_title(pop.replace("_", " "), fontsize=9)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel(f"win rate vs a random candidate (N={summary.get('summary_n', 16)})", fontsize=8)
    axes[0][0].legend(fontsize=7, loc="lower left")
    _save(fig, path)


def onboarding_curves(summary: dict, path: Path) -> None:
    """Onboarding suite: new users' accuracy vs answered queries, active vs random, per data set."""
    sets = [s for s in ("persona", "synthetic", "polis") if s in summary]
    plt = _plt()
    fig, axes = plt.subplots(1, len(sets), figsize=(4.6 * len(sets), 3.6), squeeze=False)
    for ax, name in zip(axes[0], sets):
        block = summary[name]
        for order, style in (("active", "o-"), ("random", "s--")):
            ns = [int(n) for n in block[order]]
            ax.errorbar(ns, list(block[order].values()), yerr=[block[order + "_user_sd"][str(n)] / 4 for n in ns],
                        fmt=style, capsize=2, label=f"{order} (+-sd/4 over users)")
        ax.axhline(block["population"], color="tab:red", ls=":", label="population")
        if "bayes_accuracy" in block:
            ax.axhline(block["bayes_accuracy"], color="gray", ls="-.", label="Bayes ceiling")
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks([0, 1, 2, 3, 5, 10, 20])
        ax.set_xticklabels(["0", "1", "2", "3", "5", "10", "20"])
        ax.set_xlabel("answered queries")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("new users' test accuracy")
    axes[0][0].legend(fontsize=7)
    _save(fig, path)


def onboarding_reliability(summary: dict, path: Path) -> None:
    """Onboarding suite: reliability diagrams (known users raw / temperature, new users' posterior predictive)."""
    sets = [s for s in ("persona", "synthetic", "polis") if s in summary]
    plt = _plt()
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.8), squeeze=False)
    for ax, name in zip(axes[0], sets):
        cal = summary[name]["calibration"]
        series = {"known (raw)": cal["known_users"]["reliability_raw"],
                  "known (temperature)": cal["known_users"]["reliability_temperature"]}
        for n in ("1", "5", "20"):
            series[f"new n={n} (predictive)"] = cal["new_users"][n]["predictive"]["reliability"]
        for label, rows in series.items():
            pts = [(r["confidence"], r["accuracy"]) for r in rows if r["count"] >= 5]
            if pts:
                ax.plot(*zip(*pts), "o-", ms=3, label=label)
        ax.plot([0.5, 1], [0.5, 1], "k:", lw=1)
        ax.set_xlabel("confidence max(p, 1-p)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize=6)
    _save(fig, path)
