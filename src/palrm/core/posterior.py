"""Users' weight posteriors on a fitted model (the math is in `palrm.training.posterior`).

    fit_posteriors      after training: the prior fitted to the training users, and their posteriors
    update_posteriors   after adapt: the adapted users' posteriors from the pairs they were adapted on
    user_posterior      a known user's posterior (UnknownUserError / a clear error when none is stored)
    next_queries        the pool pairs of highest expected information gain for a user (new: the prior)
    score_uncertain     rewards of text items under the users' posteriors: (value, std), risk = quantile

The posteriors live in `FittedModel.posteriors` (user -> UserPosterior) and the prior in
`FittedModel.posterior_prior`; `persist` writes both to posteriors.json.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from palrm.core.score import pair_table
from palrm.core.state import FittedModel
from palrm.core.table import embedding_table, pair_index, text_rows
from palrm.data.schema import PairData
from palrm.errors import ConfigError, DataFormatError, PalrmError
from palrm.training import IndexedPairs, LogitPrior
from palrm.training.posterior import (
    PairTerms,
    PopulationPrior,
    UserPosterior,
    fit_population_prior,
    laplace_users,
    parse_risk,
    prior_posterior,
    reward_samples,
    select_queries,
)

__all__ = ["PoolCache", "fit_posteriors", "next_queries", "posterior_or_prior", "posterior_prior", "score_uncertain",
           "spread_vectors", "update_posteriors", "user_posterior"]


def fit_posteriors(state: FittedModel, idx: IndexedPairs, table: torch.Tensor) -> None:
    """The prior over the training users (`fit_population_prior`) and every training user's posterior."""
    state.posteriors, state.posterior_prior = {}, None
    if not state.net.has_users:
        return
    logits = state.net.user_logits.weight.detach().double().cpu().numpy()
    state.posterior_prior, posts = fit_population_prior(PairTerms.from_pairs(state.net, table, idx),
                                                        idx.user.cpu().numpy(), len(state.users), logits)
    state.posteriors = dict(zip(state.users, posts))


def posterior_prior(state: FittedModel) -> PopulationPrior | LogitPrior:
    """The prior of the posteriors: fitted at training time, else the moments of the trained logits."""
    if state.posterior_prior is not None:
        return state.posterior_prior
    return LogitPrior.fit(state.net.user_logits.weight.detach().double().cpu())


def update_posteriors(state: FittedModel, pairs: PairData, table: torch.Tensor, users: list[str]) -> None:
    """Posteriors of `users` (known by now) from `pairs` (compacted to `users`), started at their logits."""
    if not state.net.has_users:
        return
    local = {u: i for i, u in enumerate(users)}
    rows = np.array([local[u] for u in pairs.user_ids], dtype=np.int64)[pairs.user]
    idx = pair_index(pairs, rows, table)
    init = state.net.user_logits.weight.detach()[[state.user_index[u] for u in users]].double().cpu().numpy()
    posts = laplace_users(PairTerms.from_pairs(state.net, table, idx), rows, len(users), posterior_prior(state), 1.0, init)
    state.posteriors.update(zip(users, posts))


def user_posterior(state: FittedModel, user_id: str) -> UserPosterior:
    state.user_row(user_id)  # UnknownUserError with the onboarding hint
    if not state.net.has_users:
        raise PalrmError("the BTL baseline has no per-user weights, hence no posterior")
    post = state.posteriors.get(str(user_id))
    if post is None:
        raise PalrmError(f"no posterior is stored for user {user_id!r} (the model was trained through the streaming or "
                         "memmap path, or saved without one): re-adapt the user on its pairs (model.adapt(pairs) / "
                         "palrm adapt) to compute it")
    return post


def posterior_or_prior(state: FittedModel, user_id: str | None) -> UserPosterior:
    """A known user's posterior; the prior for a new user (or None)."""
    if user_id is not None and str(user_id) in state.user_index:
        return user_posterior(state, user_id)
    return prior_posterior(posterior_prior(state))


class PoolCache:
    """The pair terms of the last query pool (by identity), so that asking again costs only the information gain."""

    def __init__(self) -> None:
        self.pool: PairData | None = None
        self.terms: PairTerms | None = None

    def terms_of(self, state: FittedModel, pool: PairData) -> PairTerms:
        if self.pool is not pool:
            table = pair_table(state, pool)
            idx = pair_index(pool, np.zeros(len(pool), dtype=np.int64), table)
            self.pool, self.terms = pool, PairTerms.from_pairs(state.net, table, idx)
        return self.terms


def next_queries(state: FittedModel, user_id: str | None, pool: PairData, n: int = 1,
                 cache: PoolCache | None = None) -> list[dict]:
    """[{"index", "prompt", "response_a", "response_b", "information_gain"}] of the `n` best pool pairs."""
    if not state.net.has_users:
        raise PalrmError("the BTL baseline has no per-user weights: there is nothing to learn from queries")
    if len(pool) == 0:
        raise DataFormatError(f"{pool.source}: the query pool is empty; pass at least one candidate pair")
    if n < 1:
        raise ConfigError(f"n={n}: ask for at least one query")
    terms = (cache or PoolCache()).terms_of(state, pool)
    order, gain = select_queries(posterior_or_prior(state, user_id), terms, n=min(n, len(pool)))
    prompts = pool.text_of(pool.prompt[order]) if pool.has_prompts else [None] * len(order)
    return [{"index": int(i), "prompt": p or None, "response_a": a, "response_b": b, "information_gain": float(g)}
            for i, p, a, b, g in zip(order, prompts, pool.text_of(pool.chosen[order]), pool.text_of(pool.rejected[order]), gain)]


def spread_vectors(state: FittedModel, user_id: str | None, weights: torch.Tensor, prompts: torch.Tensor,
                   responses: torch.Tensor, risk: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(value, std) (R,) of R rewards under `user_id`'s posterior (None: the fixed `weights`, std 0);
    value = the posterior mean, or its quantile for risk="quantile:q"."""
    q = parse_risk(risk)
    if user_id is None or not state.net.has_users:
        state.net.eval()
        with torch.no_grad():
            s = state.net.score(weights, prompts, responses).double().cpu().numpy()
        return s, np.zeros_like(s)
    offset = state.net.user_offsets[state.user_row(user_id)] if state.net.offset_dim else None  # (r,) delta_u
    samples = reward_samples(user_posterior(state, user_id), state.net, prompts, responses, offset=offset)  # (S, R)
    return (samples.mean(0) if q is None else np.quantile(samples, q, axis=0)), samples.std(0)


def score_uncertain(state: FittedModel, prompts: Sequence[str | None], responses: Sequence[str],
                    user_ids: Sequence[str | None] | None, weights: Sequence[Any] | None,
                    embed: Callable[[list[str]], np.ndarray], risk: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(value, std) (n,) of text items: items of one user share its posterior draws; explicit weights: std 0."""
    parse_risk(risk)
    n = len(responses)
    w = state.item_weights(n, user_ids, weights)  # (n, K); validates users and weights
    texts, p_rows, x_rows = text_rows(prompts, responses)
    table = embedding_table(embed(texts), state.device)
    p_vec, x_vec = table[torch.from_numpy(p_rows).to(table.device)], table[torch.from_numpy(x_rows).to(table.device)]
    value, std = np.zeros(n), np.zeros(n)
    groups: dict = {}
    for i in range(n):
        explicit = weights is not None and weights[i] is not None
        groups.setdefault(None if explicit or user_ids is None or not state.net.has_users else str(user_ids[i]), []).append(i)
    for user, items in groups.items():
        sel = torch.tensor(items, device=table.device)
        value[items], std[items] = spread_vectors(state, user, w[sel], p_vec[sel], x_vec[sel], risk)
    return value.astype(np.float32), std.astype(np.float32)
