"""Reward networks: PAL-A, PAL-B and the BTL baseline, built from a ModelConfig by a registry."""

from __future__ import annotations

from palrm.config import ModelConfig
from palrm.models.base import PairFeatures, RewardNet
from palrm.models.btl import BTL
from palrm.models.mlp import MLP, StackedMLP
from palrm.models.pal_a import PALA
from palrm.models.pal_b import PALB

MODELS: dict[str, type[RewardNet]] = {"pal-a": PALA, "pal-b": PALB, "btl": BTL}


def build_net(config: ModelConfig, input_dim: int, num_users: int) -> RewardNet:
    """The network named by `config.kind` for inputs of dimension `input_dim` and `num_users` users."""
    return MODELS[config.kind](config, input_dim, num_users)


__all__ = ["BTL", "MLP", "MODELS", "PALA", "PALB", "PairFeatures", "RewardNet", "StackedMLP", "build_net"]
