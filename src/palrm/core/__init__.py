"""The functional core of palrm: the fitted state and the functions over it.

    state.py    FittedModel (network, users, input dim, encoder, config, backbone), as_pairs
    table.py    texts -> vectors (Embedder: encoder + ONE embedding cache per model) and the
                embedding table with its "no prompt" row
    fit.py      fit (frozen, streaming / data-parallel / fine-tuned) and fit_memmap
    adapt.py    adapt (new and known users' K logits), few_shot_curve
    score.py    ONE scoring path (score_texts / score_vectors / score_items (aggregates too) /
                predict_logits) and measure_reference (the aggregates' reference statistics)
    persist.py  save / load, format-version, device and encoder-identity checks (shared by export)
    posterior.py  users' weight posteriors: fit / update / read, next queries, rewards with std and risk

`PALRewardModel` (reward_model.py) is a thin scikit-learn-style wrapper over it; serve, export,
bench and the integrations call this package, never a facade private. Nothing here imports the facade.
"""

from palrm.core.adapt import adapt, adapt_logits, few_shot_curve
from palrm.core.fit import data_fingerprint, fit, fit_memmap, needs_streaming_fit
from palrm.core.persist import check_encoder, check_format_version, encoder_spec, load, resolve_device, save
from palrm.core.posterior import (
    PoolCache,
    fit_posteriors,
    next_queries,
    posterior_prior,
    score_uncertain,
    spread_vectors,
    update_posteriors,
    user_posterior,
)
from palrm.core.score import (
    measure_reference,
    measure_reward_stats,
    pair_rewards,
    pair_table,
    predict_logits,
    score_items,
    score_texts,
    score_vectors,
    text_embedder,
)
from palrm.core.state import FittedModel, as_pairs
from palrm.core.table import Embedder, build_encoder, embedding_table, no_prompt_row, pair_index, text_rows

__all__ = [
    "Embedder", "FittedModel", "adapt", "adapt_logits", "as_pairs", "build_encoder", "check_encoder",
    "check_format_version", "data_fingerprint", "embedding_table", "encoder_spec", "few_shot_curve", "fit",
    "fit_memmap", "load", "measure_reference", "needs_streaming_fit", "no_prompt_row", "pair_index", "pair_table", "predict_logits",
    "resolve_device", "save", "score_items", "score_texts", "score_vectors", "text_embedder", "text_rows",
    "PoolCache", "fit_posteriors", "next_queries", "posterior_prior", "score_uncertain", "spread_vectors",
    "update_posteriors", "user_posterior",
    "measure_reward_stats", "pair_rewards",
]
