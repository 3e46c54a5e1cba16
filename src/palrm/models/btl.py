"""The BTL baseline: one reward r(t, x) = MLP([phi(t), phi(x)]) shared by every user.

This is what a standard reward model (TRL's RewardTrainer head) learns on the same embeddings, so
PAL and BTL are compared like for like. Plain BTL has no per-user parameters: user weights are ignored.

With `model.offset = "input"` it becomes per-user linear heads shrunk toward the shared reward (the
textbook baseline of issue 9, with a nonlinear shared head), in the offset model's terms
(models/offset.py):

    s_u(t, x) = r(t, x) + <delta_u, h(x)>,   h(x) = [phi(x), ||phi(x)||^2],   delta_u ~ N(0, sigma^2 I)

so z_ui = r(t, c_i) - r(t, r_i) + <delta_u, h(c_i) - h(r_i)>: the shared reward r is trained as BTL
(offsets zero), then each user's delta_u is its MAP estimate (a Bayesian logistic regression with
offsets), sigma^2 chosen on validation pairs; a new user with no pairs is scored by r alone. K = 1
and its one mixture weight is 1, so only delta_u is per user.
"""

from __future__ import annotations

import torch

from palrm.config import ModelConfig
from palrm.models.base import PairFeatures, RewardNet
from palrm.models.mlp import MLP, activation
from palrm.models.offset import input_features


class BTL(RewardNet):
    kind = "btl"
    mixture = False

    def __init__(self, config: ModelConfig, input_dim: int, num_users: int) -> None:
        super().__init__(config, input_dim, num_users)
        self.user_logits.weight.requires_grad_(False)  # kept only so every net has the same user API
        self.reward_head = MLP(2 * input_dim, 1, config.hidden, activation(config.activation), config.dropout)

    def _reward(self, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        return self.reward_head(torch.cat([prompt, response], -1)).squeeze(-1)  # (B,)

    def pair_features(self, prompt, chosen, rejected) -> PairFeatures:
        rc = self._reward(prompt, chosen).unsqueeze(-1)  # (B, 1): the reward is the whole "feature"
        rr = self._reward(prompt, rejected).unsqueeze(-1)
        feats = PairFeatures(chosen=rc, rejected=rr, anchors=rc.new_zeros(1, 1, 1))
        if self.offset_kind == "input":
            feats.offset_chosen, feats.offset_rejected = input_features(chosen), input_features(rejected)  # (B, D + 1)
        return feats

    def logits_from_features(self, feats: PairFeatures, weights: torch.Tensor) -> torch.Tensor:
        z = (feats.chosen - feats.rejected).squeeze(-1)  # (B,)
        if feats.offset_chosen is not None:
            z = z + self._input_offset(weights, feats.offset_chosen - feats.offset_rejected)  # + <delta_u, h(c) - h(r)>
        return z

    def score(self, weights, prompt, response) -> torch.Tensor:
        h = input_features(response) if self.offset_kind == "input" else None
        return self._reward(prompt, response) + self._input_offset(weights, h)  # (B,)
