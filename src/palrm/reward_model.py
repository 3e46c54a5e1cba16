"""`PALRewardModel`: the one user-facing facade (scikit-learn contract).

`__init__` only stores arguments; `fit` returns self; `adapt` adds or updates users without touching
shared weights (partial_fit semantics); learned state ends in `_`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from palrm import __version__
from palrm.atomic import atomic_directory
from palrm.config import PALConfig
from palrm.data.io import check_embedding_dim, load_pairs
from palrm.data.schema import PairData
from palrm.errors import (
    ConfigError,
    DataFormatError,
    ModelFileError,
    PalrmError,
    UnknownUserError,
)
from palrm.evaluation.metrics import pair_metrics
from palrm.models import RewardNet, build_net
from palrm.training import (
    IndexedPairs,
    adapt_user_logits,
    fit_prior,
    indexed,
    predict_logits,
    train_net,
)

logger = logging.getLogger(__name__)

CONFIG_FILE, WEIGHTS_FILE, USERS_FILE = "config.json", "model.safetensors", "users.json"
BACKBONE_DIR = "backbone"  # fine-tuned models only: save_pretrained of the backbone + tokenizer
FORMAT_VERSION = 1

PairsLike = PairData | pd.DataFrame | str | os.PathLike


class PALRewardModel:
    """A personalized reward model (PAL-A, PAL-B) or the BTL baseline on foundation-model embeddings.

    Args:
        config: a full `PALConfig` (defaults when None).
        **overrides: dotted or plain field overrides, e.g. `kind="pal-a"`, `k=4`, `epochs=10`,
            `encoder="hashing"`, or `{"model.k": 4}` style keys.

    Example:
        >>> model = PALRewardModel(kind="pal-b", k=3).fit(train, val)
        >>> model.adapt(new_user_pairs)
        >>> model.reward("alice", "Summarise this post", ["short answer", "long answer"])
    """

    def __init__(self, config: PALConfig | None = None, **overrides: Any) -> None:
        self.config = config
        self.overrides = overrides

    def _encoder_object(self):
        """An Encoder instance passed as `encoder=` (shared between models to load weights once)."""
        enc = self.overrides.get("encoder")
        return None if enc is None or isinstance(enc, str) else enc

    # ------------------------------------------------------------------ configuration
    def _config(self) -> PALConfig:
        base = self.config or PALConfig()
        overrides = dict(self.overrides)
        if self._encoder_object() is not None:
            overrides["encoder"] = getattr(self._encoder_object(), "spec", "custom")
        if not overrides:
            return PALConfig.from_dict(base.to_dict())
        return base.updated(overrides)

    @property
    def config_(self) -> PALConfig:
        return self._cfg

    # ------------------------------------------------------------------ data and embeddings
    def _as_pairs(self, pairs: PairsLike, what: str) -> PairData:
        if isinstance(pairs, PairData):
            return pairs
        if isinstance(pairs, (pd.DataFrame, str, os.PathLike)):
            return load_pairs(pairs)
        raise DataFormatError(f"{what}: expected PairData, a pandas DataFrame or a file path, got {type(pairs).__name__}")

    def _encoder(self):
        if getattr(self, "encoder_", None) is None:
            from palrm.encoders import make_encoder

            self.encoder_ = self._encoder_object() or make_encoder(self._cfg.encoder.spec)
        return self.encoder_

    def _embed_texts(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        from palrm.encoders import embed_texts

        enc = self._cfg.encoder
        vectors = embed_texts(list(texts), self._encoder(), cache_dir=enc.cache_dir, use_cache=enc.use_cache,
                              batch_size=enc.batch_size, progress=progress)
        return np.asarray(vectors, dtype=np.float32)

    def _table(self, data: PairData) -> torch.Tensor:
        """(len(texts) + 1, D) embedding table of `data`; the last row (zeros) stands for "no prompt"."""
        if data.embeddings is not None:
            if getattr(self, "input_dim_", None) is not None:
                check_embedding_dim(data, self.input_dim_, "this model")
            vectors = np.asarray(data.embeddings, dtype=np.float32)
        else:
            if getattr(self, "precomputed_", False):
                raise DataFormatError(f"{data.source}: this model was trained on precomputed embeddings, these pairs have "
                                      "texts; pass pairs with embeddings (CLI: --embeddings FILE; Python: load_pairs(..., embeddings=FILE))")
            vectors = self._embed_texts(data.texts, progress=self._cfg.train.progress)
            if getattr(self, "input_dim_", None) is not None:
                check_embedding_dim(vectors, self.input_dim_, "this model")
        table = np.concatenate([vectors, np.zeros((1, vectors.shape[1]), dtype=np.float32)], 0)
        return torch.from_numpy(table).to(self._cfg.train.device)

    def _indexed(self, data: PairData, user_rows: np.ndarray, n_texts: int) -> IndexedPairs:
        return indexed(user_rows, data.prompt, data.chosen, data.rejected, no_prompt_row=n_texts).to(self._cfg.train.device)

    def _known_mask(self, data: PairData) -> tuple[np.ndarray, np.ndarray]:
        """(known mask per pair, model row per pair (-1 where unknown))."""
        rows_of_users = np.array([self.user_index_.get(u, -1) for u in data.user_ids], dtype=np.int64)
        rows = rows_of_users[data.user] if len(data) else np.empty(0, dtype=np.int64)
        if not self.net_.has_users:  # BTL: one reward for everybody, every user is "known"
            rows = np.zeros_like(rows)
        return rows >= 0, rows

    # ------------------------------------------------------------------ fit
    def fit(self, train: PairsLike, val: PairsLike | None = None, *, log_path: str | os.PathLike | None = None,
            checkpoint_dir: str | os.PathLike | None = None, resume: bool = False) -> "PALRewardModel":
        """Train on every user of `train`; early stopping on `val` loss when given. Returns self.

        Fine-tuning (`finetune.enabled`), gradient accumulation, runs under torchrun and runs with a
        `checkpoint_dir` (resumable checkpoints; `resume=True` continues one) take the streaming
        loop (palrm.training.scaled); everything else the in-memory `train_net`.
        """
        from palrm.training.scaled import fit_scaled, needs_scaled_fit

        self.backbone_ = None
        if needs_scaled_fit(self._config(), checkpoint_dir):
            return fit_scaled(self, train, val, log_path=log_path, checkpoint_dir=checkpoint_dir, resume=resume)
        self._cfg = cfg = self._config()
        train, val = self._begin_fit(train, val)
        table, train_idx, val_part = self._init_net(train, val)
        val_idx = None
        if val_part is not None:
            val_table, val_idx = val_part
            if val_table is not table:  # one table for both: the validation rows after the training rows
                offset = table.shape[0]
                table = torch.cat([table, val_table], 0)
                val_idx = IndexedPairs(val_idx.user, val_idx.prompt + offset, val_idx.chosen + offset, val_idx.rejected + offset)
        self.history_ = train_net(self.net_, table, train_idx, val_idx, cfg.train, log_path=log_path)
        return self

    def _begin_fit(self, train: PairsLike, val: PairsLike | None) -> tuple[PairData, PairData | None]:
        """Coerce the data and reset the learned state every fit path shares (users = train's users)."""
        self.encoder_ = None
        train = self._as_pairs(train, "train")
        if len(train) == 0:
            raise DataFormatError(f"{train.source}: no training pairs")
        val = self._as_pairs(val, "val") if val is not None else None
        if val is not None and len(val) == 0:
            val = None
        self.input_dim_ = None
        self.precomputed_ = train.embeddings is not None
        self.users_ = train.users_present()
        self.user_index_ = {u: i for i, u in enumerate(self.users_)}
        return train, val

    def _init_net(self, train: PairData, val: PairData | None):
        """Embed, build the seeded network and index the pairs of a frozen-embedding fit.

        Returns (table, train pairs, (validation table, validation pairs) or None); the validation
        table is `table` itself when both share their texts. Validation pairs of users absent from
        `train` are left out (with a warning): early stopping must not score them with a default.
        """
        cfg = self._cfg
        table = self._table(train)
        self.input_dim_ = int(table.shape[1])
        torch.manual_seed(cfg.train.seed)
        self.net_: RewardNet = build_net(cfg.model, self.input_dim_, len(self.users_)).to(cfg.train.device)
        _, rows = self._known_mask(train)
        train_idx = self._indexed(train, rows, len(train.texts))
        if val is None:
            return table, train_idx, None
        known, vrows = self._known_mask(val)
        if not known.all():
            logger.warning("validation: %d pairs of %d users not in the training data are left out of early stopping",
                           int((~known).sum()), len(set(val.pair_user_ids[~known])))
        val_sub = val.select(known)
        shared = val.texts is train.texts and val.embeddings is train.embeddings
        val_table = table if shared else self._table(val_sub)
        return table, train_idx, (val_table, self._indexed(val_sub, vrows[known], val_table.shape[0] - 1))

    def fit_memmap(self, train_dir: str | os.PathLike, val_dir: str | os.PathLike | None = None, *,
                   log_path: str | os.PathLike | None = None, checkpoint_dir: str | os.PathLike | None = None,
                   resume: bool = False) -> "PALRewardModel":
        """Train on a memory-mapped pair directory (palrm.data.memmap) larger than memory. Returns self.

        Training streams over the arrays batch by batch; the model then holds precomputed-embedding
        inputs (score with `reward_embeddings`), its users named by the directory's users.json.
        """
        from palrm.data.memmap import open_memmap_pairs
        from palrm.training import train_memmap

        self._cfg = self._config()
        self.encoder_, self.backbone_ = None, None
        data = open_memmap_pairs(train_dir)
        if val_dir is not None and open_memmap_pairs(val_dir).user_ids != data.user_ids:
            raise DataFormatError(f"{val_dir}: its users.json differs from {train_dir}'s; a validation directory must "
                                  "index the same user table")
        self.net_, self.history_ = train_memmap(train_dir, self._cfg, val_dir=val_dir, log_path=log_path,
                                                checkpoint_dir=checkpoint_dir, resume=resume)
        self.input_dim_ = int(data.embeddings.shape[1])
        self.precomputed_ = True
        self.users_ = list(data.user_ids)
        self.user_index_ = {u: i for i, u in enumerate(self.users_)}
        return self

    def _check_fitted(self) -> None:
        if getattr(self, "net_", None) is None:
            raise PalrmError("this PALRewardModel is not fitted yet: call fit(train) or PALRewardModel.load(dir) first")

    # ------------------------------------------------------------------ users
    @property
    def k(self) -> int:
        self._check_fitted()
        return self.net_.k

    def user_weights(self, user_id: str) -> np.ndarray:
        """The user's mixture weights w_u (K,) on the simplex."""
        self._check_fitted()
        row = self._user_row(user_id)
        with torch.no_grad():
            return self.net_.user_weights(torch.tensor([row], device=self._cfg.train.device))[0].cpu().numpy()

    def population_weights(self) -> np.ndarray:
        """Mean mixture weights over all known users (K,): the population's reward."""
        self._check_fitted()
        with torch.no_grad():
            return torch.softmax(self.net_.user_logits.weight, -1).mean(0).cpu().numpy()

    def _user_row(self, user_id: str) -> int:
        try:
            return self.user_index_[str(user_id)]
        except KeyError:
            raise UnknownUserError(
                f"unknown user {user_id!r}: the model has weights for {len(self.users_)} users. Onboard the user "
                "with model.adapt(pairs_of_that_user) (CLI: palrm adapt), or pass explicit mixture weights "
                "(weights=[...] of length K, or weights='population')"
            ) from None

    def _resolve_weights(self, weights: Any) -> torch.Tensor:
        k = self.net_.k
        if isinstance(weights, str):
            if weights == "population":
                w = self.population_weights()
            elif weights.startswith("group:"):
                g = int(weights.split(":", 1)[1])
                if not 0 <= g < k:
                    raise ConfigError(f"weights={weights!r}: group must be in 0..{k - 1}")
                w = np.eye(k)[g]
            else:
                raise ConfigError(f"weights={weights!r}: expected 'population', 'group:N' or a list of {k} numbers")
        else:
            w = np.asarray(weights, dtype=np.float64).reshape(-1)
            if w.shape != (k,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
                raise ConfigError(f"weights={list(np.round(w, 4))}: expected {k} non-negative numbers with a positive sum")
            w = w / w.sum()
        return torch.as_tensor(w, dtype=torch.float32, device=self._cfg.train.device)

    # ------------------------------------------------------------------ adapt
    def _adapt_logits(self, pairs: PairData, table: torch.Tensor, users: list[str], init_from_current: bool) -> torch.Tensor:
        cfg = self._cfg.adapt
        local = {u: i for i, u in enumerate(users)}
        rows = np.array([local[u] for u in pairs.user_ids], dtype=np.int64)[pairs.user]
        idx = self._indexed(pairs, rows, table.shape[0] - 1)
        all_logits = self.net_.user_logits.weight.detach()
        pop = all_logits.mean(0) if cfg.init == "population" else torch.zeros(self.net_.k)
        init = pop.expand(len(users), -1).clone()
        if init_from_current:
            for u, i in local.items():
                if u in self.user_index_:
                    init[i] = all_logits[self.user_index_[u]]
        prior = fit_prior(cfg.prior, all_logits[: len(self.users_)])
        return adapt_user_logits(self.net_, table, idx, len(users), cfg, init.to(table.device), prior)

    def adapt(self, pairs: PairsLike, *, reset: bool = False) -> "PALRewardModel":
        """Learn (only) the K weights of every user in `pairs`; shared weights stay bit-identical.

        New users are added; known users are re-adapted on these pairs, starting from their current
        weights (or from the population when `reset`). Returns self.
        """
        self._check_fitted()
        pairs = self._as_pairs(pairs, "adapt pairs")
        if len(pairs) == 0:
            raise DataFormatError(f"{pairs.source}: no pairs to adapt on")
        if not self.net_.has_users:
            logger.warning("adapt: the BTL baseline has no per-user parameters; nothing to learn")
            return self
        users = pairs.users_present()
        pairs = pairs.compact_users()
        logits = self._adapt_logits(pairs, self._table(pairs), users, init_from_current=not reset)
        new = [u for u in users if u not in self.user_index_]
        with torch.no_grad():
            self.net_.grow_users(len(new))
            for u in new:
                self.user_index_[u] = len(self.users_)
                self.users_.append(u)
            rows = torch.tensor([self.user_index_[u] for u in users], device=logits.device)
            self.net_.user_logits.weight[rows] = logits
        logger.info("adapted %d users (%d new) on %d pairs", len(users), len(new), len(pairs))
        return self

    # ------------------------------------------------------------------ evaluate
    def predict_logits(self, pairs: PairsLike) -> np.ndarray:
        """Preference logits (n,) of the chosen response for pairs of known users (unknown users: NaN)."""
        self._check_fitted()
        pairs = self._as_pairs(pairs, "pairs")
        known, rows = self._known_mask(pairs)
        out = np.full(len(pairs), np.nan)
        if known.any():
            sub = pairs.select(known)
            table = self._table(sub)
            out[known] = predict_logits(self.net_, table, self._indexed(sub, rows[known], table.shape[0] - 1)).cpu().numpy()
        return out

    def evaluate(self, pairs: PairsLike) -> dict:
        """Accuracy, log-loss and per-user accuracy on pairs of known users.

        Pairs of users the model does not know are never scored with a default: they are counted
        apart under "unknown_users" (and a warning is logged).
        """
        pairs = self._as_pairs(pairs, "evaluation pairs")
        logits = self.predict_logits(pairs)
        known = ~np.isnan(logits)
        metrics = pair_metrics(logits[known], pairs.pair_user_ids[known])
        unknown_ids = sorted(set(pairs.pair_user_ids[~known]))
        metrics["unknown_users"] = {"n_pairs": int((~known).sum()), "n_users": len(unknown_ids), "user_ids": unknown_ids[:20]}
        if unknown_ids:
            logger.warning("evaluate: %d pairs of %d unknown users were not scored (adapt them first): %s",
                           int((~known).sum()), len(unknown_ids), ", ".join(unknown_ids[:5]))
        return metrics

    def few_shot_curve(self, shots: PairsLike, test: PairsLike, ns: Sequence[int] = (1, 2, 5, 10, 20, 50)) -> dict:
        """Accuracy on unseen users' held-out `test` pairs after adapting on their first n `shots`.

        The model is not modified (the adapted weights are temporary). `shots` holds each user's
        adaptation pool in order (see `palrm.data.few_shot_split`); the n-shot sets are nested. A
        user with fewer than n pool pairs uses all of them. Returns {str(n): metrics}.
        """
        from palrm.data.splits import take_shots

        self._check_fitted()
        shots, test = self._as_pairs(shots, "shots"), self._as_pairs(test, "test")
        test = test.compact_users()
        users = test.user_ids
        test_table, shots_table = self._table(test), self._table(shots)
        idx = self._indexed(test, test.user, test_table.shape[0] - 1)
        curve = {}
        for n in ns:
            theta = torch.zeros(len(users), self.net_.k, device=test_table.device)
            if self.net_.has_users:
                theta[:] = self.net_.user_logits.weight.detach().mean(0)  # users without shots: the population
                sub = take_shots(shots, n).for_users(users).compact_users()
                if len(sub):
                    learned = self._adapt_logits(sub, shots_table, sub.user_ids, init_from_current=False)
                    position = {u: i for i, u in enumerate(users)}
                    rows = torch.tensor([position[u] for u in sub.user_ids], device=theta.device)
                    theta[rows] = learned
            with torch.no_grad():
                self.net_.eval()
                w = self.net_.weights_from_logits(theta)[idx.user]  # (n_test, K)
                z = self.net_.pair_logits(w, test_table[idx.prompt], test_table[idx.chosen], test_table[idx.rejected])
            metrics = pair_metrics(z.cpu().numpy(), test.pair_user_ids)
            metrics.pop("per_user")
            curve[str(n)] = metrics
        return curve

    # ------------------------------------------------------------------ rewards
    def reward(self, user_id: str | None, prompt: str, responses: Sequence[str], *, weights: Any = None) -> list[float]:
        """Scalar rewards r_u(prompt, response) for each response.

        `user_id` must be known (else UnknownUserError), unless `weights` is given: a list of K mixture
        weights, "population" (the mean user) or "group:k" (prototype k).
        """
        self._check_fitted()
        if isinstance(responses, str):
            responses = [responses]
        if self.precomputed_:
            raise PalrmError("this model was trained on precomputed embeddings, not texts: call "
                             "reward_embeddings(user_id, prompt_vector, response_vectors) instead")
        vecs = self._embed_texts([prompt or "", *responses])  # (1 + R, D)
        prompt_vec = vecs[0] if prompt else np.zeros_like(vecs[0])
        return self.reward_embeddings(user_id, prompt_vec, vecs[1:], weights=weights)

    def reward_batch(
        self,
        prompts: Sequence[str | None],
        responses: Sequence[str],
        *,
        user_ids: Sequence[str | None] | None = None,
        weights: Sequence[Any] | None = None,
    ) -> np.ndarray:
        """Rewards of many (user, prompt, response) items in one forward pass: (n,) float array.

        Item i is scored for `weights[i]` when given (K numbers, "population" or "group:k"), else for
        the known user `user_ids[i]` (UnknownUserError names the first unknown one). Every distinct
        text is embedded once.
        """
        self._check_fitted()
        n = len(responses)
        if len(prompts) != n or (user_ids is not None and len(user_ids) != n) or (weights is not None and len(weights) != n):
            raise ConfigError("reward_batch: prompts, responses, user_ids and weights must have the same length")
        if self.precomputed_:
            raise PalrmError("this model was trained on precomputed embeddings, not texts: use reward_embeddings()")
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        texts = sorted({t for t in [*(p or "" for p in prompts), *responses]})
        pos = {t: i for i, t in enumerate(texts)}
        table = torch.from_numpy(self._embed_texts(texts)).to(self._cfg.train.device)  # (T, D)
        dev = table.device
        w = self._item_weights(n, user_ids, weights)  # (n, K)
        p_idx = torch.tensor([pos[p] if p else -1 for p in prompts], device=dev)
        x_idx = torch.tensor([pos[x] for x in responses], device=dev)
        with torch.no_grad():
            p_vec = torch.where((p_idx >= 0)[:, None], table[p_idx.clamp(min=0)], torch.zeros((), device=dev))
            return self.net_.score(w, p_vec, table[x_idx]).cpu().numpy()

    def _item_weights(self, n: int, user_ids: Sequence[str | None] | None, weights: Sequence[Any] | None) -> torch.Tensor:
        """Mixture weights (n, K) per item: `weights[i]` when given, else the known user `user_ids[i]`'s.

        Puts the network in eval mode, so partition users are scored with their argmax prototype.
        """
        self.net_.eval()
        dev = self._cfg.train.device
        w = torch.ones(n, self.net_.k, device=dev)  # BTL ignores the weights
        explicit = [i for i in range(n) if weights is not None and weights[i] is not None]
        for i in explicit:
            w[i] = self._resolve_weights(weights[i])
        by_user = sorted(set(range(n)) - set(explicit)) if self.net_.has_users else []
        if by_user:
            rows = [self._user_row(None if user_ids is None else user_ids[i]) for i in by_user]
            with torch.no_grad():  # one lookup for all items scored for known users
                w[by_user] = self.net_.user_weights(torch.tensor(rows, device=dev))
        return w

    def reward_embeddings(self, user_id: str | None, prompt: np.ndarray | None, responses: np.ndarray, *, weights: Any = None) -> list[float]:
        """Rewards from precomputed vectors: prompt (D,) or None, responses (R, D)."""
        self._check_fitted()
        responses = np.atleast_2d(np.asarray(responses, dtype=np.float32))
        check_embedding_dim(responses, self.input_dim_, "this model")
        prompt = np.zeros(self.input_dim_, np.float32) if prompt is None else np.asarray(prompt, np.float32).reshape(-1)
        dev = self._cfg.train.device
        r = len(responses)
        w = self._item_weights(1, [user_id], None if weights is None else [weights]).expand(r, -1)  # (R, K)
        with torch.no_grad():
            scores = self.net_.score(w, torch.from_numpy(prompt).to(dev).expand(r, -1), torch.from_numpy(responses).to(dev))
        return [float(s) for s in scores.cpu()]

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> Path:
        """Write config.json, model.safetensors and users.json; atomic: a failed save leaves any
        earlier model in `directory` intact."""
        self._check_fitted()
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            meta = {
                "format_version": FORMAT_VERSION,
                "palrm_version": __version__,
                "kind": self.net_.kind,
                "input_dim": self.input_dim_,
                "num_users": len(self.users_),
                "inputs": "precomputed" if self.precomputed_ else "text",
                "encoder_identity": None if self.precomputed_ else getattr(self._encoder(), "identity", None),
                "config": self._cfg.to_dict(),
            }
            if getattr(self, "backbone_", None) is not None:  # fine-tuned: the backbone travels inside
                self.backbone_.save(tmp / BACKBONE_DIR)
                meta["backbone"] = self.backbone_.describe()
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
            state = {k: v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "palrm": __version__})
            (tmp / USERS_FILE).write_text(json.dumps(self.users_))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, *, device: str | None = None) -> "PALRewardModel":
        """Load a model written by `save` (safetensors + JSON only; no pickle is ever read)."""
        directory = Path(directory)
        missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE, USERS_FILE) if not (directory / f).is_file()]
        if missing:
            raise ModelFileError(f"{directory} is not a palrm model directory: missing {', '.join(missing)}. "
                                 "Pass the directory written by PALRewardModel.save / palrm train (RUN_DIR/model).")
        try:
            meta = json.loads((directory / CONFIG_FILE).read_text())
            users = json.loads((directory / USERS_FILE).read_text())
            config = PALConfig.from_dict(meta["config"], where=str(directory / CONFIG_FILE))
        except (json.JSONDecodeError, KeyError) as exc:
            raise ModelFileError(f"{directory / CONFIG_FILE} is damaged ({exc}); re-save the model") from None
        if device:
            config.train.device = device
        model = cls(config)
        model._cfg = config
        model.encoder_ = None
        model.input_dim_ = int(meta["input_dim"])
        model.precomputed_ = meta.get("inputs") == "precomputed"
        model.users_ = [str(u) for u in users]
        model.user_index_ = {u: i for i, u in enumerate(model.users_)}
        model.history_ = []
        net = build_net(config.model, model.input_dim_, max(len(users), 1) if config.model.kind != "btl" else int(meta["num_users"]))
        try:
            state = load_file(str(directory / WEIGHTS_FILE))
            net.load_state_dict(state, strict=True)
        except Exception as exc:  # safetensors raises its own error types
            raise ModelFileError(f"{directory / WEIGHTS_FILE} could not be read ({exc}); re-save the model") from None
        model.net_ = net.to(config.train.device).eval()
        model.backbone_ = None
        if meta.get("backbone"):  # a fine-tuned backbone saved inside the model directory
            from palrm.finetune import BackboneEncoder

            model.backbone_ = BackboneEncoder.load(directory / meta["backbone"].get("path", BACKBONE_DIR),
                                                   device=config.train.device, bf16=config.finetune.bf16)
            model.encoder_ = model.backbone_
        return model

    def __repr__(self) -> str:
        fitted = getattr(self, "net_", None) is not None
        cfg = self._cfg if fitted else self._config()
        users = f", users={len(self.users_)}" if fitted else ""
        return f"PALRewardModel(kind={cfg.model.kind!r}, k={cfg.model.k}, encoder={cfg.encoder.spec!r}{users}, fitted={fitted})"

