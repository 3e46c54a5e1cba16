"""What every reward network in palrm shares: user weights and the pairwise logit.

A network scores a response x for prompt t under user weights w (on the simplex, (B, K)):
    score(w, t, x) -> (B,)
and the preference logit of a pair is score(w, t, chosen) - score(w, t, rejected), so
P(chosen preferred) = sigmoid(logit) (the BTL model on the scores).

PAL networks factor the score through user-independent *pair features* (f of both responses and
the K anchors), so that learning a new user's K weights never recomputes (or touches) shared weights.

With `model.offset` (models/offset.py) a user is [w_u, delta_u]: the "weights" a network scores with
are then (B, K + r), the K mixture weights followed by the personal offset; (B, K) weights (a group,
the population, explicit mixtures) mean offset 0.

`mixture` (class): whether the network has K prototypes mixed per user (PAL); BTL has one shared
reward (K = 1, its single weight is always 1). `has_users` (instance): whether it has per-user
parameters of any kind: PAL always, BTL only with an input-space offset (a personal linear head on
top of the shared reward: "per-user heads + shrinkage").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from palrm.config import ModelConfig
from palrm.models.offset import input_features, offset_dim


@dataclass
class PairFeatures:
    """User-independent features of a batch of pairs (what `adapt` precomputes once).

    chosen, rejected: (B, d) f of the two responses.
    anchors: (B, K, d) or (1, K, d): the K candidate ideal points (f(p_k) for PAL-A, g_k(t) for PAL-B).
    """

    chosen: torch.Tensor
    rejected: torch.Tensor
    anchors: torch.Tensor
    offset_chosen: torch.Tensor | None = None  # (B, r) h(chosen) of the input-space offset, else None
    offset_rejected: torch.Tensor | None = None


class RewardNet(nn.Module):
    """Base class: user weight logits in an nn.Embedding(num_users, K) and the pairwise logit."""

    kind: str = ""
    mixture: bool = True  # K prototypes mixed per user (PAL); False: one shared reward (BTL)

    def __init__(self, config: ModelConfig, input_dim: int, num_users: int) -> None:
        super().__init__()
        self.config = config
        self.input_dim = input_dim
        k = config.k if self.mixture else 1
        self.user_logits = nn.Embedding(num_users, k)  # (U, K) theta_u; w_u = softmax(theta_u)
        nn.init.normal_(self.user_logits.weight, std=0.1)
        self.offset_kind = getattr(config, "offset", "none")
        self.has_users = self.mixture or self.offset_kind != "none"  # any per-user parameter
        if self.offset_kind != "none":  # (U, r) delta_u, fitted by MAP after training (no RNG drawn here)
            self.register_buffer("user_offsets", torch.zeros(num_users, offset_dim(self.offset_kind, config.d, input_dim)))

    @property
    def num_users(self) -> int:
        return self.user_logits.num_embeddings

    @property
    def k(self) -> int:
        return self.user_logits.embedding_dim

    @property
    def offset_dim(self) -> int:
        """r, the width of a user's personal offset (0 without `model.offset`)."""
        return self.user_offsets.shape[1] if self.offset_kind != "none" else 0

    # ---- users ----------------------------------------------------------------------------------
    def weights_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Mixture weights on the simplex from logits (B, K); partition users get the argmax one-hot
        at evaluation (training keeps the soft weights so that gradients flow)."""
        w = torch.softmax(logits, dim=-1)  # (B, K)
        if self.config.users == "partition" and not self.training:
            w = torch.nn.functional.one_hot(w.argmax(-1), w.shape[-1]).to(w.dtype)
        return w

    def user_weights(self, users: torch.Tensor) -> torch.Tensor:
        """What `score` takes for these users: (B, K) mixture weights, or (B, K + r) with offsets."""
        w = self.weights_from_logits(self.user_logits(users))  # (B, K)
        return torch.cat([w, self.user_offsets[users]], -1) if self.offset_dim else w  # (B, K [+ r])

    def grow_users(self, n_new: int, init: torch.Tensor | None = None) -> None:
        """Append `n_new` user rows (initialised to `init` (n_new, K) or zeros); existing rows unchanged."""
        old = self.user_logits.weight.data
        new_rows = torch.zeros(n_new, old.shape[1], dtype=old.dtype, device=old.device) if init is None else init.to(old)
        emb = nn.Embedding(old.shape[0] + n_new, old.shape[1]).to(old.device)
        emb.weight.data = torch.cat([old, new_rows], 0)
        self.user_logits = emb
        if self.offset_dim:
            self.user_offsets = torch.cat([self.user_offsets, self.user_offsets.new_zeros(n_new, self.offset_dim)], 0)

    def shared_parameters(self):
        """Every parameter except the user logits."""
        return [p for n, p in self.named_parameters() if not n.startswith("user_logits.")]  # offsets are a buffer

    # ---- scoring (subclasses define embed_response, anchors and the link) ------------------------
    def embed_response(self, x: torch.Tensor) -> torch.Tensor:
        """f: (B, D) -> (B, d)."""
        raise NotImplementedError

    def anchors(self, prompt: torch.Tensor) -> torch.Tensor:
        """The K candidate ideal points: (B, K, d), or (1, K, d) when they do not depend on the prompt."""
        raise NotImplementedError

    def link(self, fx: torch.Tensor, ideal: torch.Tensor) -> torch.Tensor:
        """Score of latent points fx (B, d) for ideal points (B, d): (B,)."""
        raise NotImplementedError

    def pair_features(self, prompt: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor) -> PairFeatures:
        both = self.embed_response(torch.cat([chosen, rejected], 0))  # (2B, d): one pass through f
        fc, fr = both.split(chosen.shape[0], 0)  # (B, d) each
        feats = PairFeatures(chosen=fc, rejected=fr, anchors=self.anchors(prompt))
        if self.offset_kind == "input":
            feats.offset_chosen, feats.offset_rejected = input_features(chosen), input_features(rejected)  # (B, D + 1)
        return feats

    def ideal_points(self, weights: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """a = sum_k w_k * anchor_k (+ delta for latent offsets): (B, K [+ r]), (B|1, K, d) -> (B, d)."""
        k = anchors.shape[1]
        ideal = torch.einsum("bk,bkd->bd", weights[:, :k], anchors.expand(weights.shape[0], -1, -1))  # (B, d)
        if self.offset_kind == "latent" and weights.shape[1] > k:
            ideal = ideal + weights[:, k:]  # (B, d): the ideal point moves by delta_u
        return ideal

    def _input_offset(self, weights: torch.Tensor, h: torch.Tensor | None) -> torch.Tensor | float:
        """<delta_u, h(x)> of an input-space offset (B,), or 0."""
        if self.offset_kind != "input" or weights.shape[1] == self.k or h is None:
            return 0.0
        return (weights[:, self.k:] * h).sum(-1)  # (B,)

    def logits_from_features(self, feats: PairFeatures, weights: torch.Tensor) -> torch.Tensor:
        ideal = self.ideal_points(weights, feats.anchors)  # (B, d)
        z = self.link(feats.chosen, ideal) - self.link(feats.rejected, ideal)  # (B,)
        if feats.offset_chosen is not None:
            z = z + self._input_offset(weights, feats.offset_chosen - feats.offset_rejected)
        return z

    def pair_logits(self, weights: torch.Tensor, prompt: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
        """Logit of P(chosen preferred): weights (B, K), embeddings (B, D) -> (B,)."""
        return self.logits_from_features(self.pair_features(prompt, chosen, rejected), weights)

    def score(self, weights: torch.Tensor, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        """Reward s_w(t, x): weights (B, K), prompt and response embeddings (B, D) -> (B,)."""
        ideal = self.ideal_points(weights, self.anchors(prompt))  # (B, d)
        s = self.link(self.embed_response(response), ideal)  # (B,)
        return s + self._input_offset(weights, input_features(response) if self.offset_kind == "input" else None)
