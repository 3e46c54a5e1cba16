"""`fit`: train a PAL model on every user of the training pairs, one function for every path.

    frozen, in memory       embed the texts once, `train_net` over the (T + 1, D) table
    streaming               fine-tuning, gradient accumulation, torchrun, checkpoints: `train_stream`
                            over a `TableSource` (frozen embeddings; under torchrun every rank embeds
                            every N-th distinct text into the shared on-disk cache, rank 0 merges the
                            shards, every rank then reads the full table) or over a `TextPairSource`
                            through `FineTuneModule` (the backbone embeds each batch and is trained)
    memory-mapped           `fit_memmap`: pairs and embeddings on disk, streamed batch by batch

The users of the fitted model are the training pairs' users; validation pairs of other users are
left out of early stopping (with a warning). Every path ends in `_measure_statistics`, the one rule
for what a fit measures on its training pairs and stores with the model: the reference statistics of
the aggregates (`measure_reference`) and the reward normalisation's mean / std over the training
responses (`measure_reward_stats`: every pair's chosen and rejected response for the pair's user, at
most `MAX_REWARD_STATS_PAIRS` pairs, seeded). adapt.prior_strength="auto" becomes a number on every
path (`_choose_prior`: chosen on the known users after frozen-embedding fits; `_resolve_prior`: 1.0,
logged, after fine-tuning and memmap fits), recorded as `state.prior_choice`. Same seeds and order of operations on every path as the
facade had before this module existed, so figures are bit-identical.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import numpy as np
import torch

from palrm import distributed as pdist
from palrm.config import FALLBACK_PRIOR_STRENGTH, PALConfig
from palrm.core.posterior import fit_posteriors
from palrm.core.score import measure_reference, measure_reward_stats, pair_table
from palrm.core.state import FittedModel
from palrm.core.table import Embedder, encoder_spec, pair_index
from palrm.data.schema import PairData
from palrm.errors import DataFormatError
from palrm.models import build_net
from palrm.training import IndexedPairs, choose_offset_var, fit_user_offsets, train_net

logger = logging.getLogger(__name__)

__all__ = ["fit", "fit_memmap", "needs_streaming_fit", "data_fingerprint", "MAX_REWARD_STATS_PAIRS", "TRAINING_RESPONSES"]

MAX_REWARD_STATS_PAIRS = 65_536  # 131,072 rewards: the mean's standard error is std / 362
TRAINING_RESPONSES = "training responses"  # the default reference set of reward normalisation


def needs_streaming_fit(cfg: PALConfig, checkpoint_dir=None) -> bool:
    """True when `fit` must take the streaming loop (anything the in-memory `train_net` does not do)."""
    return (cfg.finetune.enabled or checkpoint_dir is not None or cfg.scale.grad_accum_steps > 1
            or pdist.env_world_size() > 1)


def data_fingerprint(cfg: PALConfig, *datasets: PairData | None) -> str:
    """sha256 over the configuration (model, train, finetune, scale) and the pair index arrays and texts."""
    h = hashlib.sha256()
    raw = cfg.to_dict()
    h.update(json.dumps({k: raw[k] for k in ("model", "train", "finetune", "scale")}, sort_keys=True, default=str).encode())
    h.update(cfg.encoder.spec.encode())
    for d in datasets:
        if d is None:
            h.update(b"none")
            continue
        for arr in (d.user, d.prompt, d.chosen, d.rejected):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update("\x00".join(d.texts).encode("utf-8", "surrogatepass"))
        h.update("\x00".join(d.user_ids).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _start(cfg: PALConfig, train: PairData, encoder) -> FittedModel:
    """The state every fit path starts from: users = train's users, no network yet."""
    if len(train) == 0:
        raise DataFormatError(f"{train.source}: no training pairs")
    if encoder is not None:  # saved with the model: the spec that rebuilds this encoder ("custom" when it has none)
        cfg.encoder.spec = encoder_spec(encoder)
    return FittedModel(net=None, users=train.users_present(), config=cfg, input_dim=None,
                       precomputed=train.embeddings is not None,
                       embedder=Embedder(cfg.encoder, encoder, device=cfg.train.device))


def _init_net(state: FittedModel, train: PairData, val: PairData | None):
    """Embed, build the seeded network and index the pairs of a frozen-embedding fit.

    Returns (table, train pairs, (validation table, validation pairs) or None); the validation table
    is `table` itself when both share their texts.
    """
    cfg = state.config
    table = pair_table(state, train)
    state.input_dim = int(table.shape[1])
    torch.manual_seed(cfg.train.seed)
    state.net = build_net(cfg.model, state.input_dim, len(state.users)).to(cfg.train.device)
    _, rows = state.known_rows(train)
    train_idx = pair_index(train, rows, table)
    if val is None:
        return table, train_idx, None
    known, vrows = state.known_rows(val)
    if not known.all():
        logger.warning("validation: %d pairs of %d users not in the training data are left out of early stopping",
                       int((~known).sum()), len(set(val.pair_user_ids[~known])))
    val_sub = val.select(known)
    shared = val.texts is train.texts and val.embeddings is train.embeddings
    val_table = table if shared else pair_table(state, val_sub)
    return table, train_idx, (val_table, pair_index(val_sub, vrows[known], val_table))


def _one_table(table: torch.Tensor, val_part) -> tuple[torch.Tensor, IndexedPairs | None]:
    """(one table for training and validation pairs, the validation pairs indexed into it): the
    validation rows after the training rows when `val_part` = (validation table, pairs) has its own."""
    if val_part is None:
        return table, None
    val_table, val_idx = val_part
    if val_table is table:
        return table, val_idx
    offset = table.shape[0]
    return (torch.cat([table, val_table], 0),
            IndexedPairs(val_idx.user, val_idx.prompt + offset, val_idx.chosen + offset, val_idx.rejected + offset))


def fit(cfg: PALConfig, train: PairData, val: PairData | None = None, *, encoder=None, log_path=None,
        checkpoint_dir=None, resume: bool = False) -> FittedModel:
    """Train a model on `train` (early stopping on `val` loss when given); returns the fitted state.

    `encoder`: an Encoder object to use instead of building `cfg.encoder.spec`.
    """
    if val is not None and len(val) == 0:
        val = None
    if needs_streaming_fit(cfg, checkpoint_dir):
        return _fit_streaming(cfg, train, val, encoder, log_path=log_path, checkpoint_dir=checkpoint_dir, resume=resume)
    state = _start(cfg, train, encoder)
    warm = None
    if cfg.model.k == "auto" and cfg.model.kind != "btl":
        train, val, warm = _select(state, train, val)
    table, train_idx, val_part = _init_net(state, train, val)
    if warm is not None:
        _warm_start(state.net, *warm)
    train_table = table
    table, val_idx = _one_table(table, val_part)
    state.history = train_net(state.net, table, train_idx, val_idx, cfg.train, log_path=log_path)
    if state.net.offset_dim:
        _fit_offsets(state, table, train_idx, val_idx)
    _choose_prior(state, table, train_idx, val_idx)
    _measure_statistics(state, train, train_table)
    fit_posteriors(state, train_idx, table)
    return state


def _measure_statistics(state: FittedModel, train, table: torch.Tensor | None = None) -> None:
    """What every fit path measures on its training pairs and stores with the model.

    `train`: PairData or memory-mapped pairs; `table`: its whole embedding table when the path has it
    (else only the texts / rows the statistics use are embedded, with the fitted encoder: the
    fine-tuned backbone after fine-tuning).

        reference_stats   per-prototype (mu_k, sigma_k) of the aggregates, on <= 4,096 distinct items
        reward_stats      mean / std of r(u_i, x_i, y) for y in {chosen_i, rejected_i}, every training
                          pair i (at most MAX_REWARD_STATS_PAIRS, seeded): `normalize=True`'s map
    """
    state.reference_stats = measure_reference(state, train, table)
    state.reward_stats = measure_reward_stats(state, train, TRAINING_RESPONSES, table=table,
                                              max_pairs=MAX_REWARD_STATS_PAIRS)


def _select(state: FittedModel, train: PairData, val: PairData | None):
    """k="auto": model selection on validation pairs and held-out training users (evaluation/selection.py)
    over one embedding table; the winner's settings (model, regularisation, adapt prior) replace
    `state.config` and the report is `state.selection`. Without `val` each user's pairs are split
    90 / 10 (seeded). Returns (train, val, (winner's network, held-out rows)) for `_warm_start`."""
    from palrm.data.splits import split_pairs
    from palrm.evaluation.selection import candidate_grid, format_table, select_model

    cfg = state.config
    if val is None:
        parts = split_pairs(train, val_frac=0.1, test_frac=0.0, seed=cfg.train.seed, honour_split_column=False)
        train, val = parts.train, parts.validation
    index = state.user_index

    def rows(d: PairData) -> np.ndarray:
        return np.array([index.get(u, -1) for u in d.user_ids], dtype=np.int64)[d.user] if len(d) else np.zeros(0, np.int64)

    val = val.select(rows(val) >= 0)
    table = pair_table(state, train)
    train_idx = pair_index(train, rows(train), table)
    shared = val.texts is train.texts and val.embeddings is train.embeddings
    val_table = table if shared else pair_table(state, val)
    table, val_idx = _one_table(table, (val_table, pair_index(val, rows(val), val_table)))
    m = cfg.model
    grid = candidate_grid(ks=tuple(m.auto_ks), kinds=(m.kind,), offsets=tuple(m.auto_offsets))
    report, net, held = select_model(cfg, table, train_idx, val_idx, len(state.users), candidates=grid,
                                     heldout_frac=m.auto_heldout, return_net=True)
    report["heldout_user_ids"] = [state.users[int(r)] for r in held]
    report["refit"] = ("the winner refitted on all users, warm-started from its selection network (shared "
                       "weights and known users' logits; held-out users start at the known users' mean logits)")
    state.config = cfg.updated(report["overrides"])
    state.selection = report
    adapt = state.config.adapt
    if isinstance(adapt.prior_strength, float):  # else (BTL won, or no held-out users) `_choose_prior` decides
        chosen = cfg.adapt.prior_strength == "auto"
        state.prior_choice = {"prior": adapt.prior, "strength": adapt.prior_strength,
                              "chosen_by": "model selection" if chosen else "configured",
                              **({"users": report["heldout_users"]} if chosen else {})}
    logger.info("model selection:\n%s", format_table(report))
    return train, val, (net, held)


def _choose_prior(state: FittedModel, table: torch.Tensor, train_idx: IndexedPairs, val_idx: IndexedPairs | None) -> None:
    """adapt.prior_strength: "auto" becomes the number chosen on the known users after training
    (evaluation/selection.py, `choose_prior_on_known_users`); a number is kept as configured. The
    record (every strength's log-loss, or why nothing was chosen) is `state.prior_choice`."""
    from palrm.evaluation.selection import choose_prior_on_known_users, describe_prior_choice

    adapt = state.config.adapt
    if adapt.prior_strength != "auto":
        if state.prior_choice is None:
            state.prior_choice = {"prior": adapt.prior, "strength": adapt.prior_strength, "chosen_by": "configured"}
        return
    record = choose_prior_on_known_users(state.net, state.config, table, train_idx, val_idx)
    _set_prior_choice(state, record)
    logger.info("%s", describe_prior_choice(record))


def _set_prior_choice(state: FittedModel, record: dict) -> None:
    state.prior_choice = record
    state.config.adapt.prior_strength = record["strength"]
    if "offset_var" in record:
        state.config.adapt.offset_var = record["offset_var"]


def _resolve_prior(state: FittedModel, why: str) -> None:
    """prior_strength "auto" on a fit path that does not choose: FALLBACK_PRIOR_STRENGTH, logged with `why`."""
    adapt = state.config.adapt
    if adapt.prior_strength == "auto":
        record = {"prior": adapt.prior, "strength": FALLBACK_PRIOR_STRENGTH, "chosen_by": "fallback",
                  "reason": f"{why}: adapt.prior_strength=auto is not chosen on this path, {FALLBACK_PRIOR_STRENGTH:g} used"}
        _set_prior_choice(state, record)
        logger.info("%s", record["reason"])
    elif state.prior_choice is None:
        state.prior_choice = {"prior": adapt.prior, "strength": adapt.prior_strength, "chosen_by": "configured"}


def _warm_start(net, source, held) -> None:
    """Start the refit on all users from the selection's network `source` (trained on the known users):
    its shared weights, the known users' logits in their rows, and the known users' mean logits for the
    held-out rows `held` (n,). Early stopping then only has to finish the job (fewer epochs)."""
    shared = {k: v for k, v in source.state_dict().items() if not k.startswith("user_logits.") and k != "user_offsets"}
    net.load_state_dict(shared, strict=False)
    if not net.has_users:
        return
    is_held = torch.zeros(net.num_users, dtype=torch.bool)
    is_held[torch.as_tensor(held, dtype=torch.long)] = True
    with torch.no_grad():
        known = source.user_logits.weight.detach().to(net.user_logits.weight)
        net.user_logits.weight[~is_held] = known
        net.user_logits.weight[is_held] = known.mean(0)


def _fit_offsets(state: FittedModel, table: torch.Tensor, train_idx: IndexedPairs, val_idx: IndexedPairs | None) -> None:
    """MAP personal offsets of the known users (models/offset.py); sigma^2 chosen on `val_idx` unless
    `model.offset_var` fixes it (the chosen value is stored in the config)."""
    net = state.net
    logits = net.user_logits.weight.detach()
    if state.config.model.offset_var <= 0:
        var, _ = choose_offset_var(net, table, train_idx, val_idx, logits)
        state.config.model.offset_var = var
    with torch.no_grad():
        net.user_offsets[:] = fit_user_offsets(net, table, train_idx, len(logits), logits, state.config.model.offset_var)


def _shard_embeddings(state: FittedModel, datasets: list[PairData | None], info: pdist.DistInfo) -> None:
    """Each rank embeds its share of the distinct texts into the shared cache; rank 0 merges the shards."""
    enc_cfg = state.config.encoder
    texts = sorted({t for d in datasets if d is not None and d.embeddings is None for t in d.texts})
    if not info.active or not enc_cfg.use_cache or not texts:
        return
    cache, encoder = state.embedder.cache, state.embedder.encoder
    share = texts[info.rank::info.world_size]
    logger.info("rank %d embeds %d of %d distinct texts into %s", info.rank, len(share), len(texts), cache.directory)
    cache.encode(encoder, share, batch_size=enc_cfg.batch_size, progress=False)
    pdist.barrier()
    if info.is_main:
        cache.compact(encoder)
    pdist.barrier()


def _fit_streaming(cfg: PALConfig, train: PairData, val: PairData | None, encoder, *, log_path, checkpoint_dir,
                   resume: bool) -> FittedModel:
    from palrm.training.engine import train_stream
    from palrm.training.loop import param_groups
    from palrm.training.sources import TableSource

    info = pdist.init_from_env(cfg.train.device)
    cfg.train.device = info.device
    state = _start(cfg, train, encoder)
    common = {"scale": cfg.scale, "log_path": log_path, "checkpoint_dir": checkpoint_dir, "resume": resume,
              "info": info, "fingerprint": data_fingerprint(cfg, train, val)}
    if cfg.finetune.enabled:
        _fit_finetune(state, train, val, common)
        _resolve_prior(state, "fine-tuning")
        _measure_statistics(state, train)  # embedded by the fine-tuned backbone
        return state
    _shard_embeddings(state, [train, val], info)
    table, train_idx, val_part = _init_net(state, train, val)
    val_src = TableSource(*val_part) if val_part is not None else None
    state.history = train_stream(state.net, TableSource(table, train_idx), val_src, cfg.train,
                                 param_groups=param_groups(state.net, cfg.train), **common)
    choice_table, val_idx = _one_table(table, val_part)  # the prior choice reads both, as the in-memory path does
    _choose_prior(state, choice_table, train_idx, val_idx)
    _measure_statistics(state, train, table)
    return state


def _fit_finetune(state: FittedModel, train: PairData, val: PairData | None, common: dict) -> None:
    from palrm.finetune import BackboneEncoder, FineTuneModule, TextPairSource, load_transformer, parse_hf_spec
    from palrm.training.engine import train_stream

    cfg = state.config
    if state.precomputed:
        raise DataFormatError(f"{train.source}: fine-tuning needs texts, these pairs carry precomputed embeddings")
    path, pooling, max_length = parse_hf_spec(cfg.encoder.spec)
    device = cfg.train.device
    torch.manual_seed(cfg.train.seed)
    backbone, tokenizer = load_transformer(path, device)
    encoder = BackboneEncoder(backbone, tokenizer, pooling=pooling, max_length=max_length,
                              append_eos=cfg.finetune.append_eos, padding_side=cfg.finetune.padding_side,
                              device=device, bf16=cfg.finetune.bf16, source=path)
    state.input_dim = encoder.dim
    torch.manual_seed(cfg.train.seed)
    head = build_net(cfg.model, state.input_dim, len(state.users)).to(device)
    state.net = head
    module = FineTuneModule(encoder, head, cfg.finetune).to(device)

    def source(d: PairData) -> TextPairSource:
        known, rows = state.known_rows(d)
        d = d.select(known)
        return TextPairSource(encoder.tokens.encode(d.texts), rows[known], d.prompt, d.chosen, d.rejected,
                              encoder.tokens, device)

    logger.info("fine-tuning %s (%s pooling, append_eos=%s, padding %s) with %s",
                path, pooling, encoder.tokens.append_eos, encoder.tokens.padding_side, head.kind)
    state.history = train_stream(module, source(train), source(val) if val is not None else None, cfg.train,
                                 param_groups=module.param_groups(cfg.train, cfg.finetune), **common)
    state.backbone = module.finished_encoder()
    state.embedder.encoder = state.backbone
    state.net = module.head.eval()


def fit_memmap(cfg: PALConfig, train_dir: str | os.PathLike, val_dir: str | os.PathLike | None = None, *,
               log_path=None, checkpoint_dir=None, resume: bool = False) -> FittedModel:
    """Train on a memory-mapped pair directory (palrm.data.memmap) larger than memory.

    The model holds precomputed-embedding inputs, its users named by the directory's users.json.
    """
    from palrm.data.memmap import open_memmap_pairs
    from palrm.training import train_memmap

    data = open_memmap_pairs(train_dir)
    if val_dir is not None and open_memmap_pairs(val_dir).user_ids != data.user_ids:
        raise DataFormatError(f"{val_dir}: its users.json differs from {train_dir}'s; a validation directory must "
                              "index the same user table")
    net, history = train_memmap(train_dir, cfg, val_dir=val_dir, log_path=log_path, checkpoint_dir=checkpoint_dir,
                                resume=resume)
    state = FittedModel(net=net, users=list(data.user_ids), config=cfg, input_dim=int(data.embeddings.shape[1]),
                        precomputed=True, embedder=Embedder(cfg.encoder, None, device=cfg.train.device), history=history)
    _resolve_prior(state, "memory-mapped fit")
    _measure_statistics(state, data)
    return state
