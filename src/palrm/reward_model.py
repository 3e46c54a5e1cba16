"""`PALRewardModel`: the one user-facing facade (scikit-learn contract), a thin wrapper over `palrm.core`.

`__init__` only stores arguments; `fit` returns self; `adapt` adds or updates users without touching
shared weights (partial_fit semantics); learned state ends in `_`. The fitted state itself is a
`palrm.core.FittedModel` (`fitted_`); the attributes `net_`, `users_`, `user_index_`, `input_dim_`,
`precomputed_`, `encoder_`, `backbone_` and `history_` are views of it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from palrm import core
from palrm.config import FALLBACK_PRIOR_STRENGTH, PALConfig, dotted_key
from palrm.core.state import PairsLike, as_pairs
from palrm.data.io import check_embedding_dim
from palrm.errors import ConfigError, PalrmError
from palrm.evaluation.metrics import pair_metrics
from palrm.normalization import NO_STATS_HINT, RewardNormalizer

logger = logging.getLogger(__name__)


def _view(name: str, doc: str) -> property:
    """A facade attribute that reads and writes `fitted_.<name>`."""

    def get(self):
        state = self.__dict__.get("fitted_")
        return None if state is None else getattr(state, name)

    def set(self, value):
        self._fitted().__setattr__(name, value)

    return property(get, set, doc=doc)


class PALRewardModel:
    """A personalized reward model (PAL-A, PAL-B) or the BTL baseline on foundation-model embeddings.

    Args:
        config: a full `PALConfig` (defaults when None).
        **overrides: dotted or plain field overrides, e.g. `kind="pal-a"`, `k=4`, `epochs=10`,
            `encoder="hashing"`, or `{"model.k": 4}` style keys. `encoder=` may also be an Encoder
            object (shared between models to load weights once).

    Example:
        >>> model = PALRewardModel(kind="pal-b", k=3).fit(train, val)
        >>> model.adapt(new_user_pairs)
        >>> model.reward("alice", "Summarise this post", ["short answer", "long answer"])
    """

    net_ = _view("net", "the RewardNet (shared weights + user table)")
    users_ = _view("users", "user ids; row u of the user table is users_[u]")
    user_index_ = _view("user_index", "user id -> row of the user table")
    input_dim_ = _view("input_dim", "D, the length of the input vectors")
    precomputed_ = _view("precomputed", "True when trained on precomputed embeddings")
    backbone_ = _view("backbone", "the fine-tuned backbone (PAL-Large) or None")
    history_ = _view("history", "per-epoch training log")
    reference_stats_ = _view("reference_stats", "the aggregates' reference statistics (palrm.aggregate.ReferenceStats)")
    selection_ = _view("selection", 'the k="auto" model-selection report (evaluation/selection.py), or None')
    prior_choice_ = _view("prior_choice", "how adapt.prior_strength was set: chosen on known users (every strength's "
                          "log-loss), by the model selection, configured, or a fallback and why")

    def __init__(self, config: PALConfig | None = None, **overrides: Any) -> None:
        self.config = config
        self.overrides = overrides

    def _encoder_object(self):
        enc = self.overrides.get("encoder")
        return None if enc is None or isinstance(enc, str) else enc

    # ------------------------------------------------------------------ configuration
    def _config(self) -> PALConfig:
        base = self.config or PALConfig()
        overrides = dict(self.overrides)
        if self._encoder_object() is not None:
            overrides["encoder"] = core.encoder_spec(self._encoder_object())
        if not overrides:
            return PALConfig.from_dict(base.to_dict())
        return base.updated(overrides)

    @property
    def config_(self) -> PALConfig:
        """The configuration of the fitted model (its sections may be changed in place, e.g. adapt.steps)."""
        return self._fitted().config

    def get_params(self, deep: bool = True) -> dict:
        """scikit-learn: the constructor arguments."""
        return {"config": self.config, **self.overrides}

    def set_params(self, **params: Any) -> "PALRewardModel":
        """scikit-learn: change constructor arguments (`config=` or overrides such as `k=4`,
        `**{"adapt.prior": "gaussian"}`); returns self. On a fitted model, the adapt and encoder settings
        given take effect at once (the other fitted values, e.g. a chosen prior strength, stay; a prior
        strength of "auto" means the one chosen when fitting); the others at the next `fit`."""
        if "config" in params:
            self.config = params.pop("config")
        self.overrides.update(params)
        state = self.__dict__.get("fitted_")
        if state is not None and params:
            given = {dotted_key(key): value for key, value in params.items()}
            given = {key: (core.encoder_spec(v) if key == "encoder.spec" and not isinstance(v, str) else v)
                     for key, v in given.items() if key.split(".")[0] in ("adapt", "encoder")}
            if given.get("adapt.prior_strength") == "auto":
                given["adapt.prior_strength"] = (state.prior_choice or {}).get("strength", FALLBACK_PRIOR_STRENGTH)
            new = state.config.updated(given)
            for section in {key.split(".")[0] for key in given}:
                setattr(state.config, section, getattr(new, section))
            state.embedder.config = state.config.encoder
        return self

    def _fitted(self) -> core.FittedModel:
        state = self.__dict__.get("fitted_")
        if state is None:
            raise PalrmError("this PALRewardModel is not fitted yet: call fit(train) or PALRewardModel.load(dir) first")
        return state

    @property
    def encoder_(self):
        """The text encoder (built from the config on first use); None for precomputed-embedding models."""
        state = self._fitted()
        return None if state.precomputed else state.embedder.encoder

    @encoder_.setter
    def encoder_(self, encoder) -> None:
        self._fitted().embedder.encoder = encoder

    # ------------------------------------------------------------------ fit
    def fit(self, train: PairsLike, val: PairsLike | None = None, *, log_path: str | os.PathLike | None = None,
            checkpoint_dir: str | os.PathLike | None = None, resume: bool = False) -> "PALRewardModel":
        """Train on every user of `train`; early stopping on `val` loss when given. Returns self.

        Fine-tuning (`finetune.enabled`), gradient accumulation, runs under torchrun and runs with a
        `checkpoint_dir` (resumable checkpoints; `resume=True` continues one) take the streaming
        loop; everything else the in-memory `train_net` (see `palrm.core.fit`).
        """
        cfg = self._config()
        train = as_pairs(train, "train")
        val = as_pairs(val, "val") if val is not None else None
        self.fitted_ = core.fit(cfg, train, val, encoder=self._encoder_object(), log_path=log_path,
                                checkpoint_dir=checkpoint_dir, resume=resume)
        return self

    def fit_memmap(self, train_dir: str | os.PathLike, val_dir: str | os.PathLike | None = None, *,
                   log_path: str | os.PathLike | None = None, checkpoint_dir: str | os.PathLike | None = None,
                   resume: bool = False) -> "PALRewardModel":
        """Train on a memory-mapped pair directory (palrm.data.memmap) larger than memory. Returns self.

        Training streams over the arrays batch by batch; the model then holds precomputed-embedding
        inputs (score with `reward_embeddings`), its users named by the directory's users.json.
        """
        self.fitted_ = core.fit_memmap(self._config(), train_dir, val_dir, log_path=log_path,
                                       checkpoint_dir=checkpoint_dir, resume=resume)
        return self

    # ------------------------------------------------------------------ users
    @property
    def k(self) -> int:
        return self._fitted().net.k

    def user_weights(self, user_id: str) -> np.ndarray:
        """The user's mixture weights w_u (K,) on the simplex."""
        return self._fitted().user_weights(user_id)

    def population_weights(self) -> np.ndarray:
        """Mean mixture weights over all known users (K,): the population's reward."""
        return self._fitted().population_weights()

    def mixture_weights(self, weights: Any) -> np.ndarray:
        """Mixture weights (K,) from K numbers (normalised), "population" or "group:k"; ConfigError if invalid."""
        return self._fitted().resolve_weights(weights).cpu().numpy()

    # ------------------------------------------------------------------ adapt
    def adapt(self, pairs: PairsLike, *, reset: bool = False) -> "PALRewardModel":
        """Learn (only) the K weights of every user in `pairs`; shared weights stay bit-identical.

        New users are added; known users are re-adapted on these pairs, starting from their current
        weights (or from the population when `reset`). Returns self.
        """
        state = self._fitted()
        core.adapt(state, as_pairs(pairs, "adapt pairs"), reset=reset)
        return self

    # ------------------------------------------------------------------ posterior (issue 10)
    def user_posterior(self, user_id: str):
        """The posterior of a known user's weights (`palrm.training.posterior.UserPosterior`):
        `weights_mean`, `weights_std`, `uncertainty`, `mean_logits`, `cov_logits`, `sample_weights(n)`.
        Computed at `fit` (training users) and `adapt` (adapted users); saved with the model."""
        return core.user_posterior(self._fitted(), user_id)

    @property
    def posterior_prior_(self):
        """The prior of the users' posteriors, fitted to the training users (`PopulationPrior`) or None."""
        return self._fitted().posterior_prior

    def next_queries(self, user_id: str | None, pool: PairsLike, n: int = 1) -> list[dict]:
        """The `n` pool pairs whose answer tells the most about the user's weights (expected information gain).

        `pool`: candidate pairs (PairData, DataFrame or file; chosen / rejected are just the two
        responses, their order is irrelevant). A known user starts from its posterior, a new user (or
        None) from the prior. Returns [{"index": row of the pool, "prompt", "response_a", "response_b",
        "information_gain" (nats)}], best first. The last pool's terms are cached (same PairData object).
        """
        if self.__dict__.get("_pool_cache") is None:
            self._pool_cache = core.PoolCache()
        return core.next_queries(self._fitted(), user_id, as_pairs(pool, "pool"), n, cache=self._pool_cache)

    # ------------------------------------------------------------------ evaluate
    def predict_logits(self, pairs: PairsLike) -> np.ndarray:
        """Preference logits (n,) of the chosen response for pairs of known users (unknown users: NaN)."""
        state = self._fitted()
        return core.predict_logits(state, as_pairs(pairs, "pairs"))

    def evaluate(self, pairs: PairsLike) -> dict:
        """Accuracy, log-loss and per-user accuracy on pairs of known users.

        Pairs of users the model does not know are never scored with a default: they are counted
        apart under "unknown_users" (and a warning is logged).
        """
        pairs = as_pairs(pairs, "evaluation pairs")
        logits = self.predict_logits(pairs)
        known = ~np.isnan(logits)
        metrics = pair_metrics(logits[known], pairs.pair_user_ids[known])
        unknown_ids = sorted(set(pairs.pair_user_ids[~known]))
        metrics["unknown_users"] = {"n_pairs": int((~known).sum()), "n_users": len(unknown_ids), "user_ids": unknown_ids[:20]}
        if unknown_ids:
            logger.warning("evaluate: %d pairs of %d unknown users were not scored (adapt them first): %s",
                           int((~known).sum()), len(unknown_ids), ", ".join(unknown_ids[:5]))
        return metrics

    def few_shot_curve(self, shots: PairsLike, test: PairsLike, ns: Sequence[int] = (0, 1, 2, 5, 10, 20, 50), *,
                       per_user: bool = False) -> dict:
        """Accuracy on unseen users' held-out `test` pairs after adapting on their first n `shots`.

        The model is not modified (the adapted weights are temporary). `shots` holds each user's
        adaptation pool in order (see `palrm.data.few_shot_split`); the n-shot sets are nested. A
        user with fewer than n pool pairs uses all of them; n = 0 is the population (every user alike).
        Returns {str(n): metrics} (each user's accuracy under "per_user" when `per_user`).
        """
        state = self._fitted()
        return core.few_shot_curve(state, as_pairs(shots, "shots"), as_pairs(test, "test"), ns, per_user=per_user)

    # ------------------------------------------------------------------ rewards
    def reward(self, user_id: str | None, prompt: str, responses: Sequence[str], *, weights: Any = None,
               aggregate: str | None = None, normalize: bool = False, uncertainty: bool = False, risk: str | None = None):
        """Scalar rewards r_u(prompt, response) for each response.

        `user_id` must be known (else UnknownUserError), unless `weights` is given: a list of K mixture
        weights, "population" (the mean user) or "group:k" (prototype k); or `aggregate` (user_id None):
        one reward for the whole population, e.g. "maxmin", "mean", "alpha:1", "quantile:0.1" (the
        forms and their formulas: `palrm.aggregate`).

        Under the user's weight posterior (`user_posterior`): `uncertainty=True` returns (mean, std),
        two lists; `risk="quantile:0.1"` the 10% quantile of the reward (risk-averse, for RLHF),
        `risk="mean"` the posterior mean. Explicit `weights` are certain (std 0). `normalize`: (r - mean) / std with the model's
        reference statistics of users' rewards (`reward_stats_`; raw by default; the std scales by 1 / std).
        """
        if isinstance(responses, str):
            responses = [responses]
        n = len(responses)
        out = self.reward_batch([prompt] * n, list(responses), user_ids=[user_id] * n,
                                weights=None if weights is None else [weights] * n, aggregate=aggregate, normalize=normalize,
                                uncertainty=uncertainty, risk=risk)
        if uncertainty:
            return [float(s) for s in out[0]], [float(s) for s in out[1]]
        return [float(s) for s in out]

    def reward_batch(
        self,
        prompts: Sequence[str | None],
        responses: Sequence[str],
        *,
        user_ids: Sequence[str | None] | None = None,
        weights: Sequence[Any] | None = None,
        aggregate: str | Sequence[str | None] | None = None,
        normalize: bool = False,
        uncertainty: bool = False,
        risk: str | None = None,
    ):
        """Rewards of many (user, prompt, response) items in one forward pass: (n,) float array.

        Item i is scored under the population aggregate `aggregate` (one spec for every item, or
        `aggregate[i]`; see `palrm.aggregate`) when given, else for `weights[i]` when given (K numbers,
        "population" or "group:k"), else for the known user `user_ids[i]` (UnknownUserError names the
        first unknown one). Every distinct text is embedded once; the embedding cache is read, never written.
        `uncertainty=True` returns (mean, std) arrays under each user's posterior, `risk="quantile:q"`
        the q-quantile (see `reward`); neither combines with `aggregate`.
        `normalize`: (r - mean) / std with the model's reference statistics (`reward_stats_`; raw by default).
        """
        state = self._fitted()
        n = len(responses)
        if len(prompts) != n or (user_ids is not None and len(user_ids) != n) or (weights is not None and len(weights) != n):
            raise ConfigError("reward_batch: prompts, responses, user_ids and weights must have the same length")
        aggs = _per_item_aggregates(aggregate, n, user_ids, weights)
        if state.precomputed:
            raise PalrmError("this model was trained on precomputed embeddings, not texts: call "
                             "reward_embeddings(user_id, prompt_vector, response_vectors) instead")
        if n == 0:
            empty = np.zeros(0, dtype=np.float32)
            return (empty, empty) if uncertainty else empty
        if normalize and state.reward_stats is None:
            raise ConfigError(f"normalize=True: {NO_STATS_HINT}")
        if uncertainty or risk is not None:
            if aggs is not None:
                raise ConfigError("reward_batch: give aggregate (one reward for the population) or uncertainty / risk "
                                  "(per user), not both")
            value, std = core.score_uncertain(state, prompts, responses, user_ids, weights,
                                              core.text_embedder(state, store=False), risk)
            if normalize:
                value, std = state.reward_stats.apply(value), (np.asarray(std) / state.reward_stats.std).astype(np.float32)
            return (value, std) if uncertainty else value
        w = _weights_of(state, n, user_ids, weights, aggs)  # (n, K)
        out = core.score_texts(state.net, w, prompts, responses, core.text_embedder(state, store=False),
                               aggregates=aggs, reference_stats=state.reference_stats).numpy()
        return state.reward_stats.apply(out) if normalize else out

    @property
    def reward_stats_(self) -> RewardNormalizer | None:
        """Mean / std of users' rewards on the reference set (the training responses, unless re-measured), or None."""
        return self._fitted().reward_stats

    def measure_reward_stats(self, pairs: PairsLike, *, reference: str = "reference pairs") -> "PALRewardModel":
        """Measure the normalisation statistics on `pairs` (their chosen and rejected responses, scored for
        their known users) instead of the training responses; `save` keeps them. Returns self."""
        state = self._fitted()
        state.reward_stats = core.measure_reward_stats(state, as_pairs(pairs, "reference pairs"), reference)
        return self

    def reward_embeddings(self, user_id: str | None, prompt: np.ndarray | None, responses: np.ndarray, *, weights: Any = None,
                          aggregate: str | None = None, uncertainty: bool = False, risk: str | None = None):
        """Rewards from precomputed vectors: prompt (D,) or None, responses (R, D); `weights` or
        `aggregate` instead of a user, `uncertainty` and `risk` as in `reward`."""
        state = self._fitted()
        responses = np.atleast_2d(np.asarray(responses, dtype=np.float32))
        check_embedding_dim(responses, state.input_dim, "this model")
        prompt = np.zeros(state.input_dim, np.float32) if prompt is None else np.asarray(prompt, np.float32).reshape(-1)
        dev = state.device
        r = len(responses)
        aggs = _per_item_aggregates(aggregate, 1, [user_id], None if weights is None else [weights])
        w = _weights_of(state, 1, [user_id], None if weights is None else [weights], aggs).expand(r, -1)  # (R, K)
        p_t, x_t = torch.from_numpy(prompt).to(dev).expand(r, -1), torch.from_numpy(responses).to(dev)
        if uncertainty or risk is not None:
            if aggs is not None:
                raise ConfigError("reward_embeddings: give aggregate or uncertainty / risk, not both")
            value, std = core.spread_vectors(state, user_id if weights is None else None, w, p_t, x_t, risk)
            return (value.tolist(), std.tolist()) if uncertainty else value.tolist()
        scores = core.score_items(state.net, w, p_t, x_t, None if aggs is None else aggs * r, state.reference_stats)
        return [float(s) for s in scores]

    def set_reference(self, pairs: PairsLike) -> "PALRewardModel":
        """(Re)measure the reference statistics that put the K prototypes' rewards on a common scale for
        aggregates: mean and std of each prototype's reward over the distinct (prompt, response) items
        of `pairs` (at most 4,096, seeded). `fit` does this on the training pairs; `save` keeps them.
        Returns self."""
        state = self._fitted()
        state.reference_stats = core.measure_reference(state, as_pairs(pairs, "reference pairs"))
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> Path:
        """Write config.json, model.safetensors, users.json (and posteriors.json); atomic: a failed
        save leaves any earlier model in `directory` intact."""
        return core.save(self._fitted(), directory)

    @classmethod
    def load(cls, directory: str | os.PathLike, *, device: str | None = None, encoder=None) -> "PALRewardModel":
        """Load a model written by `save` (safetensors + JSON only; no pickle is ever read).

        `device`: where to run it (default: as saved, or the CPU where that device is absent).
        `encoder`: the Encoder object to embed texts with, needed when the model was built with an
        encoder object that palrm cannot rebuild from its spec.
        """
        state = core.load(directory, device=device, encoder=encoder)
        model = cls(state.config) if encoder is None else cls(state.config, encoder=encoder)
        model.fitted_ = state
        return model

    def __repr__(self) -> str:
        state = self.__dict__.get("fitted_")
        cfg = state.config if state is not None else self._config()
        users = f", users={len(state.users)}" if state is not None else ""
        return (f"PALRewardModel(kind={cfg.model.kind!r}, k={cfg.model.k}, encoder={cfg.encoder.spec!r}{users}, "
                f"fitted={state is not None})")


def _per_item_aggregates(aggregate, n: int, user_ids, weights) -> list | None:
    """The aggregate spec of each of n items (None: scored for its user or weights), checked against
    items that also name a user or weights."""
    if aggregate is None:
        return None
    aggs = [aggregate] * n if isinstance(aggregate, str) else list(aggregate)
    if len(aggs) != n:
        raise ConfigError(f"reward_batch: aggregate has {len(aggs)} entries for {n} items; give one spec or one per item")
    for i, a in enumerate(aggs):
        if a is not None and ((user_ids is not None and user_ids[i] is not None) or (weights is not None and weights[i] is not None)):
            raise ConfigError(f"item {i}: give a user id, mixture weights or an aggregate, not more than one")
    return aggs


def _weights_of(state, n: int, user_ids, weights, aggs) -> torch.Tensor:
    """Mixture weights (n, K) of the items scored for a user or weights; rows of aggregate items are unused."""
    if aggs is None:
        return state.item_weights(n, user_ids, weights)
    w = torch.ones(n, state.net.k, device=state.device)
    plain = [i for i in range(n) if aggs[i] is None]
    if plain:
        w[plain] = state.item_weights(len(plain), None if user_ids is None else [user_ids[i] for i in plain],
                                      None if weights is None else [weights[i] for i in plain])
    return w
