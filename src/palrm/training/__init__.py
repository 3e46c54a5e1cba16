"""Fitting all users (`train_net`) and onboarding new ones (`adapt_user_logits`)."""

from palrm.training.adapt import LogitPrior, MixturePrior, adapt_user_logits, fit_prior
from palrm.training.loop import (
    IndexedPairs,
    batch_logits,
    indexed,
    predict_logits,
    train_net,
)

__all__ = ["IndexedPairs", "LogitPrior", "MixturePrior", "fit_prior", "adapt_user_logits", "batch_logits", "indexed", "predict_logits", "train_net"]
