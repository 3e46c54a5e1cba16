"""Model selection on validation data: what `PALRewardModel(k="auto")` and `palrm train` run.

Candidates (`candidate_grid`): the BTL baseline, per-user heads shrunk toward it (BTL + input
offset, models/btl.py), PAL at several K, and the offset user model (models/offset.py) on top of
each PAL network. Every candidate is judged on data it was not fitted on,
for the two jobs a personalized reward model has:

* **known users**: fitted on their training pairs (early stopping on their validation pairs), scored
  on those validation pairs;
* **held-out users** (onboarding): a seeded `heldout_frac` of the training users is left out of every
  candidate's fit; each is onboarded from its first n training pairs (n in `SHOTS`, MAP with the prior
  fitted to the known users) and scored on its validation pairs. The prior (gaussian / mixture) and
  its strength are chosen here too, per candidate, on these held-out known users; never on new users'
  test pairs. For offset candidates, so is the prior variance of an onboarded user's offset
  (`adapt.offset_var`: model.offset_var or its multiples `ONBOARD_VAR_FACTORS`): the variance chosen
  on known users' validation pairs suits users with hundreds of pairs and lets one with two overfit.

score = (validation log-loss of known users + mean over n of held-out users' log-loss) / 2; the
lowest score wins. Everything runs on one embedding table (texts embedded once); an offset variant
reuses its PAL network (offsets do not change training), so a grid of offsets costs only their
MAP fits, and every shot set of the held-out users is onboarded in one batched call per prior.

Regularisation (what real data needs):

* **user-level early stopping**: each candidate's training stops on (known users' validation log-loss
  + held-out users' validation log-loss after onboarding them from all their training pairs) / 2,
  evaluated every epoch, so the shared weights stop when they stop generalising to users they were
  not fitted on, not only to more pairs of the same users;
* **a second stage** over {train.weight_decay} x {model.dropout} (`model.auto_weight_decay` x
  `auto_dropout`) for the stage-1 winner's structure only (its K, kind and offset; the offset's
  prior variance is kept), so the cost is one training per extra pair, not per candidate. Rows carry
  `stage`, `weight_decay` and `dropout`; the report's `regularization` names the chosen pair.

The winner is then refitted on all users by the caller (core/fit.py), warm-started from the
winner's network (`return_net`).

Choosing a new user's prior is one rule, `choose_prior` (onboard users the prior was not fitted on,
lowest mean log-loss over the shot sets wins) over `prior_choices`. The selection uses it per
candidate on its held-out users (kinds none / gaussian / mixture); a fixed-K fit with
adapt.prior_strength="auto" uses it after training on the model's own users
(`choose_prior_on_known_users`: two seeded halves, each onboarded with the prior of the other half),
for the configured prior kind only (strength 0 = maximum likelihood is one of the choices). An
explicit adapt.prior_strength is used as configured by both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from palrm.config import FALLBACK_PRIOR_STRENGTH, PALConfig
from palrm.losses import per_pair_nll
from palrm.models import RewardNet, build_net
from palrm.training import IndexedPairs, predict_logits, train_net
from palrm.training.adapt import adapt_user_logits, choose_offset_var, fit_prior, fit_user_offsets

logger = logging.getLogger(__name__)

SHOTS = (1, 2, 5, 10)
ONBOARD_VAR_FACTORS = (0.3, 0.1, 0.03, 0.01)  # adapt.offset_var tried besides model.offset_var, as its multiples
STRENGTHS = (0.1, 0.3, 1.0, 3.0, 10.0)
PRIOR_KINDS = ("gaussian", "mixture")
DEFAULT_KS = (1, 2, 3, 4, 6, 8)
SELECTION_FILE = "selection.json"


@dataclass(frozen=True)
class Candidate:
    """One model of the grid: `kind` (btl, pal-a, pal-b), K and the offset kind (btl: none or input)."""

    kind: str
    k: int = 1
    offset: str = "none"

    @property
    def name(self) -> str:
        if self.kind == "btl":
            return "btl" + ("" if self.offset == "none" else f" + {self.offset} offset")
        return f"{self.kind} K={self.k}" + ("" if self.offset == "none" else f" + {self.offset} offset")

    def overrides(self) -> dict:
        return {"model.kind": self.kind, "model.k": self.k, "model.offset": self.offset}


def candidate_grid(ks=DEFAULT_KS, kinds=("pal-b",), offsets=("none", "latent", "input"), btl: bool = True) -> list[Candidate]:
    """BTL (and BTL + input offset: per-user heads with shrinkage, when input offsets are tried), then
    every kind x K x offset."""
    out = [Candidate("btl")] + ([Candidate("btl", 1, "input")] if "input" in offsets else []) if btl else []
    out += [Candidate(kind, k, off) for kind in kinds for k in ks for off in offsets]
    return out


def _take(pairs: IndexedPairs, mask: torch.Tensor, user_map: torch.Tensor | None = None) -> IndexedPairs:
    sub = pairs.take(torch.nonzero(mask).flatten())
    return sub if user_map is None else IndexedPairs(user_map[sub.user], sub.prompt, sub.chosen, sub.rejected)


def _rank_in_user(pairs: IndexedPairs) -> torch.Tensor:
    """(n,): the position of each pair among its user's pairs (in order)."""
    rank = torch.zeros(len(pairs), dtype=torch.long)
    seen: dict[int, int] = {}
    for i, u in enumerate(pairs.user.tolist()):
        rank[i] = seen.get(u, 0)
        seen[u] = rank[i] + 1
    return rank


def first_n_per_user(pairs: IndexedPairs, n: int) -> IndexedPairs:
    """Each user's first n pairs (in order): nested shot sets."""
    return pairs.take(torch.nonzero(_rank_in_user(pairs) < n).flatten())


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


def shot_stack(pairs: IndexedPairs, n_users: int, shots) -> IndexedPairs:
    """Every shot set of `shots` in one batch: copy i holds each user's first shots[i] pairs, its users
    renumbered u + i * n_users, so one onboarding call fits all of them (users are independent)."""
    parts = []
    for i, n in enumerate(shots):
        sub = first_n_per_user(pairs, n)
        parts.append(IndexedPairs(sub.user + i * n_users, sub.prompt, sub.chosen, sub.rejected))
    return IndexedPairs(*(torch.cat([getattr(p, f) for p in parts]) for f in ("user", "prompt", "chosen", "rejected")))


def _stack_copies(pairs: IndexedPairs, n_users: int, copies: int) -> IndexedPairs:
    """`copies` copies of `pairs`, copy i with users u + i * n_users (the test pairs of `shot_stack`'s users)."""
    return IndexedPairs(torch.cat([pairs.user + i * n_users for i in range(copies)]),
                        *(getattr(pairs, f).repeat(copies) for f in ("prompt", "chosen", "rejected")))


@dataclass
class _Heldout:
    """The held-out users of a selection: their shot pool and test pairs, stacked over `shots`."""

    n: int
    shots: tuple
    pool: IndexedPairs  # their training pairs (rows 0..n-1)
    test: IndexedPairs  # their validation pairs (rows 0..n-1)
    stack: IndexedPairs  # `shot_stack` of their training pairs
    test_stack: IndexedPairs  # `test` once per shot set

    @property
    def empty(self) -> bool:
        return self.n == 0 or len(self.test) == 0

    @classmethod
    def of(cls, pool: IndexedPairs, test: IndexedPairs, n: int, shots) -> "_Heldout":
        """Users 0..n-1 with their shot pool and test pairs, stacked over `shots`."""
        return cls(n, tuple(shots), pool, test, shot_stack(pool, n, shots), _stack_copies(test, n, len(shots)))


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
    weight_decays=None,
    dropouts=None,
    say=None,
    return_net: bool = False,
):
    """Fit every candidate on the known users' training pairs and judge it (module docstring).

    table: (T + 1, D) embeddings; train / val: pairs whose `user` rows are 0..n_users-1.
    weight_decays x dropouts: the second stage, refitting the stage-1 winner's structure with each
    (train.weight_decay, model.dropout) pair (default `config.model.auto_weight_decay` x
    `auto_dropout`; the configured pair is the stage-1 row itself).
    Returns {"candidates": [...], "winner": name, "why": str, "overrides": {dotted key: value},
    "heldout_users": n, "shots": [...], "regularization": {...}}; `overrides` configure the winner
    (model, regularisation and adapt prior). With `return_net`, returns (report, net, held) instead:
    the winner's network (trained on the known users) and the held-out rows (a numpy array), from
    which the caller may warm-start its refit on all users.
    """
    candidates = candidates or candidate_grid()
    say = say or (lambda _m: None)
    shots = tuple(shots)
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
    ho = _Heldout.of(h_pool, h_test, len(held), shots)
    nets: dict[tuple, RewardNet] = {}
    rows: list[dict] = []

    def train_plain(cfg: PALConfig) -> tuple[RewardNet, list[dict]]:
        plain = cfg.updated({"model.offset": "none"})
        torch.manual_seed(seed)
        net = build_net(plain.model, table.shape[1], len(known_rows)).to(dev)
        stop = None if ho.empty else (lambda m, row: _user_level_stop(m, plain, table, ho, row))
        history = train_net(net, table, k_train, k_val, plain.train, extra_validation=stop)
        return net, history

    for cand in candidates:
        key = (cand.kind, cand.k)
        history = None
        if key not in nets:
            nets[key], history = train_plain(config.updated(cand.overrides()))
        row = _judge(cand, config, nets[key], table, k_train, k_val, ho, history, rows)
        rows.append(row)
        say(format_row(row, shots))
    scored = [r for r in rows if r["score"] is not None]
    best = min(scored, key=lambda r: r["score"])
    winner = next(c for c in candidates if c.name == best["name"])
    winner_net = nets[(winner.kind, winner.k)]
    wd0, drop0 = config.train.weight_decay, config.model.dropout
    for r in rows:
        r.update(stage=1, weight_decay=wd0, dropout=drop0)
    weight_decays = list(config.model.auto_weight_decay if weight_decays is None else weight_decays)
    dropouts = list(config.model.auto_dropout if dropouts is None else dropouts)
    grid = [(wd, dr) for wd in weight_decays for dr in dropouts if (wd, dr) != (wd0, drop0)]
    stage2 = []
    for wd, dr in grid:  # the second stage: regularisation of the winning structure only
        cfg = config.updated(winner.overrides() | {"train.weight_decay": wd, "model.dropout": dr})
        net, history = train_plain(cfg)
        row = _judge(winner, cfg, net, table, k_train, k_val, ho, history, [], offset_var=best.get("offset_var"))
        row.update(name=f"{winner.name} wd={wd:g} drop={dr:g}", stage=2, weight_decay=wd, dropout=dr)
        rows.append(row)
        say(format_row(row, shots))
        if row["score"] is not None and row["score"] < best["score"]:
            stage2.append((row, net))
    if stage2:
        best, winner_net = min(stage2, key=lambda rn: rn[0]["score"])
    overrides = winner.overrides() | {"model.offset_var": best.get("offset_var", 0.0),
                                      "train.weight_decay": best["weight_decay"], "model.dropout": best["dropout"]}
    if best.get("adapt_prior"):
        overrides |= {"adapt.prior": best["adapt_prior"], "adapt.prior_strength": best["adapt_prior_strength"]}
    if best.get("adapt_offset_var"):
        overrides["adapt.offset_var"] = best["adapt_offset_var"]
    scored = [r for r in rows if r["score"] is not None]
    report = {"candidates": rows, "winner": best["name"], "why": _why(best, scored), "overrides": overrides,
              "no_personal_structure": (winner.kind == "btl" or winner.k == 1) and winner.offset == "none",
              "heldout_users": len(held), "known_users": len(known_rows), "shots": list(shots),
              "regularization": {"weight_decay": weight_decays, "dropout": dropouts, "structure": winner.name,
                                 "chosen": {"weight_decay": best["weight_decay"], "dropout": best["dropout"]}},
              "early_stopping": ("user-level: each epoch, (known users' validation log-loss + held-out users' "
                                 "validation log-loss after onboarding them from all their training pairs) / 2"
                                 if not ho.empty else "known users' validation log-loss"),
              "score": "(known-user validation log-loss + held-out users' mean log-loss over shots) / 2"}
    return (report, winner_net, held) if return_net else report


def _judge(cand: Candidate, config: PALConfig, plain_net: RewardNet, table, k_train, k_val, ho: _Heldout,
           history: list[dict] | None, done: list[dict], offset_var: float | None = None) -> dict:
    """The selection row of `cand` on its trained plain network (offsets fitted here when it has them,
    their prior variance chosen on the known users' validation pairs unless `offset_var` fixes it: the
    second stage keeps the first stage's)."""
    cfg = config.updated(cand.overrides() | {"model.offset_var": 0.0})
    net = plain_net
    if cand.offset != "none":
        n_known = plain_net.num_users
        net = build_net(cfg.model, table.shape[1], n_known).to(table.device)
        net.load_state_dict(plain_net.state_dict(), strict=False)
        net.eval()
        logits = net.user_logits.weight.detach()
        var = offset_var if offset_var else choose_offset_var(net, table, k_train, k_val, logits)[0]
        with torch.no_grad():
            net.user_offsets[:] = fit_user_offsets(net, table, k_train, len(logits), logits, var)
        cfg = cfg.updated({"model.offset_var": var})
    row = {"name": cand.name, **{k.split(".")[1]: v for k, v in cand.overrides().items()}}
    if cand.offset != "none":
        row["offset_var"] = cfg.model.offset_var
    if history is not None:
        row["epochs"] = len(history)
        key = "stop_loss" if history and "stop_loss" in history[0] else "val_loss"
        if history and key in history[0]:
            row["best_epoch"] = int(min(history, key=lambda h: h[key])["epoch"])
    row["known"] = _metrics(predict_logits(net, table, k_val))
    same_net = next((r for r in done if r.get("kind") == cand.kind and r.get("k") == cand.k and r.get("adapt_prior")), None)
    if same_net is not None:  # the offset variants reuse their PAL network's prior choice
        choices = [(same_net["adapt_prior"], same_net["adapt_prior_strength"])]
    elif net.k == 1:  # one prototype (or BTL): its weight is 1 under any prior, nothing to choose
        strength = config.adapt.prior_strength
        choices = [(config.adapt.prior, FALLBACK_PRIOR_STRENGTH if strength == "auto" else strength)]
    elif config.adapt.prior_strength == "auto":
        choices = prior_choices()
    else:  # an explicit strength is used as configured
        choices = [(config.adapt.prior, config.adapt.prior_strength)]
    row.update(_heldout(net, cfg, table, ho, choices))
    parts = [p for p in (row["known"]["log_loss"], row["heldout_mean_log_loss"]) if p is not None]
    row["score"] = round(float(np.mean(parts)), 5) if parts else None
    return row


def _onboard(net: RewardNet, acfg, table, ho: _Heldout, prior_kind: str, offset_var: float = 0.0,
             population: torch.Tensor | None = None):
    """Onboard the held-out users from every shot set at once: their logits (S * n, K) and offsets
    (S * n, r) or None (rows u + i * n: user u from shots[i] pairs). The start (mean logits) and the
    prior come from the users of `population` (rows of the net's user table; default every row)."""
    known_logits = net.user_logits.weight.detach()
    if population is not None:
        known_logits = known_logits[population]
    n_rep = ho.n * len(ho.shots)
    init = known_logits.mean(0).expand(n_rep, -1).clone()
    theta = adapt_user_logits(net, table, ho.stack, n_rep, acfg, init, fit_prior(prior_kind, known_logits))
    offsets = fit_user_offsets(net, table, ho.stack, n_rep, theta, offset_var) if net.offset_dim else None
    return theta, offsets


@torch.no_grad()
def _stack_logits(net: RewardNet, table, ho: _Heldout, theta: torch.Tensor, offsets: torch.Tensor | None) -> list[torch.Tensor]:
    """The stacked onboarded users' logits on their test pairs, one (m,) tensor per shot set (one forward pass)."""
    w = net.weights_from_logits(theta)
    if offsets is not None:
        w = torch.cat([w, offsets], -1)
    t = ho.test_stack
    z = net.pair_logits(w[t.user], table[t.prompt], table[t.chosen], table[t.rejected])
    m = len(ho.test)
    return [z[i * m:(i + 1) * m] for i in range(len(ho.shots))]


def _user_level_stop(net: RewardNet, cfg: PALConfig, table, ho: _Heldout, row: dict) -> dict:
    """Early stopping of a candidate on users it is not trained on (a user-level validation split):
    each epoch the held-out users are onboarded from all their training pairs (shared weights frozen,
    MAP with `cfg.adapt`'s prior fitted to the known users) and scored on their validation pairs;
    stop_loss = (known users' val_loss + their log-loss) / 2. All their pairs, not the few-shot sets:
    with one or two pairs the log-loss mostly judges how confident the prototypes are, and stopping on
    it stops training early (measured on the quickstart: best epochs 4-6 instead of about 14, and 1-2 points lower few-shot accuracy)."""
    t = ho.test
    with torch.no_grad():
        w = net.user_weights(torch.zeros_like(t.user))  # (n, 1): BTL scores everybody alike
    if net.has_users:
        known_logits = net.user_logits.weight.detach()
        init = known_logits.mean(0).expand(ho.n, -1).clone()
        acfg = cfg.adapt  # prior_strength=auto is chosen after training: stop with the fallback strength
        if acfg.prior_strength == "auto":
            acfg = cfg.updated({"adapt.prior_strength": FALLBACK_PRIOR_STRENGTH}).adapt
        theta = adapt_user_logits(net, table, ho.pool, ho.n, acfg, init, fit_prior(cfg.adapt.prior, known_logits))
        with torch.no_grad():
            w = net.weights_from_logits(theta)[t.user]
    with torch.no_grad():
        ll = float(per_pair_nll(net.pair_logits(w, table[t.prompt], table[t.chosen], table[t.rejected])).mean())
    out = {"heldout_val_loss": ll}
    if "val_loss" in row:
        out["stop_loss"] = (row["val_loss"] + ll) / 2
    return out


def _heldout(net: RewardNet, cfg: PALConfig, table, ho: _Heldout, choices) -> dict:
    """Held-out users onboarded from n = 0 and each n of `shots`; the MAP prior chosen on them among `choices`."""
    if ho.empty:
        return {"heldout": {}, "heldout_mean_log_loss": None}
    net.eval()
    pop = net.user_logits.weight.detach().mean(0)
    with torch.no_grad():
        theta0 = pop.expand(ho.n, -1)
        w0 = net.weights_from_logits(theta0)
        if net.offset_dim:
            w0 = torch.cat([w0, torch.zeros(ho.n, net.offset_dim, device=table.device)], -1)
        t = ho.test
        out = {"0": _metrics(net.pair_logits(w0[t.user], table[t.prompt], table[t.chosen], table[t.rejected]))}
    if not net.has_users:
        for n in ho.shots:
            out[str(n)] = out["0"]
        return {"heldout": out, "heldout_mean_log_loss": _mean_ll(out, ho.shots)}
    best, _ = choose_prior(net, cfg, table, [(ho, None)], choices)
    ll, curve = best["log_loss"], best["curve"]
    row = {"adapt_prior": best["prior"], "adapt_prior_strength": best["strength"]}
    if net.offset_dim:  # the onboarding offset variance, given the chosen prior's K weights
        var_best, var_rows = choose_onboarding_offset_var(net, cfg, table, [(ho, None)], best["prior"], best["strength"])
        ll, curve = var_best["log_loss"], var_best["curve"]
        row["adapt_offset_var"] = var_best["var"]
        row["adapt_offset_vars"] = [{"var": r["var"], "log_loss": round(r["log_loss"], 5)} for r in var_rows]
    return {"heldout": {**out, **curve}, "heldout_mean_log_loss": round(ll, 5), **row}


def prior_choices(kinds=PRIOR_KINDS) -> list[tuple[str, float]]:
    """The onboarding priors a choice tries, as (adapt.prior, adapt.prior_strength): maximum likelihood
    ("none", 0) first, then every kind of `kinds` at every strength of `STRENGTHS`."""
    return [("none", 0.0)] + [(p, s) for p in kinds if p != "none" for s in STRENGTHS]


def choose_prior(net: RewardNet, cfg: PALConfig, table: torch.Tensor, folds, choices) -> tuple[dict, list[dict]]:
    """The one rule for choosing a new user's prior: onboard users the prior was not fitted on and keep
    the choice with the lowest log-loss on their test pairs (mean over the shot sets; ties: the first).

    folds: [(_Heldout, population)]: each fold's users are onboarded with the start and the prior fitted
    on the net's user rows `population` (None = every row; those users must not be among the fold's).
    choices: [(prior kind, strength)] (`prior_choices`). Each shot set's metrics pool the folds' test pairs.
    Returns (best, rows): rows = one {"prior", "strength", "log_loss", "curve"} per choice, in order;
    best = the row with the lowest log_loss.
    """
    rows = []
    shots = folds[0][0].shots
    for prior_kind, strength in choices:
        acfg = cfg.updated({"adapt.prior": prior_kind, "adapt.prior_strength": strength}).adapt
        parts = [_stack_logits(net, table, ho, *_onboard(net, acfg, table, ho, prior_kind, cfg.model.offset_var, pop))
                 for ho, pop in folds]
        rows.append({"prior": prior_kind, "strength": strength, **_pooled(parts, shots)})
    return _lowest(rows), rows


def _pooled(parts: list[list[torch.Tensor]], shots) -> dict:
    """{"log_loss": mean over shot sets, "curve": {str(n): metrics}} of the folds' `_stack_logits` pooled."""
    curve = {str(n): _metrics(torch.cat([p[i] for p in parts])) for i, n in enumerate(shots)}
    return {"log_loss": _mean_ll(curve, shots), "curve": curve}


def _lowest(rows: list[dict]) -> dict:
    """The row with the lowest log_loss (NaN last; ties: the earliest)."""
    return min(rows, key=lambda r: (bool(np.isnan(r["log_loss"])), r["log_loss"]))


def choose_onboarding_offset_var(net: RewardNet, cfg: PALConfig, table: torch.Tensor, folds, prior_kind: str,
                                 strength: float) -> tuple[dict, list[dict]]:
    """The one rule for `adapt.offset_var`, the prior variance of an onboarded user's personal offset:
    onboard the folds' users (K weights with the given prior, then offsets at each variance
    model.offset_var x (1, *ONBOARD_VAR_FACTORS)) and keep the lowest log-loss on their test pairs
    (mean over the shot sets; ties: the first, i.e. model.offset_var). The variance chosen on known
    users' validation pairs suits users with hundreds of pairs; a (D + 1)-dimensional head fitted to
    one or two pairs at that variance overfits.

    folds: as `choose_prior`. Returns (best, rows): rows = one {"var", "log_loss", "curve"} per variance.
    """
    acfg = cfg.updated({"adapt.prior": prior_kind, "adapt.prior_strength": strength}).adapt
    thetas = [_onboard(net, acfg, table, ho, prior_kind, 0.0, pop)[0] for ho, pop in folds]
    shots = folds[0][0].shots
    rows = []
    for factor in (1.0, *ONBOARD_VAR_FACTORS):
        var = cfg.model.offset_var * factor
        parts = [_stack_logits(net, table, ho, theta, fit_user_offsets(net, table, ho.stack, len(theta), theta, var))
                 for (ho, _), theta in zip(folds, thetas)]
        rows.append({"var": var, **_pooled(parts, shots)})
    return _lowest(rows), rows


def known_user_folds(train: IndexedPairs, val: IndexedPairs | None, n_users: int, seed: int, shots=SHOTS,
                     max_users: int = 200, device=None) -> tuple[list[tuple[_Heldout, torch.Tensor, np.ndarray]], str]:
    """Two folds of a fitted model's own (known) users for `choose_prior`, so that no user is onboarded
    with a prior that contains its own logits (that would favour narrow priors and mixtures).

    The user rows 0..n_users-1 are split in two halves by a seeded permutation; fold b onboards the
    eligible users of half b (at most `max_users`, seeded) with the start and prior fitted on half
    1 - b. Shots: each user's first n training pairs; test pairs: its validation pairs, or, without
    `val`, its training pairs after the first max(shots) (the shared weights were trained on those,
    an optimistic but prior-neutral test). Eligible: users with both.
    Returns ([(heldout set, population rows (M,), onboarded rows (n,))], what the test pairs are);
    the held-out sets' pairs on `device` (default: the CPU).
    """
    train = train.to("cpu")
    if val is not None and len(val):
        pool_all, test_all, scored_on = train, val.to("cpu"), "validation pairs"
    else:
        rank, m = _rank_in_user(train), max(shots)
        pool_all, test_all = train.take(torch.nonzero(rank < m).flatten()), train.take(torch.nonzero(rank >= m).flatten())
        scored_on = f"training pairs after their first {m}"
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_users)
    halves = [np.sort(perm[0::2]), np.sort(perm[1::2])]
    eligible = np.intersect1d(np.unique(pool_all.user.numpy()), np.unique(test_all.user.numpy()))
    folds = []
    for b in (0, 1):
        users = np.intersect1d(halves[b], eligible)
        if len(users) > max_users:
            users = np.sort(rng.choice(users, size=max_users, replace=False))
        if len(users) == 0 or len(halves[1 - b]) == 0:
            continue
        mask = torch.zeros(n_users, dtype=torch.bool)
        mask[torch.as_tensor(users)] = True
        local = torch.full((n_users,), -1, dtype=torch.long)
        local[torch.as_tensor(users)] = torch.arange(len(users))
        pool = _take(pool_all, mask[pool_all.user], local)
        test = _take(test_all, mask[test_all.user], local)
        folds.append((_Heldout.of(pool.to(device or "cpu"), test.to(device or "cpu"), len(users), shots),
                      torch.as_tensor(halves[1 - b]), users))
    return folds, scored_on


def choose_prior_on_known_users(net: RewardNet, cfg: PALConfig, table: torch.Tensor, train: IndexedPairs,
                                val: IndexedPairs | None, *, shots=SHOTS, max_users: int = 200) -> dict:
    """adapt.prior_strength="auto" after a fit that did not select (fixed K): `choose_prior` over
    `prior_choices((cfg.adapt.prior,))` on the fitted model's own users (`known_user_folds`), shared
    weights frozen. The configured prior kind is kept; strength 0 (the "none" row) means maximum likelihood.

    table: (T + 1, D); train / val: pairs whose users are the net's rows. Returns the record saved with
    the model: {"prior", "strength", "chosen_by", and either "losses" (every choice's mean log-loss) or
    "reason" (nothing could be chosen: FALLBACK_PRIOR_STRENGTH)}, plus, for a model with personal
    offsets and adapt.offset_var 0, "offset_var" and "offset_vars" (`choose_onboarding_offset_var` on
    the same folds); "users", "scored_on", "shots" whenever something was chosen.
    """
    kind = cfg.adapt.prior

    def fallback(reason: str) -> dict:
        return {"prior": kind, "strength": FALLBACK_PRIOR_STRENGTH, "chosen_by": "fallback", "reason": reason}

    if not net.has_users:
        return fallback("the model has no per-user parameters (BTL): nothing to onboard")
    folds, scored_on = known_user_folds(train, val, net.num_users, cfg.train.seed, shots, max_users, table.device)
    if not folds:
        return fallback(f"fewer than 2 known users, or none with both training pairs and {scored_on}")
    folds = [(ho, pop.to(net.user_logits.weight.device)) for ho, pop, _ in folds]
    was_training = net.training
    net.eval()
    if net.k == 1:
        record = fallback("one prototype (K = 1, or BTL with personal heads): a new user's only mixture weight is 1 "
                          "under any prior; nothing to choose")
    elif kind == "none":
        record = fallback("adapt.prior is none (maximum likelihood): no prior strength to choose")
    else:
        best, rows = choose_prior(net, cfg, table, folds, prior_choices((kind,)))
        record = {"prior": kind, "strength": best["strength"], "chosen_by": "known users",
                  "losses": [{"prior": r["prior"], "strength": r["strength"], "log_loss": round(r["log_loss"], 5)}
                             for r in rows]}
    if net.offset_dim and not cfg.adapt.offset_var:  # and a new user's offset variance, on the same folds
        best, rows = choose_onboarding_offset_var(net, cfg, table, folds, kind, record["strength"])
        record |= {"offset_var": best["var"],
                   "offset_vars": [{"var": r["var"], "log_loss": round(r["log_loss"], 5)} for r in rows]}
    if "losses" in record or "offset_var" in record:
        record |= {"users": sum(ho.n for ho, _ in folds), "scored_on": scored_on, "shots": list(shots)}
    net.train(was_training)
    return record


def describe_prior_choice(record: dict) -> str:
    """One line: how new users are onboarded and where that came from (`palrm train` prints it)."""
    what = f"onboarding prior: {record['prior']}, strength {record['strength']:g}"
    if record["prior"] != "none" and record["strength"] == 0:
        what += " = maximum likelihood"
    if "offset_var" in record:
        what += f"; new users' offset variance {record['offset_var']:.3g} (chosen on {record['users']} known users)"
    by = record.get("chosen_by")
    if by == "known users":
        return f"{what} (chosen on {record['users']} known users' {record['scored_on']})"
    if by == "model selection":
        return f"{what} (chosen by the model selection on {record['users']} held-out training users)"
    if by == "configured":
        return f"{what} (configured)"
    return f"{what} ({record.get('reason', by)})"


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


def format_row(row: dict, shots=SHOTS, width: int = 28) -> str:
    known, held = row["known"], row.get("heldout", {})
    cells = " ".join(_num(held.get(str(n), {}).get("accuracy"), 7) for n in (0, *shots))
    return (f"{row['name']:<{width}} {_num(known['log_loss'], 8)} {_num(known['accuracy'], 8)} "
            f"{_num(row.get('heldout_mean_log_loss'), 8)} {cells} {_num(row['score'], 8)}")


def format_table(report: dict) -> str:
    """The selection table: one line per candidate, then the winner and why."""
    shots = report["shots"]
    width = max([28, *(len(r["name"]) for r in report["candidates"])])
    head = (f"{'candidate':<{width}} {'val ll':>8} {'val acc':>8} {'new ll':>8} "
            + " ".join(f"{'new@' + str(n):>7}" for n in (0, *shots)) + f" {'score':>8}")
    lines = [head, "-" * len(head), *(format_row(r, shots, width) for r in report["candidates"])]
    lines.append(f"selected: {report['winner']} ({report['why']})")
    if report["no_personal_structure"]:
        lines.append("no personal structure found: a model without per-user parameters did best on held-out data")
    return "\n".join(lines)
