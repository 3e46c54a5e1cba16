"""Onboarding users on a fitted model: learn only their K weight logits (the math is in
`palrm.training.adapt`), every shared parameter frozen.

`adapt(state, pairs)` writes the learned theta_u into the user table (new users added in one growth);
`few_shot_curve` measures accuracy after n shots without changing the model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from palrm.core.posterior import update_posteriors
from palrm.core.score import pair_table
from palrm.core.state import FittedModel
from palrm.core.table import pair_index
from palrm.data.schema import PairData
from palrm.errors import DataFormatError
from palrm.evaluation.metrics import pair_metrics
from palrm.training import adapt_user_logits, fit_prior, fit_user_offsets

logger = logging.getLogger(__name__)

__all__ = ["adapt", "adapt_logits", "few_shot_curve"]


def adapt_logits(state: FittedModel, pairs: PairData, table: torch.Tensor, users: list[str],
                 init_from_current: bool) -> torch.Tensor:
    """Learned logits (len(users), K) of `users` from `pairs` (indexed into `table`); the model is unchanged.

    Start: the users' current logits when `init_from_current` and known, else the population mean
    (`adapt.init="population"`) or zeros (uniform weights). The population (its mean and the prior) is
    every user of the table except those being adapted, so re-adapting a user on all their pairs
    gives what adapting them once on those pairs gives.
    """
    cfg = state.config.adapt
    net = state.net
    local = {u: i for i, u in enumerate(users)}
    rows = np.array([local[u] for u in pairs.user_ids], dtype=np.int64)[pairs.user]
    idx = pair_index(pairs, rows, table)
    all_logits = net.user_logits.weight.detach()  # (U, K)
    others = torch.ones(len(all_logits), dtype=torch.bool, device=all_logits.device)  # the population: every
    others[[state.user_index[u] for u in users if u in state.user_index]] = False  # user but those re-adapted
    population = all_logits[others] if others.any() else all_logits  # (U', K)
    pop = population.mean(0) if cfg.init == "population" else torch.zeros(net.k, device=all_logits.device)
    init = pop.expand(len(users), -1).clone()  # (n_users, K)
    if init_from_current:
        for u, i in local.items():
            if u in state.user_index:
                init[i] = all_logits[state.user_index[u]]
    known = others[: len(state.users)]
    prior = fit_prior(cfg.prior, all_logits[: len(state.users)][known] if known.any() else all_logits[: len(state.users)])
    logits = adapt_user_logits(net, table, idx, len(users), cfg, init.to(table.device), prior)
    if net.offset_dim:  # then the personal offsets given the K weights (models/offset.py): (n_users, K + r)
        var = state.config.adapt.offset_var or state.config.model.offset_var  # onboarding's own, if chosen
        offsets = fit_user_offsets(net, table, idx, len(users), logits, var)
        return torch.cat([logits, offsets], -1)
    return logits


def adapt(state: FittedModel, pairs: PairData, *, reset: bool = False) -> list[str]:
    """Learn (only) the K weights of every user in `pairs`; shared weights stay bit-identical.

    New users are added; known users are re-adapted on these pairs, starting from their current
    weights (or from the population when `reset`); every adapted user's posterior is computed from
    these pairs. Returns the users that were new.
    """
    if len(pairs) == 0:
        raise DataFormatError(f"{pairs.source}: no pairs to adapt on")
    if not state.net.has_users:
        logger.warning("adapt: the BTL baseline has no per-user parameters; nothing to learn")
        return []
    users = pairs.users_present()
    pairs = pairs.compact_users()
    table = pair_table(state, pairs)
    logits = adapt_logits(state, pairs, table, users, init_from_current=not reset)
    new = state.set_user_logits(users, logits)
    update_posteriors(state, pairs, table, users)
    logger.info("adapted %d users (%d new) on %d pairs", len(users), len(new), len(pairs))
    return new


def few_shot_curve(state: FittedModel, shots: PairData, test: PairData, ns: Sequence[int], *,
                   per_user: bool = False) -> dict:
    """{str(n): metrics} on `test` after adapting each of its users on their first n `shots`.

    The model is not modified. Users without shots (and every user at n = 0) are scored with the
    population's logits and no offset. `per_user` keeps each user's accuracy in the metrics.
    """
    from palrm.data.splits import take_shots

    net = state.net
    test = test.compact_users()
    users = test.user_ids
    test_table, shots_table = pair_table(state, test), pair_table(state, shots)
    idx = pair_index(test, test.user, test_table)
    curve = {}
    for n in ns:
        theta = torch.zeros(len(users), net.k + net.offset_dim, device=test_table.device)  # (U_test, K [+ r])
        if net.has_users:  # users without shots: the population, offset 0
            theta[:, : net.k] = net.user_logits.weight.detach().mean(0)
            sub = take_shots(shots, n).for_users(users).compact_users()
            if len(sub):
                learned = adapt_logits(state, sub, shots_table, sub.user_ids, init_from_current=False)
                position = {u: i for i, u in enumerate(users)}
                rows = torch.tensor([position[u] for u in sub.user_ids], device=theta.device)
                theta[rows] = learned.to(theta)
        with torch.no_grad():
            net.eval()
            w = torch.cat([net.weights_from_logits(theta[:, : net.k]), theta[:, net.k:]], -1)[idx.user]  # (n_test, K [+ r])
            z = net.pair_logits(w, test_table[idx.prompt], test_table[idx.chosen], test_table[idx.rejected])
        metrics = pair_metrics(z.cpu().numpy(), test.pair_user_ids)
        if not per_user:
            metrics.pop("per_user")
        curve[str(n)] = metrics
    return curve
