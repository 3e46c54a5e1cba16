"""Scoring: ONE path from (weights, prompt, response) items to rewards, shared by the facade
(`reward`, `reward_batch`, `reward_embeddings`), the scalar export, the server and the TRL reward.

For mixture weights w (n, K), prompt vectors p (n, D) and response vectors x (n, D):

    r_i = net.score(w_i, p_i, x_i)          (a missing prompt is the zero vector: the no-prompt row)

and for pairs, the preference logit z = r(chosen) - r(rejected) under the user's weights
(`predict_logits`). Items may instead ask for a population aggregate ("maxmin", "alpha:1", ...):
those are scored from the K per-prototype scores (`palrm.aggregate.population_reward`), one forward
per aggregate spec in the batch; `measure_reference` computes the statistics the aggregates need.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from palrm.core.state import FittedModel
from palrm.core.table import embedding_table, no_prompt_row, pair_index, text_rows
from palrm.data.io import check_embedding_dim
from palrm.data.schema import PairData
from palrm.errors import DataFormatError, ModelFileError
from palrm.models import RewardNet
from palrm.normalization import RewardNormalizer
from palrm.training import indexed
from palrm.training import predict_logits as _net_logits

__all__ = ["score_texts", "score_vectors", "score_items", "pair_table", "predict_logits", "text_embedder", "measure_reference",
           "pair_rewards", "measure_reward_stats"]


def score_vectors(net: RewardNet, weights: torch.Tensor, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """Rewards (n,) on the CPU from weights (n, K), prompt vectors (n, D) and response vectors (n, D)."""
    net.eval()
    with torch.no_grad():
        return net.score(weights, prompts, responses).cpu()


def score_items(net: RewardNet, weights: torch.Tensor, prompts: torch.Tensor, responses: torch.Tensor,
                aggregates: Sequence[str | None] | None = None, reference_stats=None,
                user_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Rewards (n,) on the CPU: item i under `aggregates[i]` when given (a population aggregate, e.g.
    "maxmin"), else under weights[i] (n, K). One forward for the weighted items, one per aggregate spec.

    `user_weights` (U, K): the users aggregates run over (default: the net's; an exported model carries them).
    """
    from palrm.aggregate import parse_aggregate, population_reward

    if aggregates is None or all(a is None for a in aggregates):
        return score_vectors(net, weights, prompts, responses)
    n = len(responses)
    canonical = {a: str(parse_aggregate(a)) for a in set(aggregates) if a is not None}  # each distinct spec parsed once
    by_spec: dict[str, list[int]] = {}
    for i, a in enumerate(aggregates):
        if a is not None:
            by_spec.setdefault(canonical[a], []).append(i)
    if len(by_spec) == 1 and len(next(iter(by_spec.values()))) == n:  # one aggregate for every item: no gathers
        return population_reward(net, reference_stats, next(iter(by_spec)), prompts, responses, user_weights).float()
    out = torch.zeros(n)
    plain = [i for i, a in enumerate(aggregates) if a is None]
    if plain:
        idx = torch.tensor(plain, device=responses.device)
        out[plain] = score_vectors(net, weights[idx], prompts[idx], responses[idx])
    for spec, items in by_spec.items():
        idx = torch.tensor(items, device=responses.device)
        out[items] = population_reward(net, reference_stats, spec, prompts[idx], responses[idx], user_weights).float()
    return out


def measure_reference(state: FittedModel, data: PairData, table: torch.Tensor | None = None):
    """`palrm.aggregate.ReferenceStats` of `state` on the reference set of `data` (its distinct
    (prompt, response) items, at most 4,096, seeded). `table`: `data`'s embedding table when the caller
    has it; else only the reference items' texts are embedded."""
    from palrm.aggregate import reference_items, reference_scores, reference_stats

    prompts, responses = reference_items(data, seed=state.config.train.seed)
    source = f"{len(responses)} distinct (prompt, response) items of {_where(data)}"
    if table is None:  # embed only the texts the reference set uses
        table, (prompts, responses) = _rows_table(state, data, prompts, responses)
    return reference_stats(reference_scores(state.net, table, prompts, responses), source=source)


def _where(data) -> str:
    return getattr(data, "source", None) or str(getattr(data, "directory", "the training pairs"))  # PairData or MemmapPairs


def _rows_table(state: FittedModel, data, *row_arrays: np.ndarray) -> tuple[torch.Tensor, list[np.ndarray]]:
    """An embedding table of only the rows of `data` that `row_arrays` use (-1: no prompt), and the
    arrays renumbered into it; the texts are embedded without writing the disk cache, precomputed
    (or memory-mapped) embeddings are read row by row."""
    rows = np.unique(np.concatenate([a[a >= 0] for a in row_arrays]))
    local = np.full(len(data.embeddings) if data.embeddings is not None else len(data.texts), -1, dtype=np.int64)
    local[rows] = np.arange(len(rows))
    if data.embeddings is not None:
        vectors = np.asarray(data.embeddings[rows], dtype=np.float32)  # (T', D)
        check_embedding_dim(vectors, state.input_dim, "this model")
    else:
        vectors = state.embedder.embed([data.texts[i] for i in rows], store=False)  # (T', D)
    table = embedding_table(vectors, state.device)  # (T' + 1, D)
    return table, [np.where(a >= 0, local[np.maximum(a, 0)], -1) for a in row_arrays]


def score_texts(net: RewardNet, weights: torch.Tensor, prompts: Sequence[str | None], responses: Sequence[str],
                embed: Callable[[list[str]], np.ndarray], input_dim: int | None = None, *,
                aggregates: Sequence[str | None] | None = None, reference_stats=None,
                user_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Rewards (n,) on the CPU of text items: every distinct text embedded once by `embed`.

    weights (n, K) on the net's device; prompts None or "" mean "no prompt". `aggregates` (one spec
    or None per item) and what they need: see `score_items`.
    """
    n = len(responses)
    if n == 0:
        return torch.zeros(0)
    texts, p_rows, x_rows = text_rows(prompts, responses)
    dev = weights.device
    vectors = embed(texts)  # (T, D)
    if input_dim is not None and np.shape(vectors)[1] != input_dim:
        raise ModelFileError(f"the encoder gives {np.shape(vectors)[1]}-d vectors, this model expects {input_dim}")
    table = embedding_table(vectors, dev)  # (T + 1, D), row T: no prompt
    p, x = torch.from_numpy(p_rows).to(dev), torch.from_numpy(x_rows).to(dev)
    return score_items(net, weights.to(table.dtype), table[p], table[x], aggregates, reference_stats, user_weights)


def pair_rewards(net: RewardNet, table: torch.Tensor, idx, chunk: int = 65536) -> torch.Tensor:
    """Rewards (2n,) on the CPU of every pair's chosen then rejected response, for the pair's user.

    `idx` (IndexedPairs) indexes `table`; BTL (no users) scores everybody alike. Partition users are
    scored with their argmax prototype (eval mode), as `reward` does.
    """
    net.eval()
    out_c, out_r = [], []
    with torch.no_grad():
        for i in range(0, len(idx.user), chunk):
            u = idx.user[i:i + chunk]
            w = net.user_weights(u) if net.has_users else torch.ones(len(u), net.k, device=table.device)  # (b, K)
            p = table[idx.prompt[i:i + chunk]]  # (b, D)
            out_c.append(net.score(w, p, table[idx.chosen[i:i + chunk]]).cpu())
            out_r.append(net.score(w, p, table[idx.rejected[i:i + chunk]]).cpu())
    return torch.cat(out_c + out_r) if out_c else torch.zeros(0)


def measure_reward_stats(state: FittedModel, data, reference: str = "reference pairs", *,
                         table: torch.Tensor | None = None, max_pairs: int | None = None) -> RewardNormalizer:
    """Mean / std of the rewards of `data`'s chosen and rejected responses, each for its pair's (known) user.

    `data`: PairData or memory-mapped pairs (`palrm.data.memmap`). `max_pairs`: at most this many
    pairs, drawn with the model's seed (positions kept in order; all pairs when there are fewer).
    `table`: `data`'s whole embedding table when the caller has it; else only the texts (or
    precomputed rows) the chosen pairs use are embedded, without writing the disk cache.
    """
    n = len(data.user)
    positions = np.arange(n)
    if max_pairs is not None and n > max_pairs:  # never a permutation of n: memmap data may hold billions
        positions = np.unique(np.random.default_rng(state.config.train.seed).integers(0, n, max_pairs))
    known, rows = state.known_rows(data, positions)
    if not known.any():
        raise DataFormatError(f"{_where(data)}: none of these pairs belongs to a user the model knows; the reference "
                              "set for reward statistics needs known users' pairs")
    positions, rows = positions[known], rows[known]
    prompt, chosen, rejected = (np.asarray(a[positions], dtype=np.int64) for a in (data.prompt, data.chosen, data.rejected))
    if table is None:
        table, (prompt, chosen, rejected) = _rows_table(state, data, prompt, chosen, rejected)
    idx = indexed(rows, prompt, chosen, rejected, no_prompt_row=no_prompt_row(table)).to(table.device)
    return RewardNormalizer.measure(pair_rewards(state.net, table, idx).numpy(), reference)


def text_embedder(state: FittedModel, *, store: bool) -> Callable[[list[str]], np.ndarray]:
    """`texts -> (T, D)` with the model's encoder; `store=False` never writes the disk cache."""
    return lambda texts: state.embedder.embed(texts, store=store)


def pair_table(state: FittedModel, data: PairData) -> torch.Tensor:
    """(len(data.texts) + 1, D) embedding table of `data` for `state` (embeddings given or embedded)."""
    if data.embeddings is not None:
        if state.input_dim is not None:
            check_embedding_dim(data, state.input_dim, "this model")
        vectors = np.asarray(data.embeddings, dtype=np.float32)
    else:
        if state.precomputed:
            raise DataFormatError(f"{data.source}: this model was trained on precomputed embeddings, these pairs have "
                                  "texts; pass pairs with embeddings (CLI: --embeddings FILE; Python: load_pairs(..., embeddings=FILE))")
        vectors = state.embedder.embed(data.texts, progress=state.config.train.progress)
        if state.input_dim is not None:
            check_embedding_dim(vectors, state.input_dim, "this model")
    return embedding_table(vectors, state.device)


def predict_logits(state: FittedModel, data: PairData) -> np.ndarray:
    """Preference logits (n,) of the chosen response for pairs of known users (unknown users: NaN)."""
    known, rows = state.known_rows(data)
    out = np.full(len(data), np.nan)
    if known.any():
        sub = data.select(known)
        table = pair_table(state, sub)
        out[known] = _net_logits(state.net, table, pair_index(sub, rows[known], table)).cpu().numpy()
    return out
