"""Pairwise losses as pure functions of the preference logit z = s(chosen) - s(rejected)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bce_pair_loss(logits: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of the BTL model: mean over pairs of -log sigmoid(z) = softplus(-z)."""
    return F.softplus(-logits).mean()


def hinge_pair_loss(logits: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Hinge loss: mean over pairs of max(0, margin - z)."""
    return F.relu(margin - logits).mean()


LOSSES = {"bce": bce_pair_loss, "hinge": hinge_pair_loss}


def per_pair_nll(logits: torch.Tensor) -> torch.Tensor:
    """-log P(chosen preferred) for each pair: softplus(-z), (B,) -> (B,). Used for log-loss metrics."""
    return F.softplus(-logits)
