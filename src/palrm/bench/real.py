"""The real-data suite (`palrm bench --suite real [--quick]`): does the default model ever lose to the
simple baselines on real multi-user data?

Data sets: Persona (shipped subset, MiniLM), Polis conversations (data/polis.py, MiniLM; read at run
time from ../shared/data/polis or $PALRM_POLIS_DIR), the four psychotools paired-comparison sets
(one-hot items; read at run time, GPL-2, never copied). Users are split into seen and new users
(each builder's own held-out users; 20% for psychotools).

Splits:
- "pairs": each seen user's pairs split 70 / 10 / 20 (train / validation / test); new users: a
  nested adaptation pool of up to 20 pairs each, the rest are test pairs;
- "items": items (responses) split 70 / 30 with ONE seeded draw for seen and new users; test pairs
  only between held-out items (what an RLHF reward model faces); 15% of the other items are
  validation items: validation pairs contain one (and no test item), training pairs only training
  items, so early stopping and model selection judge unseen items too; new users adapt on pairs
  without test items and are tested on held-out-item pairs. Skipped for one-hot items (a held-out
  one-hot item carries no information).

Methods: BTL; per-user linear heads with shrinkage (bench/baselines.py, lambda on validation); PAL-B
at K = 3; the offset user model (PAL-B K = 3 + input offset); and the default model,
`PALRewardModel(k="auto")` (model selection with held-out users, evaluation/selection.py).
Seen users: test accuracy; new users: accuracy after n = 0, 1, 2, 5, 10, 20 shots (n = 0 is the
population). 95% intervals: bootstrap over users (`BOOT` resamples). The issue-9 check per set and
split: the default is "no worse" than the best of BTL / heads when the upper end of the bootstrap
interval of (default - best) is >= 0, on seen users and at every n >= 1.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from palrm.bench.baselines import LinearHeads
from palrm.bench.common import set_threads, with_embeddings, write_json
from palrm.data.schema import PairData
from palrm.data.splits import few_shot_split, split_pairs, split_users, take_shots
from palrm.errors import ConfigError
from palrm.evaluation.metrics import pair_metrics

logger = logging.getLogger(__name__)

SHOTS = (0, 1, 2, 5, 10, 20)
BOOT = 500
PAIRCOMP = ("Topmodel2007", "FirstNames", "GermanParties2009", "SoundQuality")
PROFILES = {
    "full": {"ks": (1, 2, 3, 4, 6, 8), "offsets": ("none", "latent", "input"), "paircomp": PAIRCOMP, "persona_users": None},
    "quick": {"ks": (1, 3, 6), "offsets": ("none", "input"), "paircomp": PAIRCOMP, "persona_users": None},
    "smoke": {"ks": (1, 2), "offsets": ("none", "input"), "paircomp": ("Topmodel2007",), "persona_users": (30, 10)},
}


def user_bootstrap(sums: np.ndarray, counts: np.ndarray, n_boot: int = BOOT, seed: int = 0) -> np.ndarray:
    """(n_boot,) pair-level means over users resampled with replacement (per-user sums and pair counts)."""
    draws = np.random.default_rng(seed).integers(0, len(sums), (n_boot, len(sums)))
    return sums[draws].sum(1) / counts[draws].sum(1)


def _cell(per_user: dict, seed: int) -> dict:
    """Accuracy and its user-bootstrap 95% interval from pair_metrics' per-user table."""
    users = sorted(per_user)
    n = np.array([per_user[u]["n_pairs"] for u in users], dtype=float)
    s = np.array([per_user[u]["accuracy"] for u in users]) * n
    boot = user_bootstrap(s, n, seed=seed)
    return {"accuracy": round(float(s.sum() / n.sum()), 4), "ci": [round(float(x), 4) for x in np.percentile(boot, [2.5, 97.5])],
            "_sums": dict(zip(users, s)), "_counts": dict(zip(users, n))}


def _from_logits(logits: np.ndarray, pairs: PairData, seed: int) -> dict:
    return _cell(pair_metrics(logits, pairs.pair_user_ids)["per_user"], seed)


def _draw_items(items: np.ndarray, n_texts: int, frac: float, seed: int) -> np.ndarray:
    """(n_texts,) bool: a seeded `frac` of `items` drawn."""
    held = np.random.default_rng(seed).choice(items, size=int(round(frac * len(items))), replace=False)
    mask = np.zeros(n_texts, dtype=bool)
    mask[held] = True
    return mask


def _items(*datasets: PairData) -> np.ndarray:
    return np.unique(np.concatenate([a for d in datasets for a in (d.chosen, d.rejected)]))


def _item_split(seen: PairData, new: PairData, seed: int, frac: float = 0.3, val_frac: float = 0.15):
    """The item-disjoint split: ONE draw of held-out items for seen and new users (drawn separately,
    a new user's "held-out" items could be items the model was trained on), and validation on items
    held out of training too (validation pairs of training items only measured fit to known items,
    so early stopping and model selection never saw an unseen item).

    Returns (train: pairs of training items only, val: pairs with a validation item and no test item,
    seen test, new users' pairs without a test item (their shot pool), new test: pairs of test items only).
    """
    if len(seen.texts) != len(new.texts):
        raise ValueError("item split: seen and new users' pairs must index the same texts")
    n = len(seen.texts)
    items = _items(seen, new)
    is_test = _draw_items(items, n, frac, seed)
    is_val = _draw_items(items[~is_test[items]], n, val_frac, seed + 1)

    sc, sr = seen.chosen, seen.rejected
    s_test = is_test[sc] | is_test[sr]
    s_val = (is_val[sc] | is_val[sr]) & ~s_test
    train = seen.select(~s_test & ~s_val)
    trained = train.users_present()  # a seen user whose pairs all touch held-out items is not a seen user
    val = seen.select(s_val).for_users(trained)
    seen_test = seen.select(is_test[sc] & is_test[sr]).for_users(trained)
    nc, nr = new.chosen, new.rejected
    new_pool = new.select(~is_test[nc] & ~is_test[nr])
    new_test = new.select(is_test[nc] & is_test[nr])
    return train, val, seen_test, new_pool, new_test


def _splits(seen: PairData, new: PairData, split: str, seed: int):
    """(train, val, seen test, new shots, new test)."""
    if split == "pairs":
        sp = split_pairs(seen, val_frac=0.1, test_frac=0.2, seed=seed, honour_split_column=False)
        shots, new_test = few_shot_split(new, max_shots=max(SHOTS), seed=seed)
        return sp.train, sp.validation, sp.test, shots, new_test
    train, val, seen_out, new_in, new_out = _item_split(seen, new, seed)
    shots, _ = few_shot_split(new_in, max_shots=max(SHOTS), seed=seed, min_test=0)
    return train, val, seen_out, shots, new_out


class _Pal:
    """A PALRewardModel as a bench method: fit, seen users, new users after n shots."""

    def __init__(self, name: str, **overrides) -> None:
        self.name, self.overrides = name, overrides

    def fit(self, train, val, seed):
        from palrm import PALRewardModel

        self.model = PALRewardModel(progress=False, seed=seed, **self.overrides).fit(train, val)
        return self

    def seen(self, test, seed):
        return _from_logits(self.model.predict_logits(test), test, seed)

    def new(self, shots, test, n, seed):
        return _cell(self.model.few_shot_curve(shots, test, ns=(n,), per_user=True)[str(n)]["per_user"], seed)


class _Heads:
    name = "heads + shrinkage"

    def fit(self, train, val, seed):
        self.heads = LinearHeads(shrinkage=True).fit(train, val)
        return self

    def seen(self, test, seed):
        return _from_logits(self.heads.predict_logits(test), test, seed)

    def new(self, shots, test, n, seed):
        learned = self.heads.adapt(take_shots(shots, n).compact_users()) if n else {}
        return _from_logits(self.heads.predict_logits(test, learned), test, seed)


def _methods(prof: dict) -> list:
    return [_Pal("btl", kind="btl"), _Heads(), _Pal("pal-b K=3", kind="pal-b", k=3),
            _Pal("pal-b K=3 + input offset", kind="pal-b", k=3, offset="input"),
            _Pal("default (selected)", auto_ks=list(prof["ks"]), auto_offsets=list(prof["offsets"]))]


def evaluate_set(name: str, seen: PairData, new: PairData, splits: tuple, prof: dict, seed: int, say) -> dict:
    out: dict = {"n_seen_users": len(seen.users_present()), "n_new_users": len(new.users_present()),
                 "n_pairs": len(seen) + len(new)}
    for split in splits:
        train, val, test, shots, new_test = _splits(seen, new, split, seed)
        res: dict = {"n_train": len(train), "n_test": len(test), "n_new_test": len(new_test), "methods": {}}
        new_test = new_test.compact_users()
        for method in _methods(prof):
            t = time.perf_counter()
            method.fit(train, val, seed)
            cell = {"seen": method.seen(test, seed)}
            for n in SHOTS:
                cell[f"new@{n}"] = method.new(shots, new_test, n, seed)
            if getattr(getattr(method, "model", None), "selection_", None):
                cell["selected"] = method.model.selection_["winner"]
            cell["seconds"] = round(time.perf_counter() - t, 1)
            res["methods"][method.name] = cell
            say(f"  {name} [{split}] {method.name:<26} seen {cell['seen']['accuracy']:.4f} "
                + " ".join(f"@{n} {cell[f'new@{n}']['accuracy']:.4f}" for n in SHOTS) + f"  ({cell['seconds']} s)")
        res["check"] = _check(res["methods"], seed)
        out[split] = res
    return out


def _check(methods: dict, seed: int) -> dict:
    """Default vs the best of BTL / heads per column: paired user bootstrap of the difference."""
    default = methods["default (selected)"]
    verdict = {}
    for col in ["seen", *(f"new@{n}" for n in SHOTS if n >= 1)]:
        best_name = max(("btl", "heads + shrinkage"), key=lambda m: methods[m][col]["accuracy"])
        a, b = default[col], methods[best_name][col]
        users = sorted(a["_sums"])
        diff = np.array([a["_sums"][u] - b["_sums"][u] for u in users])
        counts = np.array([a["_counts"][u] for u in users])
        boot = user_bootstrap(diff, counts, seed=seed)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        verdict[col] = {"best_baseline": best_name, "diff": round(float(diff.sum() / counts.sum()), 4),
                        "ci": [round(float(lo), 4), round(float(hi), 4)], "no_worse": bool(hi >= 0)}
    verdict["holds"] = all(v["no_worse"] for v in verdict.values() if isinstance(v, dict))
    return verdict


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not str(k).startswith("_")}
    return obj


def run_real(out_dir: str | Path = "results/real", *, profile: str = "quick", seed: int = 0, threads: int | None = 1,
             encoder: str = "minilm", paircomp_source=None, polis_source=None,
             say: Callable[[str], None] | None = None, only: list[str] | None = None) -> dict:
    """Run the suite; returns the summary (also written to OUT_DIR/summary.json). `only`: the names of
    the data sets to run (persona, polis, and the psychotools names); None = all."""
    from palrm.data.paircomp import build_paircomp
    from palrm.data.persona import build_persona
    from palrm.data.polis import build_polis

    say = say or (lambda _m: None)
    prof = PROFILES[profile]
    set_threads(threads)
    known = ("persona", "polis", *prof["paircomp"])
    if only is not None and (bad := [n for n in only if n not in known]):
        raise ConfigError(f"--only {','.join(bad)}: unknown data set; expected some of {', '.join(known)}")
    wanted = (lambda name: only is None or name in only)
    start = time.perf_counter()
    summary: dict = {"profile": profile, "seed": seed, "shots": list(SHOTS), "sets": {}, "notes": []}
    if only is not None:
        summary["only"] = list(only)
    sizes = {} if prof["persona_users"] is None else dict(zip(("n_seen_users", "n_unseen_users"), prof["persona_users"]))
    if wanted("persona"):
        ds = build_persona(k=3, seed=seed, **sizes)
        pairs = with_embeddings(ds.pairs, encoder)
        summary["sets"]["persona"] = evaluate_set("persona", pairs.for_users(ds.seen_users).compact_users(),
                                                  pairs.for_users(ds.unseen_users).compact_users(), ("pairs", "items"),
                                                  prof, seed, say)
    if wanted("polis"):
        try:
            pol = build_polis(source=polis_source, seed=seed)
            pairs = with_embeddings(pol.pairs, encoder)
            summary["sets"]["polis"] = evaluate_set("polis", pairs.for_users(pol.seen_users).compact_users(),
                                                    pairs.for_users(pol.unseen_users).compact_users(),
                                                    ("pairs", "items"), prof, seed, say)
        except Exception as exc:  # noqa: BLE001 - data not present on this machine: say so in the summary
            summary["notes"].append(f"polis skipped: {exc}")
    for name in filter(wanted, prof["paircomp"]):
        try:
            pc = build_paircomp(name, source=paircomp_source)
        except Exception as exc:  # noqa: BLE001
            summary["notes"].append(f"{name} skipped: {exc}")
            continue
        seen, new = split_users(pc.pairs, unseen_frac=0.2, seed=seed)
        summary["sets"][name] = evaluate_set(name, seen, new, ("pairs",), prof, seed, say)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    summary["holds"] = {f"{s}/{sp}": v[sp]["check"]["holds"] for s, v in summary["sets"].items()
                        for sp in ("pairs", "items") if sp in v}
    summary = _strip(summary)
    write_json(Path(out_dir) / "summary.json", summary)
    return summary


def real_markdown(summary: dict) -> str:
    """The docs table: accuracy [95% CI] per set, split and method; the check per row."""
    shots = summary["shots"]
    lines = ["| set | split | method | seen | " + " | ".join(f"new @{n}" for n in shots) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in shots) + " |"]
    for name, sets in summary["sets"].items():
        for split in ("pairs", "items"):
            if split not in sets:
                continue
            for method, cell in sets[split]["methods"].items():
                label = method + (f" = {cell['selected']}" if "selected" in cell else "")
                cols = [cell["seen"], *(cell[f"new@{n}"] for n in shots)]
                lines.append(f"| {name} | {split} | {label} | " + " | ".join(f"{c['accuracy']:.3f}" for c in cols) + " |")
    lines.append("")
    lines.append("Default no worse than the best of BTL / heads + shrinkage (upper end of the user-bootstrap 95% "
                 "interval of the difference >= 0, seen and every n >= 1):")
    lines.append("")
    for key, ok in summary["holds"].items():
        lines.append(f"- {key}: {'holds' if ok else 'does NOT hold'}")
    return "\n".join(lines)
