"""The reward engine behind `palrm serve`: one model, one model thread, a micro-batcher, the user store.

Every use of the model (reward batches, adapts, reading a user's weights, resolving "population"
weights) runs on ONE worker thread, so the in-memory user table is never read while an adapt is
changing it, and adapts of the same user run one after another in arrival order (last write wins,
in memory and in SQLite alike). The engine works on the model's `palrm.core.FittedModel`.

Adapting a user re-fits on ALL the pairs the service received for them (the stored ones and the
new ones), so adapting twice equals adapting once on the union: a new user from the population, a
user of the trained model from their trained weights.
An adapt whose store write fails is rolled back (a new user's row is removed again).

Micro-batching: reward requests put their items on a queue; a single asyncio task takes queued
requests in arrival order while the batch stays within `max_batch_items` items and
`max_batch_tokens` estimated tokens (`palrm.serve.embeddings.estimate_tokens`; a request larger than
the cap runs alone), and scores them in one call: every distinct text embedded once (prompts through
an LRU cache, see `palrm.serve.embeddings`), then one `core.score_vectors`. Capping by tokens bounds
the time of a batch, so a request arriving while a batch runs waits for at most that one batch (when
the queue ahead of it fits in one batch). The queue is bounded by `queue_items`: beyond it requests
are refused (HTTP 503) instead of waiting without limit.

Encoder backends: `torch` (the model's own encoder) or `onnx` / `onnx-int8` (`palrm.encoders.onnx`,
exported from the same sentence-transformers weights; CPU only).

Many replicas, one store: with a PostgreSQL store (`store.shared`), a task polls the store's change
sequence every `poll_interval` seconds and applies users written by other replicas, so a user
adapted anywhere is served everywhere within one poll. The poll's query runs on its own store
thread, not on the model thread: a poll that finds nothing new (every poll while no replica
adapts) never delays a reward batch; only the rows it found are applied on the model thread, and a
row older than the version this replica already serves (its own adapt committed since the query)
is skipped.

Normalised rewards (`normalize`, per server or per request): (r - mean) / std with the model's
reference statistics (`palrm.normalization`); /v1/compare always uses raw rewards.
"""

from __future__ import annotations

import asyncio
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from palrm import core
from palrm.data.pool import read_pool
from palrm.errors import ConfigError, PalrmError, UnknownUserError
from palrm.normalization import NO_STATS_HINT
from palrm.serve.embeddings import BatchEmbedder, estimate_tokens
from palrm.serve.postgres import PostgresUserStore, is_postgres_url
from palrm.serve.store import StoredUser, UserStore, default_store_path, model_fingerprint
from palrm.training.posterior import UserPosterior

logger = logging.getLogger(__name__)

__all__ = ["ServeSettings", "RewardEngine", "QueueFull", "Item", "UnknownPool"]


@dataclass
class ServeSettings:
    """Limits and options of the service (CLI flags of `palrm serve`)."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    store_path: Path | None = None
    store_url: str | None = None  # postgresql://... (many replicas); else the SQLite file store_path
    max_body_bytes: int = 1 << 20
    max_items: int = 256
    max_pairs: int = 1000
    max_text_chars: int = 20_000
    queue_items: int = 8192
    max_batch_items: int = 1024
    max_batch_tokens: int = 8192
    prompt_cache_size: int = 4096
    cache_completions: bool = False
    encoder_backend: str = "torch"  # torch | onnx | onnx-int8
    normalize: bool = False
    poll_interval: float = 0.2
    max_pending_adapts: int = 256
    batching: bool = True
    default_user: str | None = None
    default_weights: Any = None
    default_aggregate: str | None = None  # /get_reward queries without a label: this population aggregate
    embedding_cache: bool = False
    device: str | None = None
    query_pools: dict = field(default_factory=dict)  # pool id -> pair file (POST /v1/users/{id}/next-query "pool_id")
    extra: dict = field(default_factory=dict)


class QueueFull(Exception):
    """The bounded queue is full: the client should retry later (HTTP 503)."""


@dataclass
class Item:
    """One item to score: a known user (weights None), explicit weights (K floats), or a population
    aggregate (a canonical spec of palrm.aggregate; user and weights None)."""

    user_id: str | None
    weights: list[float] | str | None
    prompt: str
    response: str
    aggregate: str | None = None
    std: bool = False  # also the reward's std under the user's weight posterior
    risk: str | None = None  # "mean" or "quantile:q" (palrm.training.posterior.parse_risk)


ENCODER_BACKENDS = ("torch", "onnx", "onnx-int8")


def job_tokens(items: list[Item]) -> int:
    """Estimated tokens a request adds to a batch: its distinct texts."""
    return sum(estimate_tokens(t) for t in {*(it.prompt for it in items if it.prompt), *(it.response for it in items)})


class RewardEngine:
    def __init__(self, model_dir: str | Path, settings: ServeSettings) -> None:
        from palrm import PALRewardModel

        self.model_dir = Path(model_dir)
        self.settings = settings
        self.model = PALRewardModel.load(self.model_dir, device=settings.device)
        self.state: core.FittedModel = self.model.fitted_
        if self.state.precomputed:
            raise PalrmError(f"{model_dir} was trained on precomputed embeddings; the service scores texts, so it needs a "
                             "model trained on texts")
        cfg = self.state.config
        cfg.encoder.use_cache = settings.embedding_cache  # completions are unique: no unbounded disk cache by default
        cfg.train.progress = False
        self.has_users = self.state.net.has_users
        self.k = self.state.net.k
        self.trained_users = set(self.state.users)
        if settings.encoder_backend not in ENCODER_BACKENDS:
            raise ConfigError(f"--encoder-backend {settings.encoder_backend!r}: expected one of {', '.join(ENCODER_BACKENDS)}")
        if settings.normalize and self.state.reward_stats is None:
            raise ConfigError(f"--normalize: {NO_STATS_HINT}")
        self._seq = 0  # last change of a shared store applied here
        self._applied: dict[str, tuple[int, int]] = {}  # user -> (version, n_pairs) of the row served here
        self.n_params = self.k + self.state.net.offset_dim  # per stored user: K logits [+ r offset]
        self.store = self._open_store()  # an unreachable store fails here, at start-up
        n = self._apply_store()
        self.pools = {name: read_pool(path) for name, path in settings.query_pools.items()}
        logger.info("loaded %s (%d trained users, %d from the store %s)", self.model_dir, len(self.trained_users), n,
                    self.store.path)
        if settings.default_aggregate is not None:  # a bad spec fails at start-up, not on the first request
            settings.default_aggregate = self.resolve_aggregate(settings.default_aggregate)
        self.embedder = BatchEmbedder(self._text_encoder(), self.state.input_dim,
                                      prompt_cache_size=settings.prompt_cache_size,
                                      cache_completions=settings.cache_completions)
        warm = self.embedder.encode(["palrm warm-up"])  # load the encoder now, not on the first request
        if warm.shape[1] != self.state.input_dim:
            raise ConfigError(f"the {settings.encoder_backend} encoder gives {warm.shape[1]}-d vectors; this model "
                              f"expects {self.state.input_dim}")
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="palrm-model")
        # a shared store's change polls query here, so the model thread only sees polls that found rows
        self._store_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="palrm-store")
        self._queue: list[tuple[list[Item], asyncio.Future, int]] = []  # (items, future, estimated tokens)
        self._queued_items = 0
        self._pending_adapts = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._poller: asyncio.Task | None = None
        self.batches = 0
        self.batched_items = 0

    def _open_store(self):
        s, fingerprint = self.settings, model_fingerprint(self.model_dir)
        if s.store_url:
            if not is_postgres_url(s.store_url):
                raise ConfigError(f"--store {s.store_url!r}: a store URL must start with postgresql:// (or give a file path)")
            return PostgresUserStore(s.store_url, fingerprint=fingerprint, k=self.n_params, poll_interval=s.poll_interval)
        store_path = Path(s.store_path) if s.store_path else default_store_path(self.model_dir)
        if store_path.resolve().parent == self.model_dir.resolve():
            raise ConfigError(f"--store {store_path}: the user store must not live inside the model directory "
                              "(the server never writes there); put it beside it")
        return UserStore(store_path, fingerprint=fingerprint, k=self.n_params)

    def _text_encoder(self):
        """`texts -> (T, D)` of the chosen backend (the embedding disk cache only with --embedding-cache)."""
        backend, store = self.settings.encoder_backend, self.settings.embedding_cache
        if backend == "torch":
            return core.text_embedder(self.state, store=store)
        from palrm.encoders.onnx import OnnxEncoder

        if str(self.state.device).startswith("cuda"):
            raise ConfigError(f"--encoder-backend {backend} runs on the CPU (ONNX Runtime's CPU provider); with "
                              "--device cuda use the torch backend")
        onnx = OnnxEncoder(self.state.embedder.encoder, quantize="int8" if backend == "onnx-int8" else None)
        embedder = core.Embedder(self.state.config.encoder, encoder=onnx, device="cpu")
        return lambda texts: embedder.embed(texts, store=store)

    # ------------------------------------------------------------------ users (model thread only)
    def _apply_store(self) -> int:
        """Put the store's users into the model's user table: one growth of the table for all of them."""
        self._trained_logits: dict[str, torch.Tensor] = {}  # trained users' weights before the service adapted them
        if not self.has_users:
            return 0
        self._seq = 0
        if self.store.shared:
            rows, self._seq = self.store.changes_since(0)
        else:
            rows = self.store.all()
        for row in rows:
            if len(row.logits) != self.n_params:
                raise ConfigError(f"user store {self.store.path}: user {row.user_id!r} has {len(row.logits)} weights, "
                                  f"the model has {self.n_params} per user (K={self.k})")
        self._trained_logits = {r.user_id: self.state.user_logits(r.user_id) for r in rows if r.user_id in self.trained_users}
        if rows:
            self.state.set_user_logits([r.user_id for r in rows], torch.tensor([r.logits for r in rows], dtype=torch.float32))
        self.state.posteriors.update({r.user_id: UserPosterior.from_dict(r.posterior) for r in rows if r.posterior is not None})
        self._applied = {r.user_id: (r.version, r.n_pairs) for r in rows}
        return len(rows)

    def apply_changes_sync(self, rows: list[StoredUser]) -> int:
        """Apply users that other replicas wrote (rows of `store.changes_since`, read off the model thread)
        on the model thread; returns how many. A row older than the one served here is skipped: this
        replica adapted the user after the rows were read."""
        rows = [r for r in rows if len(r.logits) == self.n_params and r.version > self._applied.get(r.user_id, (0, 0))[0]]
        if not rows or not self.has_users:
            return 0
        for r in rows:  # remember a trained user's own weights before another replica's adapt replaces them
            if r.user_id in self.trained_users and r.user_id not in self._trained_logits:
                self._trained_logits[r.user_id] = self.state.user_logits(r.user_id)
        self.state.set_user_logits([r.user_id for r in rows], torch.tensor([r.logits for r in rows], dtype=torch.float32))
        self._applied.update({r.user_id: (r.version, r.n_pairs) for r in rows})
        self.state.posteriors.update({r.user_id: UserPosterior.from_dict(r.posterior) for r in rows if r.posterior is not None})
        return len(rows)

    def user_info_sync(self, user_id: str) -> dict:
        state = self.state
        if not self.has_users:
            raise ConfigError("this model is the BTL baseline: it has one reward for everybody and no per-user weights")
        if user_id not in state.user_index:
            raise unknown_user(user_id)
        weights = state.user_weights(user_id)
        version, n_pairs = self._applied.get(user_id, (0, 0))  # the row these weights came from
        return {"user_id": user_id, "weights": [float(x) for x in weights],
                "source": "store" if version else "model", "version": version, "n_pairs_adapted": n_pairs,
                **self._posterior_info(user_id)}

    def _posterior_info(self, user_id: str) -> dict:
        post = self.state.posteriors.get(user_id)
        if post is None:
            return {}
        return {"weights_mean": [float(x) for x in post.weights_mean], "weights_std": [float(x) for x in post.weights_std],
                "uncertainty": post.uncertainty}

    def adapt_sync(self, user_id: str, pairs: list[dict]) -> dict:
        import pandas as pd

        state = self.state
        if not self.has_users:
            raise ConfigError("this model is the BTL baseline: it has no per-user weights to adapt")
        pairs = [{"prompt": p.get("prompt") or "", "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs]
        stored = self.store.pairs(user_id)
        every = stored + pairs  # the user's pairs so far and the new ones: "add data"
        frame = pd.DataFrame([{"user_id": user_id, **p} for p in every])
        known = user_id in state.user_index
        old = state.user_logits(user_id) if known else None
        old_post = state.posteriors.get(user_id)
        trained = user_id in self.trained_users
        if trained and user_id in self._trained_logits:  # start again from the trained weights
            state.set_user_logits([user_id], self._trained_logits[user_id][None])
        try:
            new = core.adapt(state, core.as_pairs(frame, "adapt pairs"), reset=not trained)
        except Exception:
            if known:
                state.set_user_logits([user_id], old[None])
                self._restore_posterior(user_id, old_post)
            raise
        logits = state.user_logits(user_id)
        weights = state.user_weights(user_id)
        post = state.posteriors.get(user_id)
        try:
            version = self.store.put(user_id, [float(x) for x in logits], [float(x) for x in weights], pairs,
                                     posterior=None if post is None else post.to_dict())
            self._applied[user_id] = (version, len(every))
            if trained and user_id not in self._trained_logits:
                self._trained_logits[user_id] = old
        except Exception:
            logger.exception("could not persist user %r; the adapt is rolled back", user_id)
            if new:
                state.remove_last_users(new)
            else:
                state.set_user_logits([user_id], old[None])
                self._restore_posterior(user_id, old_post)
            raise
        return {"user_id": user_id, "weights": [float(x) for x in weights], "version": version, "n_pairs": len(every),
                **self._posterior_info(user_id)}

    def _restore_posterior(self, user_id: str, post) -> None:
        if post is None:
            self.state.posteriors.pop(user_id, None)
        else:
            self.state.posteriors[user_id] = post

    def score_std_sync(self, items: list[Item]) -> tuple[list[float], list[float]]:
        """Rewards and their posterior std; items grouped by risk (one reward_batch call per group)."""
        values, stds = [0.0] * len(items), [0.0] * len(items)
        agg = [i for i, it in enumerate(items) if it.aggregate is not None]  # population aggregates: certain
        if agg:
            for i, v in zip(agg, self.score_sync([items[i] for i in agg])):
                values[i] = float(v)
        for risk in {it.risk for it in items if it.aggregate is None}:
            idx = [i for i, it in enumerate(items) if it.risk == risk and it.aggregate is None]
            sub = [items[i] for i in idx]
            w = [it.weights for it in sub]
            v, s = self.model.reward_batch([it.prompt for it in sub], [it.response for it in sub],
                                           user_ids=[it.user_id for it in sub],
                                           weights=w if any(x is not None for x in w) else None, uncertainty=True, risk=risk)
            for j, i in enumerate(idx):
                values[i], stds[i] = float(v[j]), float(s[j])
        return values, stds

    def next_query_sync(self, user_id: str, pool: list[dict] | None, pool_id: str | None, n: int) -> dict:
        """The pool pairs of highest expected information gain for `user_id` (new users start at the prior)."""
        import pandas as pd

        if not self.has_users:
            raise ConfigError("this model is the BTL baseline: it has no per-user weights, so no question tells anything")
        if pool_id is not None:
            if pool_id not in self.pools:
                names = ", ".join(sorted(self.pools)) or "none"
                raise UnknownPool(f"pool {pool_id!r} not found: this server has the pools: {names} "
                                  "(start it with --query-pool ID=FILE, or send the pairs inline as 'pool')")
            data = self.pools[pool_id]
        else:
            data = core.as_pairs(pd.DataFrame([{"user_id": "pool", "prompt": p.get("prompt") or "", "chosen": p["response_a"],
                                                "rejected": p["response_b"]} for p in pool]), "pool")
        picks = self.model.next_queries(user_id, data, n=n)
        known = user_id in self.state.user_index
        return {"user_id": user_id, "known": known, "queries": picks, **(self._posterior_info(user_id) if known else {})}

    def score_sync(self, items: list[Item]) -> np.ndarray:
        """Raw rewards (n,) of `items`: distinct texts embedded once (prompts cached), one forward per kind."""
        state = self.state
        aggs = [it.aggregate for it in items]
        plain = [i for i, a in enumerate(aggs) if a is None]
        weights = torch.ones(len(items), self.k, device=state.device)  # (n, K); rows of aggregate items unused
        if plain:
            w = [items[i].weights for i in plain]
            weights[plain] = state.item_weights(len(plain), [items[i].user_id for i in plain],
                                                w if any(x is not None for x in w) else None)
        p, x = self.embedder.embed([it.prompt for it in items], [it.response for it in items])  # (n, D) each
        dev = weights.device
        return core.score_items(state.net, weights, torch.from_numpy(p).to(dev), torch.from_numpy(x).to(dev),
                                aggs if len(plain) < len(items) else None, state.reference_stats).numpy()

    def normalized(self, rewards, normalize: bool | None) -> list[float]:
        """Rewards as the request asked: normalised when `normalize` (None: the server's --normalize)."""
        if self.settings.normalize if normalize is None else normalize:
            if self.state.reward_stats is None:
                raise ConfigError(f"normalize: {NO_STATS_HINT}")
            rewards = self.state.reward_stats.apply(rewards)
        return [float(x) for x in rewards]

    def normalized_std(self, stds, normalize: bool | None) -> list[float]:
        """Posterior stds on the scale of `normalized` (divided by the reference std when normalising)."""
        if self.settings.normalize if normalize is None else normalize:
            stds = [s / self.state.reward_stats.std for s in stds]
        return [float(x) for x in stds]

    # ------------------------------------------------------------------ request-side checks (event loop)
    def resolve(self, user_id: str | None, weights: Any) -> tuple[str | None, list[float] | None]:
        """Check whose reward an item asks for; raises UnknownUserError / ConfigError (-> 404 / 422)."""
        if weights is None and user_id is None:
            user_id, weights = self.settings.default_user, self.settings.default_weights
            if user_id is None and weights is None:
                if not self.has_users:
                    return None, None
                raise ConfigError("say whose reward: give each item a 'user_id', 'weights' (K numbers, 'population' "
                                  "or 'group:k') or an 'aggregate' ('maxmin', ...); or start the server with "
                                  "--default-user / --default-weights")
        if weights is not None:
            if user_id is not None:
                raise ConfigError("give either 'user_id' or 'weights' in an item, not both")
            if isinstance(weights, list) and len(weights) != self.k:
                raise ConfigError(f"weights: expected {self.k} numbers (K={self.k}), got {len(weights)}")
            if weights == "population":
                return None, "population"  # resolved on the model thread (it reads the user table)
            w = self.state.resolve_weights(weights)  # validates (reads only K); raises ConfigError
            return None, [float(x) for x in w.cpu()]
        if self.has_users and user_id not in self.state.user_index:
            raise unknown_user(user_id)
        return user_id, None

    def resolve_aggregate(self, spec: str) -> str:
        """The canonical form of a population aggregate spec; ConfigError (-> 422) lists the valid forms."""
        from palrm.aggregate import parse_aggregate

        canonical = str(parse_aggregate(spec))
        if self.state.reference_stats is None:
            raise ConfigError("this model has no reference statistics for aggregates (saved by an older palrm): load it, "
                              "call model.set_reference(training_pairs), save it and restart the server")
        return canonical

    # ------------------------------------------------------------------ async API
    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        if self.settings.batching:
            self._worker = asyncio.create_task(self._batch_loop())
        if self.store.shared:
            self._poller = asyncio.create_task(self._poll_loop())

    async def stop(self) -> None:
        for task in (self._worker, self._poller):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self.executor.shutdown(wait=True)
        self._store_executor.shutdown(wait=True)
        self.store.close()

    @property
    def queued_items(self) -> int:
        return self._queued_items

    async def run_model(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def score(self, items: list[Item]) -> list[float]:
        if self._queued_items + len(items) > self.settings.queue_items:
            raise QueueFull(f"the reward queue is full ({self._queued_items} items waiting, limit "
                            f"{self.settings.queue_items}); retry shortly")
        self._queued_items += len(items)
        if not self.settings.batching:
            try:
                out = await self.run_model(self.score_sync, items)
            finally:
                self._queued_items -= len(items)
            return [float(x) for x in out]
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((items, fut, job_tokens(items)))
        self._wakeup.set()
        return await fut

    async def score_with_std(self, items: list[Item]) -> tuple[list[float], list[float]]:
        """Rewards with std / risk: run on the model thread directly (not micro-batched; such requests are rare)."""
        if self._queued_items + len(items) > self.settings.queue_items:
            raise QueueFull(f"the reward queue is full ({self._queued_items} items waiting, limit "
                            f"{self.settings.queue_items}); retry shortly")
        self._queued_items += len(items)
        try:
            return await self.run_model(self.score_std_sync, items)
        finally:
            self._queued_items -= len(items)

    async def adapt(self, user_id: str, pairs: list[dict]) -> dict:
        if self._pending_adapts >= self.settings.max_pending_adapts:
            raise QueueFull(f"{self._pending_adapts} adapt requests are waiting (limit {self.settings.max_pending_adapts}); retry shortly")
        self._pending_adapts += 1
        try:
            return await self.run_model(self.adapt_sync, user_id, pairs)
        finally:
            self._pending_adapts -= 1

    async def _batch_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                jobs, n, tokens = [], 0, 0
                s = self.settings
                while self._queue and (not jobs or (n + len(self._queue[0][0]) <= s.max_batch_items
                                                    and tokens + self._queue[0][2] <= s.max_batch_tokens)):
                    items, fut, t = self._queue.pop(0)
                    jobs.append((items, fut))
                    n += len(items)
                    tokens += t
                self._queued_items -= n
                live = [(items, fut) for items, fut in jobs if not fut.done()]
                if live:
                    await self._run_jobs(live)

    async def _run_jobs(self, jobs: list[tuple[list[Item], asyncio.Future]]) -> None:
        flat = [it for items, _ in jobs for it in items]
        try:
            out = await self.run_model(self.score_sync, flat)
        except Exception as exc:  # isolate the failing request: score each job on its own
            if len(jobs) == 1:
                if not jobs[0][1].done():
                    jobs[0][1].set_exception(exc)
                return
            logger.warning("a batch of %d requests failed (%s); scoring them one by one", len(jobs), exc)
            for job in jobs:
                await self._run_jobs([job])
            return
        self.batches += 1
        self.batched_items += len(flat)
        start = 0
        for items, fut in jobs:
            part = out[start:start + len(items)]
            start += len(items)
            if not fut.done():
                fut.set_result([float(x) for x in part])


    async def poll_store(self) -> int:
        """One poll of a shared store: the query on the store thread, then the rows found (if any) applied on
        the model thread; returns how many users were applied."""
        loop = asyncio.get_running_loop()
        rows, seq = await loop.run_in_executor(self._store_executor, self.store.changes_since, self._seq)
        applied = await self.run_model(self.apply_changes_sync, rows) if rows else 0
        self._seq = seq  # polls run one after another (one poll task): nothing else moves the cursor meanwhile
        return applied

    async def _poll_loop(self) -> None:
        """Apply other replicas' writes every poll_interval seconds; a store outage is logged and retried."""
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            try:
                await self.poll_store()
            except Exception as exc:  # keep serving the users we have; the next poll catches up
                logger.warning("polling the user store %s failed: %s", self.store.path, exc)

    def health(self) -> dict:
        s = self.settings
        return {"encoder_backend": s.encoder_backend, "normalize": s.normalize,
                "store": {"kind": "postgresql" if self.store.shared else "sqlite", "location": str(self.store.path)},
                "prompt_cache": self.embedder.stats(), "batches": self.batches, "batched_items": self.batched_items,
                "max_batch_items": s.max_batch_items, "max_batch_tokens": s.max_batch_tokens}


class UnknownPool(PalrmError):
    """A next-query request named a pool the server does not have (HTTP 404)."""


def unknown_user(user_id: str) -> UnknownUserError:
    return UnknownUserError(
        f"unknown user {user_id!r}: onboard this user with POST /v1/users/{user_id}/adapt and a few "
        '{"pairs": [{"prompt": ..., "chosen": ..., "rejected": ...}]}, or score with explicit "weights" '
        "(K numbers, 'population' or 'group:k')")


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
