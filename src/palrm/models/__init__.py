"""Reward networks: PAL-A, PAL-B and the BTL baseline, built from a ModelConfig by a registry."""

from __future__ import annotations

import logging

from palrm.config import ModelConfig
from palrm.models.base import PairFeatures, RewardNet
from palrm.models.btl import BTL
from palrm.models.mlp import MLP, StackedMLP
from palrm.models.pal_a import PALA
from palrm.models.pal_b import PALB

logger = logging.getLogger(__name__)

MODELS: dict[str, type[RewardNet]] = {"pal-a": PALA, "pal-b": PALB, "btl": BTL}


DEFAULT_K = 3  # K of a network built from k="auto" where no selection ran (streaming, memmap, fine-tuning)


def build_net(config: ModelConfig, input_dim: int, num_users: int) -> RewardNet:
    """The network named by `config.kind` for inputs of dimension `input_dim` and `num_users` users.

    k="auto" is resolved by model selection (evaluation/selection.py) before in-memory fits; a path that
    does not select (streaming, memmap, fine-tuning) gets K = DEFAULT_K, and the config is updated to say so.
    """
    if config.k == "auto":
        logger.info("model.k=auto: model selection runs only for in-memory fits on frozen embeddings; using K=%d", DEFAULT_K)
        config.k = DEFAULT_K
    return MODELS[config.kind](config, input_dim, num_users)


__all__ = ["BTL", "MLP", "MODELS", "PALA", "PALB", "PairFeatures", "RewardNet", "StackedMLP", "build_net"]
