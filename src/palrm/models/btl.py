"""The BTL baseline: one reward r(t, x) = MLP([phi(t), phi(x)]) shared by every user.

This is what a standard reward model (TRL's RewardTrainer head) learns on the same embeddings, so
PAL and BTL are compared like for like. It has no per-user parameters: user weights are ignored.
"""

from __future__ import annotations

import torch

from palrm.config import ModelConfig
from palrm.models.base import PairFeatures, RewardNet
from palrm.models.mlp import MLP, activation


class BTL(RewardNet):
    kind = "btl"
    has_users = False

    def __init__(self, config: ModelConfig, input_dim: int, num_users: int) -> None:
        super().__init__(config, input_dim, num_users)
        self.user_logits.weight.requires_grad_(False)  # kept only so every net has the same user API
        self.reward_head = MLP(2 * input_dim, 1, config.hidden, activation(config.activation), config.dropout)

    def _reward(self, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        return self.reward_head(torch.cat([prompt, response], -1)).squeeze(-1)  # (B,)

    def pair_features(self, prompt, chosen, rejected) -> PairFeatures:
        rc = self._reward(prompt, chosen).unsqueeze(-1)  # (B, 1): the reward is the whole "feature"
        rr = self._reward(prompt, rejected).unsqueeze(-1)
        return PairFeatures(chosen=rc, rejected=rr, anchors=rc.new_zeros(1, 1, 1))

    def logits_from_features(self, feats: PairFeatures, weights: torch.Tensor) -> torch.Tensor:
        return (feats.chosen - feats.rejected).squeeze(-1)  # (B,)

    def score(self, weights, prompt, response) -> torch.Tensor:
        return self._reward(prompt, response)
