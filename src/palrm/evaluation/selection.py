"""Model selection on validation data: what `PALRewardModel(k="auto")` and `palrm train` run.

Candidates (`candidate_grid`): the BTL baseline, PAL at several K, and the offset user model
(models/offset.py) on top of each PAL network. Every candidate is judged on data it was not fitted on,
for the two jobs a personalized reward model has:

* **known users**: fitted on their training pairs (early stopping on their validation pairs), scored
  on those validation pairs;
* **held-out users** (onboarding): a seeded `heldout_frac` of the training users is left out of every
  candidate's fit; each is onboarded from its first n training pairs (n in `SHOTS`, MAP with the prior
  fitted to the known users) and scored on its validation pairs. The prior (gaussian / mixture) and
  its strength are chosen here too, per candidate, on these held-out known users; never on new users'
  test pairs.

score = (validation log-loss of known users + mean over n of held-out users' log-loss) / 2; the
lowest score wins. Everything runs on one embedding table (texts embedded once); an offset variant
reuses its PAL network (offsets do not change training), so a grid of offsets costs only their
MAP fits. The winner is then refitted on all users by the caller.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from palrm.config import PALConfig
from palrm.losses import per_pair_nll
from palrm.models import RewardNet, build_net
from palrm.training.adapt import adapt_user_logits, choose_offset_var, fit_prior, fit_user_offsets
from palrm.training import IndexedPairs, predict_logits, train_net

logger = logging.getLogger(__name__)

SHOTS = (1, 2, 5, 10)
STRENGTHS = (0.1, 0.3, 1.0, 3.0, 10.0)
PRIOR_KINDS = ("gaussian", "mixture")
DEFAULT_KS = (1, 2, 3, 4, 6, 8)
SELECTION_FILE = "selection.json"


@dataclass(frozen=True)
class Candidate:
    """One model of the grid: `kind` (btl, pal-a, pal-b), K and the offset kind."""

    kind: str
    k: int = 1
    offset: str = "none"

    @property
    def name(self) -> str:
        if self.kind == "btl":
            return "btl"
        return f"{self.kind} K={self.k}" + ("" if self.offset == "none" else f" + {self.offset} offset")

    def overrides(self) -> dict:
        return {"model.kind": self.kind, "model.k": self.k, "model.offset": self.offset}


def candidate_grid(ks=DEFAULT_KS, kinds=("pal-b",), offsets=("none", "latent", "input"), btl: bool = True) -> list[Candidate]:
    """BTL, then every kind x K x offset."""
    out = [Candidate("btl")] if btl else []
    out += [Candidate(kind, k, off) for kind in kinds for k in ks for off in offsets]
    return out


def _take(pairs: IndexedPairs, mask: torch.Tensor, user_map: torch.Tensor | None = None) -> IndexedPairs:
    sub = pairs.take(torch.nonzero(mask).flatten())
    return sub if user_map is None else IndexedPairs(user_map[sub.user], sub.prompt, sub.chosen, sub.rejected)


def first_n_per_user(pairs: IndexedPairs, n: int) -> IndexedPairs:
    """Each user's first n pairs (in order): nested shot sets."""
    rank = torch.zeros(len(pairs), dtype=torch.long)
    seen: dict[int, int] = {}
    for i, u in enumerate(pairs.user.tolist()):
        rank[i] = seen.get(u, 0)
        seen[u] = rank[i] + 1
    return pairs.take(torch.nonzero(rank < n).flatten())


def _metrics(z: torch.Tensor) -> dict:
    if len(z) == 0:
        return {"log_loss": None, "accuracy": None, "n_pairs": 0}
    return {"log_loss": round(float(per_pair_nll(z).mean()), 5),
            "accuracy": round(float(((z > 0).double() + 0.5 * (z == 0).double()).mean()), 5), "n_pairs": len(z)}


def heldout_users(train: IndexedPairs, val: IndexedPairs, n_users: int, frac: float, seed: int, max_users: int = 200) -> np.ndarray:
    """Rows of the users left out of the candidates' fits: a seeded `frac` of the users that have both
    training and validation pairs (at least one, and at least one user stays known)."""
    eligible = np.intersect1d(np.unique(train.user.cpu().numpy()), np.unique(val.user.cpu().numpy()))
    n = min(int(round(frac * len(eligible))), max_users, n_users - 1)
    if frac > 0 and len(eligible) >= 3:
        n = max(n, 1)
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(eligible, size=n, replace=False))


def select_model(
    config: PALConfig,
    table: torch.Tensor,
    train: IndexedPairs,
    val: IndexedPairs,
    n_users: int,
    *,
    candidates: list[Candidate] | None = None,
    heldout_frac: float = 0.2,
    shots=SHOTS,
    say=None,
) -> dict:
    """Fit every candidate on the known users' training pairs and judge it (module docstring).

    table: (T + 1, D) embeddings; train / val: pairs whose `user` rows are 0..n_users-1.
    Returns {"candidates": [...], "winner": name, "why": str, "overrides": {dotted key: value},
    "heldout_users": n, "shots": [...]}; `overrides` configure the winner (model and adapt prior).
    """
    candidates = candidates or candidate_grid()
    say = say or (lambda _m: None)
    seed = config.train.seed
    held = heldout_users(train, val, n_users, heldout_frac, seed)
    is_held = torch.zeros(n_users, dtype=torch.bool)
    is_held[torch.as_tensor(held, dtype=torch.long)] = True
    known_rows = torch.nonzero(~is_held).flatten()
    known_map = torch.full((n_users,), -1, dtype=torch.long)
    known_map[known_rows] = torch.arange(len(known_rows))
    held_map = torch.full((n_users,), -1, dtype=torch.long)
    held_map[torch.as_tensor(held, dtype=torch.long)] = torch.arange(len(held))
    dev = table.device
    k_train = _take(train, ~is_held[train.user.cpu()], known_map).to(dev)
    k_val = _take(val, ~is_held[val.user.cpu()], known_map).to(dev)
    h_pool = _take(train, is_held[train.user.cpu()], held_map).to(dev)
    h_test = _take(val, is_held[val.user.cpu()], held_map).to(dev)
    nets: dict[tuple, RewardNet] = {}
    rows = []
    for cand in candidates:
        cfg = config.updated(cand.overrides() | {"model.offset_var": 0.0})
        key = (cand.kind, cand.k)
        if key not in nets:
            plain = config.updated(cand.overrides() | {"model.offset": "none"})
            torch.manual_seed(seed)
            net = build_net(plain.model, table.shape[1], len(known_rows)).to(dev)
            history = train_net(net, table, k_train, k_val, plain.train)
            nets[key] = net
            epochs = len(history)
        else:
            epochs = None
        net = nets[key]
        if cand.offset != "none":
            net = build_net(cfg.model, table.shape[1], len(known_rows)).to(dev)
            net.load_state_dict(nets[key].state_dict(), strict=False)
            net.eval()
            logits = net.user_logits.weight.detach()
            var, _ = choose_offset_var(net, table, k_train, k_val, logits)
            with torch.no_grad():
                net.user_offsets[:] = fit_user_offsets(net, table, k_train, len(logits), logits, var)
            cfg = cfg.updated({"model.offset_var": var})
        row = {"name": cand.name, **{k.split(".")[1]: v for k, v in cand.overrides().items()}}
        if cand.offset != "none":
            row["offset_var"] = cfg.model.offset_var
        if epochs is not None:
            row["epochs"] = epochs
        row["known"] = _metrics(predict_logits(net, table, k_val))
        row.update(_heldout(net, cfg, table, h_pool, h_test, len(held), shots, rows, cand))
        parts = [row["known"]["log_loss"], row["heldout_mean_log_loss"]]
        parts = [p for p in parts if p is not None]
        row["score"] = round(float(np.mean(parts)), 5) if parts else None
        rows.append(row)
        say(format_row(row, shots))
    scored = [r for r in rows if r["score"] is not None]
    best = min(scored, key=lambda r: r["score"])
    winner = next(c for c in candidates if c.name == best["name"])
    overrides = winner.overrides() | {"model.offset_var": best.get("offset_var", 0.0)}
    if best.get("adapt_prior"):
        overrides |= {"adapt.prior": best["adapt_prior"], "adapt.prior_strength": best["adapt_prior_strength"]}
    return {"candidates": rows, "winner": best["name"], "why": _why(best, scored), "overrides": overrides,
            "no_personal_structure": winner.kind == "btl" or (winner.k == 1 and winner.offset == "none"),
            "heldout_users": len(held), "known_users": len(known_rows), "shots": list(shots),
            "score": "(known-user validation log-loss + held-out users' mean log-loss over shots) / 2"}


def _heldout(net: RewardNet, cfg: PALConfig, table, pool: IndexedPairs, test: IndexedPairs, n_held: int, shots,
             done: list[dict], cand: Candidate) -> dict:
    """Held-out users onboarded from n = 0 and each n of `shots`; the MAP prior chosen on them."""
    if n_held == 0 or len(test) == 0:
        return {"heldout": {}, "heldout_mean_log_loss": None}
    net.eval()
    known_logits = net.user_logits.weight.detach()
    pop = known_logits.mean(0)
    k = net.k

    def score(theta: torch.Tensor, offsets: torch.Tensor | None) -> torch.Tensor:
        with torch.no_grad():
            w = net.weights_from_logits(theta)
            if offsets is not None:
                w = torch.cat([w, offsets], -1)
            return net.pair_logits(w[test.user], table[test.prompt], table[test.chosen], table[test.rejected])

    init = pop.expand(n_held, -1).clone()
    out = {"0": _metrics(score(init, None if not net.offset_dim else torch.zeros(n_held, net.offset_dim, device=table.device)))}
    if not net.has_users:
        for n in shots:
            out[str(n)] = out["0"]
        return {"heldout": out, "heldout_mean_log_loss": _mean_ll(out, shots)}
    shot_sets = {n: first_n_per_user(pool, n) for n in shots}
    same_net = next((r for r in done if r.get("kind") == cand.kind and r.get("k") == cand.k and r.get("adapt_prior")), None)
    if same_net is not None:  # the offset variants reuse their PAL network's prior choice
        choices = [(same_net["adapt_prior"], same_net["adapt_prior_strength"])]
    else:
        choices = [("none", 0.0)] + [(p, s) for p in PRIOR_KINDS for s in STRENGTHS]
    best = None
    for prior_kind, strength in choices:
        acfg = cfg.updated({"adapt.prior": prior_kind, "adapt.prior_strength": strength}).adapt
        prior = fit_prior(prior_kind, known_logits)
        curve = {}
        for n, sub in shot_sets.items():
            theta = adapt_user_logits(net, table, sub, n_held, acfg, init.to(table.device), prior)
            offsets = fit_user_offsets(net, table, sub, n_held, theta, cfg.model.offset_var) if net.offset_dim else None
            curve[str(n)] = _metrics(score(theta, offsets))
        ll = _mean_ll(curve, shots)
        if best is None or ll < best[0]:
            best = (ll, prior_kind, strength, curve)
    ll, prior_kind, strength, curve = best
    return {"heldout": {**out, **curve}, "heldout_mean_log_loss": round(ll, 5), "adapt_prior": prior_kind,
            "adapt_prior_strength": strength}


def _mean_ll(curve: dict, shots) -> float:
    values = [curve[str(n)]["log_loss"] for n in shots if curve.get(str(n), {}).get("log_loss") is not None]
    return float(np.mean(values)) if values else float("nan")


def _why(best: dict, rows: list[dict]) -> str:
    others = sorted((r for r in rows if r is not best), key=lambda r: r["score"])
    text = f"lowest validation score {best['score']:.4f}"
    if others:
        text += f"; runner-up {others[0]['name']} {others[0]['score']:.4f}"
    btl = next((r for r in rows if r["kind"] == "btl"), None)
    if btl is not None and btl is not best:
        text += f"; BTL {btl['score']:.4f}"
    return text


def _num(x, width: int) -> str:
    return f"{'n/a':>{width}}" if x is None else f"{x:>{width}.4f}"


def format_row(row: dict, shots=SHOTS) -> str:
    known, held = row["known"], row.get("heldout", {})
    cells = " ".join(_num(held.get(str(n), {}).get("accuracy"), 7) for n in (0, *shots))
    return (f"{row['name']:<28} {_num(known['log_loss'], 8)} {_num(known['accuracy'], 8)} "
            f"{_num(row.get('heldout_mean_log_loss'), 8)} {cells} {_num(row['score'], 8)}")


def format_table(report: dict) -> str:
    """The selection table: one line per candidate, then the winner and why."""
    shots = report["shots"]
    head = (f"{'candidate':<28} {'val ll':>8} {'val acc':>8} {'new ll':>8} "
            + " ".join(f"{'new@' + str(n):>7}" for n in (0, *shots)) + f" {'score':>8}")
    lines = [head, "-" * len(head), *(format_row(r, shots) for r in report["candidates"])]
    lines.append(f"selected: {report['winner']} ({report['why']})")
    if report["no_personal_structure"]:
        lines.append("no personal structure found: a model without per-user parameters did best on held-out data")
    return "\n".join(lines)
