"""PAL-B: prompt-conditioned ideal points.

    a_u(t) = sum_k w_uk * g_k(phi(t))          (K independent maps g_k: R^D -> R^d)
    s_u(t, x) = -||f(phi(x)) - a_u(t)||^2      (link="euclidean")
             or tau * cos(f(phi(x)), a_u(t))   (link="cosine", tau learned and capped, as CLIP)
"""

from __future__ import annotations

import torch

from palrm.config import ModelConfig
from palrm.models.base import RewardNet
from palrm.models.links import ScaledCosine, neg_sq_euclidean
from palrm.models.mlp import MLP, StackedMLP, activation


class PALB(RewardNet):
    kind = "pal-b"

    def __init__(self, config: ModelConfig, input_dim: int, num_users: int) -> None:
        super().__init__(config, input_dim, num_users)
        act = activation(config.activation)
        self.f = MLP(input_dim, config.d, config.hidden, act, config.dropout)  # R^D -> R^d
        self.g = StackedMLP(config.k, input_dim, config.d, config.hidden, act, config.dropout)  # R^D -> (K, d)
        self.cosine = ScaledCosine(config.tau_init, config.tau_max) if config.link == "cosine" else None

    def embed_response(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)  # (B, d)

    def anchors(self, prompt: torch.Tensor) -> torch.Tensor:
        return self.g(prompt)  # (B, K, d)

    def link(self, fx: torch.Tensor, ideal: torch.Tensor) -> torch.Tensor:
        return self.cosine(fx, ideal) if self.cosine is not None else neg_sq_euclidean(fx, ideal)
