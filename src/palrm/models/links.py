"""Link functions: how close a response's latent point f(x) is to an ideal point a."""

from __future__ import annotations

import math

import torch
from torch import nn


def neg_sq_euclidean(fx: torch.Tensor, ideal: torch.Tensor) -> torch.Tensor:
    """s = -||f(x) - a||^2; (B, d), (B, d) -> (B,)."""
    return -((fx - ideal) ** 2).sum(-1)


class ScaledCosine(nn.Module):
    """s = tau * cos(f(x), a), tau = exp(log_tau) learned, capped at tau_max (as CLIP's logit scale)."""

    def __init__(self, tau_init: float, tau_max: float) -> None:
        super().__init__()
        self.log_tau = nn.Parameter(torch.tensor(math.log(tau_init)))
        self.tau_max = tau_max

    @property
    def tau(self) -> torch.Tensor:
        return self.log_tau.exp().clamp(max=self.tau_max)

    def forward(self, fx: torch.Tensor, ideal: torch.Tensor) -> torch.Tensor:
        return self.tau * torch.nn.functional.cosine_similarity(fx, ideal, dim=-1, eps=1e-8)  # (B,)
