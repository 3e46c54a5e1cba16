"""Fitting all users (`train_net`, `train_memmap`, both over the one loop `train_stream`) and onboarding new ones (`adapt_user_logits`)."""

from palrm.training.adapt import (
    LogitPrior,
    MixturePrior,
    adapt_user_logits,
    choose_offset_var,
    fit_prior,
    fit_user_offsets,
)
from palrm.training.engine import BatchSource, evaluate_source, train_stream
from palrm.training.loop import param_groups, train_memmap, train_net
from palrm.training.pairs import IndexedPairs, batch_logits, indexed, predict_logits
from palrm.training.sources import ArraySource, TableSource

__all__ = ["ArraySource", "BatchSource", "IndexedPairs", "LogitPrior", "MixturePrior", "TableSource", "adapt_user_logits",
           "batch_logits", "choose_offset_var", "evaluate_source", "fit_prior", "fit_user_offsets", "indexed",
           "param_groups", "predict_logits", "train_memmap", "train_net", "train_stream"]
