"""The aggregation suite: who does best-of-N selection serve under each aggregate (issue 12)?

Populations: two groups of partition users with imbalanced sizes, 10:1 and 3:1, on

* the synthetic Gaussian set (d = 16, K* = 2, continuous ideal points: compromise items exist);
* Persona (K* = 2: politically-liberal vs politically-conservative; every statement matters to one
  group only, so trade-offs are all-or-nothing). Reported as it comes out, not tuned.

On each population (the seen users' pairs, split 70/10/20 per user) we fit PAL (PAL-A with a linear f
on synthetic, PAL-B on Persona; K = 2, mixture users, the library defaults otherwise) and the BTL
baseline. Best-of-N: each trial draws N candidate responses from the data (items / statements,
without replacement) and keeps the one with the highest aggregated reward of the trained model:

    btl          the BTL model's single reward (what a standard reward model does)
    mean, mean:size, maxmin, alpha:1, softmin:1, quantile:0.1     PAL's aggregates (palrm.aggregate)

The selection is judged by the TRUE preferences of each true group g (its true reward t_g
standardised over the whole candidate pool): its win rate, the selected response against a random
candidate of the same draw (ties count half; the expectation over that candidate is computed
exactly), and its mean standardised true reward. "true maxmin" selects with the true rewards: the
egalitarian ceiling.

summary.json keys (N = 16; every N under `by_n`):
    <population>.<aggregate>.group_win_rate.<majority|minority>
    <population>.<aggregate>.group_reward.<majority|minority>
plus `checks` (the issue's target on synthetic_10to1) and `cost` (aggregated vs one-user scoring).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from palrm.bench.common import fit, r4, set_threads, with_embeddings, write_json
from palrm.data.schema import NO_PROMPT, PairData
from palrm.data.splits import split_pairs

logger = logging.getLogger(__name__)

POPULATIONS = ("synthetic_10to1", "synthetic_3to1", "persona_10to1", "persona_3to1")
AGGREGATES = ("btl", "mean", "mean:size", "maxmin", "alpha:1", "softmin:1", "quantile:0.1")
SUMMARY_N = 16
GROUPS = ("majority", "minority")
# PAL-A for the synthetic ideal-point data, as in the paper suite: a linear f, d = 16
SYNTH_MODEL = dict(d=16, hidden=[], lr=3e-3, user_lr=0.1, batch_size=128, epochs=300, patience=20, weight_decay=0.0)


@dataclass(frozen=True)
class Profile:
    name: str
    n_majority: int  # users in the majority group; the minority has n_majority / ratio
    pairs_per_user: int
    trials: int  # best-of-N draws per N
    ns: tuple = (4, 16, 64)
    epochs: int | None = None  # cap on training epochs (None: the model's own setting)
    cost_items: int = 4096
    cost_repeats: int = 30


PROFILE = {
    "full": Profile("full", 120, 100, 5000, cost_repeats=50),
    "quick": Profile("quick", 60, 100, 2000, cost_repeats=30),
    "smoke": Profile("smoke", 20, 30, 200, ns=(4, 16), epochs=3, cost_items=256, cost_repeats=2),
}


@dataclass
class Population:
    """Pairs of the two groups, the candidate pool (prompt row, response rows of `pairs.texts`) and
    the true reward of every candidate for each group, standardised over the pool: (n_pool, 2)."""

    name: str
    pairs: PairData
    pool_prompt: int
    pool: np.ndarray
    true: np.ndarray
    kind: str
    overrides: dict
    sizes: dict


def _imbalanced_users(user_ids: list[str], group_of_user: np.ndarray, n_major: int, ratio: int) -> list[str]:
    """The first n_major users of group 0 and the first n_major // ratio of group 1."""
    g0 = [u for u, g in zip(user_ids, group_of_user) if g == 0][:n_major]
    g1 = [u for u, g in zip(user_ids, group_of_user) if g == 1][: max(1, n_major // ratio)]
    return g0 + g1


def _standardised(t: np.ndarray) -> np.ndarray:
    return (t - t.mean(0)) / np.maximum(t.std(0), 1e-12)


def synthetic_population(ratio: int, prof: Profile, seed: int) -> Population:
    from palrm.data.synthetic import build_synthetic

    ds = build_synthetic(d=16, k=2, n_users=2 * prof.n_majority, n_items=500, pairs_per_user=prof.pairs_per_user,
                         users="partition", noise=1.0, seed=seed)
    groups = ds.user_weights.argmax(1)
    users = _imbalanced_users(ds.pairs.user_ids, groups, prof.n_majority, ratio)
    pairs = ds.pairs.for_users(users).compact_users()
    items = ds.items  # (n_items, d): every item is a candidate
    true = -((items[:, None, :] - ds.prototypes[None]) ** 2).sum(-1)  # (n_items, 2) t_g(x) = -||x - p_g||^2
    return Population(f"synthetic_{ratio}to1", pairs, NO_PROMPT, np.arange(len(items)), _standardised(true), "pal-a",
                      {**SYNTH_MODEL, **({"epochs": prof.epochs} if prof.epochs else {})},
                      {"majority": prof.n_majority, "minority": max(1, prof.n_majority // ratio)})


def persona_population(ratio: int, prof: Profile, seed: int, encoder: str, source: str | None) -> Population:
    from palrm.data.persona import build_persona

    ds = build_persona(k=2, n_seen_users=2 * prof.n_majority, n_unseen_users=0, pairs_per_user=prof.pairs_per_user,
                       users="partition", source=source, seed=seed)
    groups = np.array([int(np.argmax(ds.user_weights[u])) for u in ds.pairs.user_ids])
    users = _imbalanced_users(ds.pairs.user_ids, groups, prof.n_majority, ratio)
    pairs = with_embeddings(ds.pairs, encoder).for_users(users).compact_users()
    # texts[0] is the prompt, texts[1:] the statements (rows of statement_rewards)
    return Population(f"persona_{ratio}to1", pairs, 0, np.arange(1, len(ds.statements) + 1),
                      _standardised(ds.statement_rewards.astype(np.float64)), "pal-b",
                      {"epochs": prof.epochs} if prof.epochs else {},
                      {"majority": prof.n_majority, "minority": max(1, prof.n_majority // ratio)})


def model_rewards(model, pop: Population, spec: str) -> np.ndarray:
    """(n_pool,) the trained model's reward of every candidate under aggregate `spec` ("btl": its one reward)."""
    emb = pop.pairs.embeddings
    prompt = None if pop.pool_prompt == NO_PROMPT else emb[pop.pool_prompt]
    if spec == "btl":
        return np.asarray(model.reward_embeddings("any", prompt, emb[pop.pool]))
    return np.asarray(model.reward_embeddings(None, prompt, emb[pop.pool], aggregate=spec))


def best_of_n(rewards: dict[str, np.ndarray], true: np.ndarray, n: int, trials: int, seed: int) -> dict:
    """Per aggregate: each group's win rate (selected vs a random candidate of the draw, ties half) and
    mean standardised true reward, over `trials` draws of n candidates without replacement."""
    rng = np.random.default_rng(seed)
    pool = true.shape[0]
    draws = np.argsort(rng.random((trials, pool)), axis=1)[:, :n]  # (T, n) without replacement
    t = true[draws]  # (T, n, G)
    out = {}
    for name, r in rewards.items():
        sel = np.argmax(r[draws], axis=1)  # (T,)
        ts = t[np.arange(trials), sel]  # (T, G)
        wins = (ts[:, None, :] > t).mean(1) + 0.5 * (ts[:, None, :] == t).mean(1)  # (T, G)
        out[name] = {"group_win_rate": {g: r4(wins[:, j].mean()) for j, g in enumerate(GROUPS)},
                     "group_reward": {g: r4(ts[:, j].mean()) for j, g in enumerate(GROUPS)}}
    return out


def scoring_cost(model, pop: Population, prof: Profile, seed: int) -> dict:
    """Seconds per call of scoring `cost_items` candidates for one known user vs under an aggregate
    (precomputed embeddings: the network alone, where the difference shows), median of repeats."""
    rng = np.random.default_rng(seed)
    emb = pop.pairs.embeddings
    x = emb[rng.choice(pop.pool, prof.cost_items, replace=True)]
    prompt = None if pop.pool_prompt == NO_PROMPT else emb[pop.pool_prompt]
    user = model.users_[0]
    calls = {"one_user": lambda: model.reward_embeddings(user, prompt, x)}
    for spec in ("maxmin", "mean", "alpha:1", "quantile:0.1"):
        calls[spec] = lambda spec=spec: model.reward_embeddings(None, prompt, x, aggregate=spec)
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(prof.cost_repeats):  # interleaved, so that load on the machine hits every variant alike
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"items": prof.cost_items, "repeats": prof.cost_repeats, "population": pop.name,
            "seconds": {k: round(v, 6) for k, v in med.items()},
            "overhead_vs_one_user": {k: r4(med[k] / med["one_user"] - 1) for k in calls if k != "one_user"}}


def run_population(pop: Population, prof: Profile, seed: int, say) -> tuple[dict, Any]:
    sp = split_pairs(pop.pairs, val_frac=0.1, test_frac=0.2, seed=seed)
    t0 = time.perf_counter()
    pal, pal_s = fit(pop.kind, sp.train, sp.validation, seed=seed, k=2, **pop.overrides)
    btl, btl_s = fit("btl", sp.train, sp.validation, seed=seed, **pop.overrides)
    acc = {name: _group_accuracy(m, sp.test) for name, m in (("pal", pal), ("btl", btl))}
    rewards = {spec: model_rewards(btl if spec == "btl" else pal, pop, spec) for spec in AGGREGATES}
    rewards["true maxmin"] = pop.true.min(1)
    by_n = {str(n): best_of_n(rewards, pop.true, n, prof.trials, seed + n) for n in prof.ns}
    say(f"  {pop.name}: {pop.sizes['majority']}:{pop.sizes['minority']} users, fit PAL {pal_s:.1f} s, BTL {btl_s:.1f} s; "
        f"test accuracy PAL {acc['pal']['all']}, BTL {acc['btl']['all']}")
    s16 = by_n.get(str(SUMMARY_N), next(iter(by_n.values())))
    for spec in ("btl", "mean", "mean:size", "maxmin", "alpha:1"):
        w = s16[spec]["group_win_rate"]
        say(f"    N={SUMMARY_N} {spec:>10}: win rate majority {w['majority']}, minority {w['minority']}")
    res = {"sizes": pop.sizes, "n_pairs": len(pop.pairs), "pool": int(len(pop.pool)), "trials": prof.trials,
           "fit_seconds": {"pal": round(pal_s, 2), "btl": round(btl_s, 2)}, "test_accuracy": acc,
           "pal_users_weights": _learned_groups(pal, pop), "by_n": by_n, "seconds": round(time.perf_counter() - t0, 1)}
    return res, pal


def _group_accuracy(model, test: PairData) -> dict:
    out = {"all": r4(model.evaluate(test)["accuracy"])}
    for j, g in enumerate(GROUPS):
        sub = test.select(test.group == j) if test.group is not None else None
        out[g] = r4(model.evaluate(sub)["accuracy"]) if sub is not None and len(sub) else None
    return out


def _learned_groups(model, pop: Population) -> dict:
    """Mean learned weights of each true group's users: do the two prototypes separate the groups?"""
    users = pop.pairs.user_ids
    group = np.zeros(len(users), dtype=np.int64)
    group[pop.pairs.user] = pop.pairs.group
    w = np.stack([model.user_weights(u) for u in users])
    return {g: [r4(x) for x in w[group == j].mean(0)] for j, g in enumerate(GROUPS)}


def run_aggregation(out_dir: str | Path = "results/aggregation", *, profile: str = "quick", seed: int = 0,
                    threads: int | None = 1, encoder: str = "minilm", persona_source: str | None = None, say=print) -> dict:
    """Run the suite; write OUT/aggregation.json (everything), OUT/summary.json and OUT/aggregation.png."""
    from palrm.bench import plots

    set_threads(threads)
    prof = PROFILE[profile]
    out = Path(out_dir)
    say(f"[aggregation/{profile}] best-of-N under each aggregate, judged by the true groups")
    full: dict = {"profile": profile, "seed": seed, "aggregates": list(AGGREGATES), "ns": list(prof.ns), "populations": {}}
    cost = None
    for name in POPULATIONS:
        ratio = int(name.split("_")[1].split("to")[0])
        pop = (synthetic_population(ratio, prof, seed) if name.startswith("synthetic")
               else persona_population(ratio, prof, seed, encoder, persona_source))
        full["populations"][name], pal = run_population(pop, prof, seed, say)
        if name == "persona_10to1":  # PAL-B: the prompt-conditioned network, the dearer one to score
            cost = scoring_cost(pal, pop, prof, seed)
            say(f"  cost of aggregating {cost['items']} items vs one user: "
                + ", ".join(f"{k} {100 * v:+.1f}%" for k, v in cost["overhead_vs_one_user"].items()))
    full["cost"] = cost
    summary = summarise(full)
    write_json(out / "aggregation.json", full)
    write_json(out / "summary.json", summary)
    plots.aggregation(summary, out / "aggregation.png")
    say(f"[aggregation/{profile}] wrote {out / 'summary.json'}; target on synthetic_10to1: "
        f"{'met' if summary['checks']['synthetic_10to1_target_met'] else 'missed'}")
    return summary


def summarise(full: dict) -> dict:
    summary: dict = {"profile": full["profile"], "summary_n": SUMMARY_N}
    for name, res in full["populations"].items():
        by_n = res["by_n"]
        top = by_n.get(str(SUMMARY_N), next(iter(by_n.values())))
        summary[name] = {spec: top[spec] for spec in top}
        summary[name]["by_n"] = {n: v for n, v in by_n.items() if n != str(SUMMARY_N)}
        summary[name]["test_accuracy"] = res["test_accuracy"]
    s = summary["synthetic_10to1"]
    mm = s["maxmin"]["group_win_rate"]
    gain = {ref: r4(mm["minority"] - s[ref]["group_win_rate"]["minority"]) for ref in ("btl", "mean", "mean:size")}
    summary["checks"] = {
        "synthetic_10to1_minority_gain_over": gain,
        "synthetic_10to1_majority_win_rate_maxmin": mm["majority"],
        "synthetic_10to1_target_met": bool(gain["btl"] >= 0.15 and gain["mean"] >= 0.15 and mm["majority"] >= 0.5),
        "target": "maxmin raises the minority's win rate by >= 15 points over btl and mean; majority keeps >= 50%",
    }
    if full.get("cost"):
        summary["cost"] = full["cost"]
    return summary
