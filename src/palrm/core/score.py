"""Scoring: ONE path from (weights, prompt, response) items to rewards, shared by the facade
(`reward`, `reward_batch`, `reward_embeddings`), the scalar export, the server and the TRL reward.

For mixture weights w (n, K), prompt vectors p (n, D) and response vectors x (n, D):

    r_i = net.score(w_i, p_i, x_i)          (a missing prompt is the zero vector: the no-prompt row)

and for pairs, the preference logit z = r(chosen) - r(rejected) under the user's weights
(`predict_logits`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from palrm.core.state import FittedModel
from palrm.core.table import embedding_table, pair_index, text_rows
from palrm.data.io import check_embedding_dim
from palrm.data.schema import PairData
from palrm.errors import DataFormatError, ModelFileError
from palrm.models import RewardNet
from palrm.training import predict_logits as _net_logits

__all__ = ["score_texts", "score_vectors", "pair_table", "predict_logits", "text_embedder"]


def score_vectors(net: RewardNet, weights: torch.Tensor, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """Rewards (n,) on the CPU from weights (n, K), prompt vectors (n, D) and response vectors (n, D)."""
    net.eval()
    with torch.no_grad():
        return net.score(weights, prompts, responses).cpu()


def score_texts(net: RewardNet, weights: torch.Tensor, prompts: Sequence[str | None], responses: Sequence[str],
                embed: Callable[[list[str]], np.ndarray], input_dim: int | None = None) -> torch.Tensor:
    """Rewards (n,) on the CPU of text items: every distinct text embedded once by `embed`.

    weights (n, K) on the net's device; prompts None or "" mean "no prompt".
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
    return score_vectors(net, weights.to(table.dtype), table[p], table[x])


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
