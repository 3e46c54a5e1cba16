"""`palrm report`: one self-contained HTML page that says whether personalization pays on a data set.

(Not to be confused with palrm.bench.report, which writes the tables of docs/benchmarks.md.)

What the report needs
---------------------
* a trained model (a directory written by `PALRewardModel.save`, e.g. RUN_DIR/model of `palrm train`);
* pair files in palrm's format. Their rows are used by user and by `split`:

  ============================ =================== =============================================
  rows                         split column        used for
  ============================ =================== =============================================
  users the model knows        test                seen-user accuracy (PAL vs BTL, per user)
  users the model knows        train / validation  training the BTL baseline when none is given
  users the model does not     train (or absent)   the new users' adaptation pool, in file order
  know (new users)             test                the new users' held-out pairs (few-shot curve)
  ============================ =================== =============================================

  `palrm data NAME --out FILE` writes exactly this (FILE and FILE.unseen.jsonl). Without a split
  column, the known users' pairs are split per user (`split_pairs`, 70/10/20, the model's seed) and
  the page warns that the model may have trained on its "held-out" pairs; new users get
  `few_shot_split`.
* a BTL baseline: a saved BTL model (`btl=`, CLI `--btl DIR`), else one is trained here on the known
  users' train rows (validation rows for early stopping) with the model's own configuration and
  encoder. If the model itself is BTL, it is its own baseline.
* optionally `selection.json` (model selection of `palrm train`, read from the model directory or its
  parent, the run directory): the accuracy-vs-K section; without it that section is a note.

The page holds PAL vs BTL with bootstrap intervals over users (seen users, and new users at every
n), a one-line verdict, accuracy vs K, the few-shot curve from n = 0 (population weights), the
per-user accuracy distribution, and the learned groups: for each prototype the responses it ranks
highest and lowest, the users' weights (a simplex for K = 3, histograms otherwise) and, when a
`group` column exists, the adjusted Rand index between argmax prototypes and those groups. Plots
are inline PNG (data: URIs); the numbers are also embedded as JSON
(`<script type="application/json" id="palrm-report-data">`). No network is needed to view it.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import html
import io
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from palrm.data.schema import NO_PROMPT, PairData
from palrm.evaluation.bootstrap import adjusted_rand_index, correct_pairs, per_user_sums, user_bootstrap

logger = logging.getLogger(__name__)

__all__ = ["SHOTS", "build_report", "divide_pairs", "read_selection", "render_html", "selection_rows"]

SHOTS = (0, 1, 2, 5, 10, 20)
SELECTION_FILE = "selection.json"
TOP_RESPONSES = 5
MAX_SCORED_ITEMS = 4000


# ---------------------------------------------------------------------------------------------- data
@dataclasses.dataclass
class DividedPairs:
    """The parts of the report's data (see the module docstring)."""

    seen_test: PairData
    btl_train: PairData
    btl_val: PairData
    new_pool: PairData
    new_test: PairData
    notes: list[str]


def divide_pairs(data: PairData, known_users: Sequence[str], *, seed: int = 0, max_shots: int = max(SHOTS)) -> DividedPairs:
    """Divide `data` into seen-user test pairs, BTL training pairs and new users' pool / test pairs."""
    from palrm.data.splits import few_shot_split, split_pairs

    known_set = {str(u) for u in known_users}
    is_known = np.array([u in known_set for u in data.user_ids], dtype=bool)[data.user] if len(data) else np.zeros(0, bool)
    known, new = data.select(is_known).compact_users(), data.select(~is_known).compact_users()
    notes = []
    if data.split is not None:
        test = known.split == "test"
        seen_test, btl_train, btl_val = known.select(test), known.select(known.split == "train"), known.select(known.split == "validation")
        new_test_mask = new.split == "test"
        new_pool, new_test = new.select(~new_test_mask), new.select(new_test_mask)
        if len(new) and not new_test_mask.any():
            notes.append("the new users' rows have no split=test rows: they cannot be evaluated (mark held-out rows split=test)")
    else:
        parts = split_pairs(known, val_frac=0.1, test_frac=0.2, seed=seed)
        seen_test, btl_train, btl_val = parts.test, parts.train, parts.validation
        new_pool, new_test = few_shot_split(new, max_shots=max_shots, seed=seed) if len(new) else (new, new)
        if len(known):
            notes.append("the data has no split column: the known users' pairs were split here (20% per user held out, "
                         f"seed {seed}); the model may have been trained on some of them, so its seen-user accuracy can be "
                         "optimistic. For an honest report pass the file `palrm train` used with a split column "
                         "(`palrm data` writes one).")
    if len(seen_test) == 0 and len(known):
        notes.append("no held-out pairs of known users (rows of users the model knows with split=test)")
    return DividedPairs(seen_test, btl_train, btl_val, new_pool, new_test, notes)


def _renamed(data: PairData, suffix: str) -> PairData:
    return dataclasses.replace(data, user_ids=[f"{u}{suffix}" for u in data.user_ids])


def _concat(parts: list[PairData]) -> PairData:
    """Concatenate parts of ONE PairData (shared texts) with different user lists."""
    first, offset, user_ids, users = parts[0], 0, [], []
    for p in parts:
        users.append(p.user + offset)
        user_ids += p.user_ids
        offset += len(p.user_ids)
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    return dataclasses.replace(first, user_ids=user_ids, user=np.concatenate(users), prompt=cat("prompt"), chosen=cat("chosen"),
                               rejected=cat("rejected"), split=None, group=None)


# ---------------------------------------------------------------------------------------------- scoring
def _scores(model, data: PairData, prompt: np.ndarray, response: np.ndarray, weights: str) -> np.ndarray:
    """Rewards (n,) of (prompt, response) index pairs into `data` under explicit mixture `weights`."""
    if len(response) == 0:
        return np.zeros(0)
    if data.embeddings is None:
        prompts = data.text_of(prompt)
        return np.asarray(model.reward_batch([p or None for p in prompts], data.text_of(response),
                                             weights=[weights] * len(response)), dtype=np.float64)
    out = np.zeros(len(response))
    for p in np.unique(prompt):
        at = np.flatnonzero(prompt == p)
        vec = None if p == NO_PROMPT else data.embeddings[p]
        out[at] = model.reward_embeddings(None, vec, data.embeddings[response[at]], weights=weights)
    return out


def _population_logits(model, data: PairData) -> np.ndarray:
    """Pair logits (n,) under the population's weights: r(chosen) - r(rejected)."""
    return _scores(model, data, data.prompt, data.chosen, "population") - _scores(model, data, data.prompt, data.rejected, "population")


def _few_shot_logits(model, pool: PairData, test: PairData, ns: Sequence[int]) -> dict[int, np.ndarray]:
    """{n: pair logits (len(test),)} after adapting each new user on its first n pool pairs (n = 0: population).

    Every (user, n) is onboarded as its own user of one copy of the model in one `adapt` call
    (users are adapted independently, and the prior is fitted to the known users only).
    """
    from palrm.data.splits import take_shots

    out = {0: _population_logits(model, test)} if 0 in ns else {}
    users = test.users_present()
    shots = {n: take_shots(pool, n).for_users(users).compact_users() for n in ns if n > 0}
    shots = {n: s for n, s in shots.items() if len(s)}
    if shots:
        model.adapt(_concat([_renamed(s, f" [n={n}]") for n, s in shots.items()]))
    fallback = out.get(0) if 0 in out else _population_logits(model, test)
    for n in ns:
        if n == 0:
            continue
        z = model.predict_logits(_renamed(test, f" [n={n}]")) if n in shots else np.full(len(test), np.nan)
        out[n] = np.where(np.isnan(z), fallback, z)  # users without pool pairs: the population
    return out


def _personalized(model) -> bool:
    return model.net_.has_users


def _label(model) -> str:
    kind = model.config_.model.kind
    offset = getattr(model.config_.model, "offset", "none")  # the richer user model (issue 9), where present
    if kind == "btl":
        return "BTL" if offset in (None, "none") else "BTL + per-user heads"
    return f"{kind.upper()} (K={model.k}" + ("" if offset in (None, "none") else f", {offset} offset") + ")"


def _train_btl(model, parts: DividedPairs):
    """A BTL of the model's own class and configuration (kind=btl), like sklearn's clone: nothing here
    imports the facade."""
    if len(parts.btl_train) == 0:
        return None
    config = model.config_.updated({"model.kind": "btl", "train.progress": False})
    logger.info("report: training a BTL baseline on %d pairs of the known users", len(parts.btl_train))
    val = parts.btl_val if len(parts.btl_val) else None
    return type(model)(config).fit(parts.btl_train, val)


# ---------------------------------------------------------------------------------------------- selection
def read_selection(model_dir: str | os.PathLike | None) -> tuple[dict | None, str | None]:
    """(selection.json's content, its path) from the model directory or its parent; (None, None) if absent."""
    if model_dir is None:
        return None, None
    for d in (Path(model_dir), Path(model_dir).parent):
        path = d / SELECTION_FILE
        if path.is_file():
            try:
                return json.loads(path.read_text()), str(path)
            except json.JSONDecodeError as exc:
                logger.warning("%s is not valid JSON (%s); the accuracy-vs-K section is skipped", path, exc)
                return None, str(path)
    return None, None


def _flat_numbers(obj: Any, prefix: str = "") -> dict[str, float]:
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flat_numbers(v, f"{prefix}{k}."))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool) and np.isfinite(obj):
        out[prefix[:-1]] = float(obj)
    return out


def selection_rows(selection: dict) -> list[dict]:
    """Candidates of selection.json as rows {name, family, k, metrics {path: value}, winner}.

    Accepts `candidates` as a list of dicts or a {name: dict} mapping; K is read from `k` / `K`
    (also inside `params` / `config`); every numeric leaf is a metric (dotted path).
    """
    raw = selection.get("candidates", [])
    items = list(raw.items()) if isinstance(raw, dict) else [(None, c) for c in raw]
    winner = selection.get("winner")
    winner = winner.get("name") if isinstance(winner, dict) else winner
    rows = []
    for key, cand in items:
        if not isinstance(cand, dict):
            continue
        name = str(cand.get("name", key if key is not None else f"candidate {len(rows)}"))
        k = next((c.get(f) for c in (cand, cand.get("params") or {}, cand.get("config") or {}) if isinstance(c, dict)
                  for f in ("k", "K") if isinstance(c.get(f), int)), None)
        family = re.sub(r"\s*K\s*=\s*\d+", "", name).strip() or str(cand.get("kind", name))  # "pal-b K=3 + offset" -> "pal-b + offset"
        metrics = {p: v for p, v in _flat_numbers(cand).items() if p.split(".")[-1] not in ("k", "K", "seed")}
        if family == "btl" or cand.get("kind") == "btl":
            k = None  # BTL has no prototypes: a horizontal line, not a point at K = 1
        rows.append({"name": name, "family": family, "k": k, "metrics": metrics, "winner": winner is not None and name == str(winner)})
    return rows


def _metric_title(metric: str) -> str:
    held = re.fullmatch(r"heldout\.(\d+)\.accuracy", metric)
    if held:
        return f"held-out users onboarded on {held.group(1)} pairs"
    return {"known.accuracy": "known users, validation pairs"}.get(metric, metric)


def _metric_header(metric: str) -> str:
    held = re.fullmatch(r"heldout\.(\d+)\.accuracy", metric)
    if held:
        return f"held-out users acc @{held.group(1)}"
    return {"known.accuracy": "known users acc", "known.log_loss": "known users log-loss",
            "heldout_mean_log_loss": "held-out users log-loss"}.get(metric, metric)


def selection_metrics(rows: list[dict]) -> tuple[list[str], list[str]]:
    """(metrics to plot against K, metrics for the table) of `selection_rows`.

    palrm's own selection.json has `known` (validation pairs of the known users) and `heldout`
    ({n: metrics} of users left out of the fit, onboarded on n pairs): plot known accuracy and the
    held-out accuracy at n = 1 and the largest n. Other files: every accuracy-like metric.
    """
    present = {m for r in rows for m in r["metrics"]}
    if "known.accuracy" in present:
        held = sorted({int(m.split(".")[1]) for m in present if re.fullmatch(r"heldout\.\d+\.accuracy", m)})
        picks = ["known.accuracy"] + [f"heldout.{n}.accuracy" for n in dict.fromkeys([n for n in (1, held[-1] if held else None) if n in held])]
        table = ["known.log_loss", "known.accuracy", "heldout_mean_log_loss"] + \
            [f"heldout.{n}.accuracy" for n in dict.fromkeys([n for n in (0, 1, held[-1] if held else None) if n in held])] + ["score"]
        return picks, [m for m in table if m in present]
    accuracy = sorted(m for m in present if "acc" in m.lower())
    return accuracy[:3], sorted(present)


# ---------------------------------------------------------------------------------------------- the numbers
def _acc_block(pair_users, correct: dict[str, np.ndarray], diffs, n_boot, seed) -> tuple[dict, dict]:
    users = sorted({str(u) for u in pair_users})
    sums, counts = {}, None
    for name, c in correct.items():
        sums[name], counts = per_user_sums(c, pair_users, users)
    stats = user_bootstrap(sums, counts if counts is not None else np.zeros(0), n_boot=n_boot, seed=seed, differences=diffs)
    per_user = {name: (s / np.maximum(counts, 1)).tolist() for name, s in sums.items()}
    return stats, per_user


def build_report(model, data: PairData, *, btl=None, selection: dict | None = None, selection_path: str | None = None,
                 ns: Sequence[int] = SHOTS, n_boot: int = 1000, seed: int = 0, title: str | None = None) -> dict:
    """Every number and figure of the report as a dict (`render_html` turns it into the page).

    `model`: a fitted PALRewardModel (it is copied before new users are onboarded; the caller's model is
    not modified). `btl`: a fitted BTL PALRewardModel or None (trained here, see the module docstring).
    """
    model = copy.deepcopy(model)
    model.config_.train.progress = False
    parts = divide_pairs(data, model.users_, seed=seed, max_shots=max(ns))
    notes = list(parts.notes)
    name = _label(model)
    if not _personalized(model):
        btl, btl_origin = model, "the model itself is BTL (no per-user parameters)"
    elif btl is not None:
        btl_origin = "a saved BTL model"
    else:
        btl = _train_btl(model, parts)
        btl_origin = (f"trained for this report on {len(parts.btl_train)} train pairs of the known users (the model's "
                      "configuration with kind=btl)") if btl is not None else None
        if btl is None:
            notes.append("no BTL baseline: no saved BTL model was given and the known users have no split=train rows to train one")
    result: dict = {"title": title or f"palrm report: {name}", "model": {"label": name, "kind": model.config_.model.kind,
                    "k": model.k, "n_users": len(model.users_), "encoder": model.config_.encoder.spec},
                    "data": {"source": data.source, "n_pairs": len(data), "n_users": len(data.users_present()),
                             "seen_test_pairs": len(parts.seen_test), "new_users": len(parts.new_test.users_present()),
                             "new_pool_pairs": len(parts.new_pool), "new_test_pairs": len(parts.new_test)},
                    "btl_origin": btl_origin, "notes": notes, "figures": {}}
    methods = {"model": model} if btl is None or btl is model else {"model": model, "btl": btl}
    diffs = [("model", "btl")] if "btl" in methods else []

    # seen users: held-out pairs of known users
    seen = parts.seen_test
    if len(seen):
        correct = {m: correct_pairs(obj.predict_logits(seen)) for m, obj in methods.items()}
        stats, per_user = _acc_block(seen.pair_user_ids, correct, diffs, n_boot, seed)
        result["seen"], result["per_user_seen"] = stats, per_user

    # new users: the few-shot curve from n = 0
    new_test = parts.new_test
    if len(new_test):
        ns = sorted({int(n) for n in ns})
        btl_correct = correct_pairs(btl.predict_logits(new_test)) if "btl" in methods else None
        curve_logits = _few_shot_logits(copy.deepcopy(model), parts.new_pool, new_test, ns) if _personalized(model) else \
            {n: model.predict_logits(new_test) for n in ns}
        curve = {}
        for n in ns:
            correct = {"model": correct_pairs(curve_logits[n])}
            if btl_correct is not None:
                correct["btl"] = btl_correct
            curve[str(n)], _ = _acc_block(new_test.pair_user_ids, correct, diffs, n_boot, seed)
        result["new_users"] = curve
        result["adapt"] = {"prior": model.config_.adapt.prior, "steps": model.config_.adapt.steps}

    result["verdict"] = _verdict(result, name)

    # learned groups
    if _personalized(model) and model.k > 1:
        result["groups"] = _groups(model, data, parts, seed)

    # accuracy vs K
    result["selection"] = {"path": selection_path, "rows": selection_rows(selection) if selection else None,
                           "winner": (selection or {}).get("winner"), "reason": (selection or {}).get("reason") or (selection or {}).get("why")}
    result["figures"] = _figures(result)
    return result


def _fmt_ci(block: dict | None, scale: float = 100.0, signed: bool = False) -> str:
    if not block or block.get("estimate") is None:
        return "n/a"
    sign = "+" if signed else ""
    return f"{block['estimate'] * scale:{sign}.1f} [{block['low'] * scale:{sign}.1f}, {block['high'] * scale:{sign}.1f}]"


def _verdict(result: dict, name: str) -> str:
    """One line: does personalization pay (difference to BTL beyond the 95% interval over users)?"""
    if result["model"]["kind"] == "btl":
        return "The model is BTL: one reward for everybody (no personal structure was modelled)."
    lines = []
    for where, block in (("known users", result.get("seen")),
                         *((f"new users after {n} pairs", result.get("new_users", {}).get(n)) for n in
                           ([max(result.get("new_users", {}), key=int)] if result.get("new_users") else []))):
        diff = (block or {}).get("model - btl")
        if not diff or diff["estimate"] is None:
            continue
        if diff["low"] > 0:
            lines.append(f"on {where} {name} beats BTL by {diff['estimate'] * 100:.1f} points (95% CI {diff['low'] * 100:+.1f} to {diff['high'] * 100:+.1f})")
        elif diff["high"] < 0:
            lines.append(f"on {where} BTL beats {name} by {-diff['estimate'] * 100:.1f} points (95% CI {-diff['high'] * 100:+.1f} to {-diff['low'] * 100:+.1f})")
        else:
            lines.append(f"on {where} {name} and BTL are within each other's interval (difference {diff['estimate'] * 100:+.1f} points, "
                         f"95% CI {diff['low'] * 100:+.1f} to {diff['high'] * 100:+.1f})")
    if not lines:
        return "No comparison with BTL was possible (see the notes)."
    pays = all(" beats BTL" in line for line in lines)
    hurts = any("BTL beats" in line for line in lines)
    head = "Personalization pays" if pays else ("Personalization does not pay" if hurts else "No evidence that personalization pays")
    return f"{head}: " + "; ".join(lines) + "."


def _groups(model, data: PairData, parts: DividedPairs, seed: int) -> dict:
    k = model.k
    users = list(model.users_)
    weights = np.stack([model.user_weights(u) for u in users]) if users else np.zeros((0, k))  # (U, K)
    out: dict = {"k": k, "weights": weights.tolist(), "users": users}
    # true groups of the known users (mode of the group column), for the adjusted Rand index
    if data.group is not None:
        known = {u: i for i, u in enumerate(users)}
        truth: dict[int, list[int]] = {}
        for u, g in zip(data.pair_user_ids, data.group):
            if u in known:
                truth.setdefault(known[u], []).append(int(g))
        rows = sorted(truth)
        if rows:
            true = np.array([np.bincount(np.array(truth[r]) - min(truth[r])).argmax() + min(truth[r]) for r in rows])
            learned = weights[rows].argmax(1)
            names = {v: k for k, v in (data.meta.get("group_labels") or {}).items()}  # string labels of the group column
            out["ari"] = {"value": adjusted_rand_index(true, learned), "n_users": len(rows),
                          "true_groups": true.tolist(), "learned_groups": learned.tolist(), "rows": rows,
                          "group_names": {str(g): names.get(int(g), str(g)) for g in sorted(set(true.tolist()))}}
    # responses each prototype ranks highest / lowest (distinct (prompt, response) items of the data)
    items = np.unique(np.concatenate([np.stack([data.prompt, data.chosen], 1), np.stack([data.prompt, data.rejected], 1)]), axis=0)
    if len(items) > MAX_SCORED_ITEMS:
        items = items[np.sort(np.random.default_rng(seed).choice(len(items), MAX_SCORED_ITEMS, replace=False))]
    protos = []
    for g in range(k):
        s = _scores(model, data, items[:, 0], items[:, 1], f"group:{g}")
        order = np.argsort(-s, kind="stable")
        pick = lambda idx: [{"prompt": data.text_of([items[i, 0]])[0], "response": data.texts[items[i, 1]],  # noqa: E731
                             "reward": float(s[i])} for i in idx]
        protos.append({"highest": pick(order[:TOP_RESPONSES]), "lowest": pick(order[::-1][:TOP_RESPONSES]),
                       "share": float((weights.argmax(1) == g).mean()) if len(weights) else 0.0})
    out["prototypes"], out["n_items_scored"] = protos, int(len(items))
    return out


# ---------------------------------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figures(result: dict) -> dict[str, str]:
    figs = {}
    plt = _plt()
    label = result["model"]["label"]
    if result.get("new_users"):
        curve = result["new_users"]
        ns = sorted(curve, key=int)
        x = np.arange(len(ns))
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        for key, style, name in (("model", "o-", label), ("btl", "s--", "BTL")):
            pts = [curve[n].get(key) for n in ns]
            if not pts[0] or pts[0]["estimate"] is None:
                continue
            est = np.array([p["estimate"] for p in pts])
            err = np.array([[p["estimate"] - p["low"], p["high"] - p["estimate"]] for p in pts]).T
            ax.errorbar(x, est, yerr=err, fmt=style, capsize=3, label=name)
        ax.set_xticks(x, ns)
        ax.set_xlabel("adaptation pairs per new user (n; 0 = population weights)")
        ax.set_ylabel("held-out accuracy")
        ax.set_title("new users: few-shot curve (95% CI over users)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        figs["few_shot"] = _png(fig)
    if result.get("per_user_seen"):
        per = result["per_user_seen"]
        fig, axes = plt.subplots(1, 2 if "btl" in per else 1, figsize=(9 if "btl" in per else 5, 3.4), squeeze=False)
        bins = np.linspace(0, 1, 21)
        for key, name, colour in (("model", label, "tab:blue"), ("btl", "BTL", "tab:orange")):
            if key in per:
                axes[0][0].hist(per[key], bins=bins, alpha=0.6, label=name, color=colour)
        axes[0][0].set_xlabel("per-user accuracy (held-out pairs)")
        axes[0][0].set_ylabel("users")
        axes[0][0].legend(fontsize=8)
        axes[0][0].set_title("known users: accuracy distribution", fontsize=10)
        if "btl" in per:
            ax = axes[0][1]
            ax.scatter(per["btl"], per["model"], s=10, alpha=0.6)
            ax.plot([0, 1], [0, 1], color="gray", ls=":")
            ax.set_xlabel("BTL accuracy of a user")
            ax.set_ylabel(f"{label} accuracy of the user")
            ax.set_title("one point per known user", fontsize=10)
        figs["per_user"] = _png(fig)
    groups = result.get("groups")
    if groups and groups["weights"]:
        w = np.asarray(groups["weights"])
        k = w.shape[1]
        colour = np.zeros(len(w))
        if "ari" in groups:
            colour[:] = -1
            colour[groups["ari"]["rows"]] = groups["ari"]["true_groups"]
        if k == 3:
            fig, ax = plt.subplots(figsize=(4.8, 4.4))
            corners = np.array([[0, 0], [1, 0], [0.5, np.sqrt(3) / 2]])
            xy = w @ corners  # (U, 2)
            ax.plot(*np.vstack([corners, corners[:1]]).T, color="k", lw=0.8)
            cmap = plt.get_cmap("tab10")
            if "ari" in groups:  # one colour per value of the group column, named in the legend
                for g, name in groups["ari"]["group_names"].items():
                    at = colour == int(g)
                    ax.scatter(*xy[at].T, color=cmap((int(g) + 1) % 10), s=14, alpha=0.7, label=str(name))
                if (colour == -1).any():
                    ax.scatter(*xy[colour == -1].T, color="lightgray", s=14, alpha=0.7, label="no group")
                ax.legend(fontsize=7, loc="upper right", title="group column", title_fontsize=7)
            else:
                ax.scatter(*xy.T, color=cmap(0), s=14, alpha=0.7)
            for i, (cx, cy) in enumerate(corners):
                ax.text(cx, cy + (0.04 if i == 2 else -0.07), f"prototype {i}", ha="center", fontsize=8)
            ax.set_xlim(-0.12, 1.12)
            ax.set_ylim(-0.12, np.sqrt(3) / 2 + 0.12)
            ax.set_aspect("equal")
            ax.axis("off")
            ax.set_title("users' weights on the simplex" + (" (colour: group column)" if "ari" in groups else ""), fontsize=10)
        else:
            cols = min(k, 4)
            rows = (k + cols - 1) // cols
            fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.4 * rows), squeeze=False)
            for g in range(rows * cols):
                ax = axes[g // cols][g % cols]
                if g >= k:
                    ax.axis("off")
                    continue
                ax.hist(w[:, g], bins=np.linspace(0, 1, 21), color="tab:blue", alpha=0.8)
                ax.set_title(f"prototype {g}", fontsize=9)
                ax.set_xlabel("weight w_uk")
            axes[0][0].set_ylabel("users")
        figs["weights"] = _png(fig)
    rows = (result.get("selection") or {}).get("rows")
    if rows:
        metrics, _ = selection_metrics(rows)
        if metrics:
            fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.4), squeeze=False, sharey=True)
            for ax, metric in zip(axes[0], metrics):
                families = sorted({r["family"] for r in rows})
                for fam in families:
                    pts = sorted((r["k"], r["metrics"][metric]) for r in rows if r["family"] == fam and r["k"] is not None and metric in r["metrics"])
                    flat = [r["metrics"][metric] for r in rows if r["family"] == fam and r["k"] is None and metric in r["metrics"]]
                    if pts:
                        ax.plot(*zip(*pts), "o-", label=fam, ms=4)
                    for v in flat:
                        ax.axhline(v, ls="--", lw=1, alpha=0.7, label=fam, color="gray" if "btl" not in fam.lower() else "tab:orange")
                for r in rows:
                    if r["winner"] and metric in r["metrics"] and r["k"] is not None:
                        ax.plot([r["k"]], [r["metrics"][metric]], "*", ms=14, color="gold", mec="k", label="selected")
                ax.set_xlabel("K (number of prototypes)")
                ax.set_title(_metric_title(metric), fontsize=9)
                ax.grid(alpha=0.3)
            axes[0][0].set_ylabel("validation accuracy")
            handles, labels = axes[0][0].get_legend_handles_labels()
            uniq = dict(zip(labels, handles))
            axes[0][-1].legend(uniq.values(), uniq.keys(), fontsize=7)
            figs["accuracy_vs_k"] = _png(fig)
    return figs


# ---------------------------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f4f4f4;text-align:center}td:first-child{white-space:nowrap}td.t{text-align:left;max-width:420px;overflow-wrap:anywhere}
.verdict{font-size:1.08em;background:#eef5ff;border-left:4px solid #3b7dd8;padding:.6em .9em}
.note{background:#fff8e5;border-left:4px solid #e0a800;padding:.4em .8em;margin:.4em 0}
img{max-width:100%;display:block;margin:.6em 0}table.narrow{font-size:.82em}table.narrow th{font-weight:600}.small{color:#666;font-size:.88em}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _img(figs: dict, key: str, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{figs[key]}">' if key in figs else ""


def _short(text: str, n: int = 180) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def render_html(result: dict) -> str:
    """The self-contained page (inline CSS and PNGs, no scripts that run, no external resources)."""
    figs = result.get("figures", {})
    label = result["model"]["label"]
    has_btl = any("btl" in (result.get(s) or {}) for s in ("seen",)) or any(
        "btl" in b for b in (result.get("new_users") or {}).values())
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<title>{_e(result['title'])}</title>",
           f"<style>{_CSS}</style></head><body>", f"<h1>{_e(result['title'])}</h1>"]
    m, d = result["model"], result["data"]
    out.append(f'<p class="small">model: {_e(m["label"])}, {m["n_users"]} known users, encoder {_e(m["encoder"])}. '
               f'data: {_e(d["source"])}: {d["n_pairs"]} pairs of {d["n_users"]} users; {d["seen_test_pairs"]} held-out pairs of '
               f'known users; {d["new_users"]} new users ({d["new_pool_pairs"]} adaptation-pool pairs, {d["new_test_pairs"]} test pairs). '
               f'BTL baseline: {_e(result.get("btl_origin") or "none")}.</p>')
    out.append(f'<p class="verdict" id="verdict">{_e(result["verdict"])}</p>')
    out += [f'<p class="note">{_e(n)}</p>' for n in result.get("notes", [])]

    out.append(f"<h2>{_e(label)} vs BTL</h2>")
    out.append('<p class="small">Pair-weighted accuracy in % with 95% bootstrap intervals over users '
               f'({result.get("seen", {}).get("n_boot", 1000)} draws of the users with replacement; differences paired).</p>')
    heads = ["users", "pairs", _e(label)] + (["BTL", f"{_e(label)} − BTL"] if has_btl else [])
    out.append("<table><tr><th>set</th>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr>")
    blocks = [("known users, held-out pairs", result.get("seen"))]
    blocks += [(f"new users, n = {n}" + (" (population)" if n == "0" else ""), b) for n, b in (result.get("new_users") or {}).items()]
    for name, b in blocks:
        if not b:
            continue
        cells = [b["n_users"], b["n_pairs"], _fmt_ci(b.get("model"))]
        if has_btl:
            cells += [_fmt_ci(b.get("btl")), _fmt_ci(b.get("model - btl"), signed=True)]
        out.append(f'<tr><td class="t">{_e(name)}</td>' + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    out.append("</table>")

    out.append("<h2>Accuracy vs K (model selection)</h2>")
    sel = result.get("selection") or {}
    if sel.get("rows"):
        out.append(f'<p class="small">from {_e(sel["path"])}; selected: <b>{_e(sel.get("winner"))}</b>'
                   + (f" ({_e(sel['reason'])})" if sel.get("reason") else "") + "</p>")
        out.append(_img(figs, "accuracy_vs_k", "validation accuracy against K"))
        _, metrics = selection_metrics(sel["rows"])
        out.append('<table class="narrow"><tr><th>candidate</th><th>K</th>' + "".join(f"<th>{_e(_metric_header(x))}</th>" for x in metrics) + "</tr>")
        for r in sel["rows"]:
            vals = "".join(f"<td>{r['metrics'][x]:.4f}</td>" if x in r["metrics"] else "<td></td>" for x in metrics)
            star = " ★" if r["winner"] else ""
            out.append(f'<tr><td class="t">{_e(r["name"])}{star}</td><td>{_e(r["k"] if r["k"] is not None else "")}</td>{vals}</tr>')
        out.append("</table>")
    else:
        why = f"{sel['path']} could not be read" if sel.get("path") else f"no {SELECTION_FILE} beside the model"
        out.append(f'<p class="note">Skipped: {_e(why)}. `palrm train` with model selection writes it in the run directory; '
                   "the report reads it from MODEL_DIR or its parent.</p>")

    out.append("<h2>New users: few-shot curve</h2>")
    if result.get("new_users"):
        a = result.get("adapt", {})
        out.append(f'<p class="small">n = 0 scores new users with the population\'s weights; n &gt; 0 onboards each new user on its '
                   f'first n pool pairs (adapt prior: {_e(a.get("prior"))}, {_e(a.get("steps"))} steps) and scores its test pairs.</p>')
        out.append(_img(figs, "few_shot", "few-shot accuracy of new users against n"))
    else:
        out.append('<p class="note">No new users in the data (users the model does not know, with split=test rows).</p>')

    out.append("<h2>Known users: per-user accuracy</h2>")
    out.append(_img(figs, "per_user", "per-user accuracy distribution") if "per_user" in figs else
               '<p class="note">No held-out pairs of known users.</p>')

    out.append("<h2>Learned groups</h2>")
    g = result.get("groups")
    if not g:
        out.append('<p class="note">The model has no groups to show (BTL, or K = 1).</p>')
    else:
        if "ari" in g:
            out.append(f'<p>Adjusted Rand index between each known user\'s argmax prototype and the data\'s group column: '
                       f'<b id="ari">{g["ari"]["value"]:.3f}</b> ({g["ari"]["n_users"]} users; 1 = the same partition, 0 = chance).</p>')
        out.append(_img(figs, "weights", "users' mixture weights"))
        out.append(f'<p class="small">Responses each prototype ranks highest and lowest (reward under that prototype alone, among '
                   f'{g["n_items_scored"]} distinct prompt/response items of the data).</p>')
        for i, p in enumerate(g["prototypes"]):
            out.append(f"<h3>prototype {i} <span class='small'>(argmax of {p['share'] * 100:.0f}% of known users)</span></h3>")
            out.append("<table><tr><th>rank</th><th>prompt</th><th>response</th><th>reward</th></tr>")
            for which in ("highest", "lowest"):
                for j, item in enumerate(p[which]):
                    out.append(f'<tr><td>{which} {j + 1}</td><td class="t">{_e(_short(item["prompt"], 80))}</td>'
                               f'<td class="t">{_e(_short(item["response"]))}</td><td>{item["reward"]:+.3f}</td></tr>')
            out.append("</table>")
    data_json = json.dumps({k: v for k, v in result.items() if k != "figures"}, default=float)
    data_json = data_json.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")  # inert inside <script>
    out.append(f'<script type="application/json" id="palrm-report-data">{data_json}</script>')
    out.append(f'<p class="small">Written by palrm {_e(_version())}.</p></body></html>')
    return "\n".join(out)


def _version() -> str:
    from palrm.version import __version__

    return __version__
