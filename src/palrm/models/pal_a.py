"""PAL-A: ideal points that do not depend on the prompt.

    a_u = sum_k w_uk * f(p_k)          (prototype_space="input": the paper's f(P)w, p_k in R^D)
    a_u = sum_k w_uk * p_k             (prototype_space="latent": p_k in R^d directly)
    s_u(x) = -||f(phi(x)) - a_u||^2    (link="euclidean")  or  tau * cos(f(phi(x)), a_u)  (link="cosine")
"""

from __future__ import annotations

import torch
from torch import nn

from palrm.config import ModelConfig
from palrm.models.base import RewardNet
from palrm.models.links import ScaledCosine, neg_sq_euclidean
from palrm.models.mlp import MLP, activation


class PALA(RewardNet):
    kind = "pal-a"

    def __init__(self, config: ModelConfig, input_dim: int, num_users: int) -> None:
        super().__init__(config, input_dim, num_users)
        act = activation(config.activation)
        self.f = MLP(input_dim, config.d, config.hidden, act, config.dropout)  # R^D -> R^d
        proto_dim = input_dim if config.prototype_space == "input" else config.d
        self.prototypes = nn.Parameter(torch.randn(config.k, proto_dim) * 0.1)  # (K, D) or (K, d)
        self.cosine = ScaledCosine(config.tau_init, config.tau_max) if config.link == "cosine" else None

    def embed_response(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)  # (B, d)

    def anchors(self, prompt: torch.Tensor) -> torch.Tensor:
        protos = self.f(self.prototypes) if self.config.prototype_space == "input" else self.prototypes  # (K, d)
        return protos.unsqueeze(0)  # (1, K, d): the same for every prompt

    def link(self, fx: torch.Tensor, ideal: torch.Tensor) -> torch.Tensor:
        return self.cosine(fx, ideal) if self.cosine is not None else neg_sq_euclidean(fx, ideal)
