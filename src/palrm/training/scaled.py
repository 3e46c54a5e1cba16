"""`fit_scaled`: what `PALRewardModel.fit` runs for fine-tuning, data-parallel runs, checkpoints and accumulation.

It prepares the same users, network and validation pairs as the in-memory `fit`, then trains with
the streaming loop (engine.py) on one of two sources:

* frozen embeddings (`TableSource`): under torchrun every rank embeds every N-th distinct text
  into the shared on-disk EmbeddingCache (content-named shards, safe with concurrent writers),
  rank 0 merges the shards into one, and every rank then reads the full table from the cache;
* fine-tuning (`TextPairSource` through `FineTuneModule`): texts tokenised once, embedded per batch
  by the trainable backbone.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING

import numpy as np
import torch

from palrm import distributed as pdist
from palrm.data.schema import PairData
from palrm.errors import DataFormatError
from palrm.models import build_net
from palrm.training.engine import train_stream
from palrm.training.loop import param_groups
from palrm.training.sources import TableSource

if TYPE_CHECKING:  # pragma: no cover
    from palrm.reward_model import PALRewardModel

logger = logging.getLogger(__name__)


def needs_scaled_fit(cfg, checkpoint_dir=None) -> bool:
    """True when `fit` must take the streaming path (anything the in-memory train_net does not do)."""
    return (cfg.finetune.enabled or checkpoint_dir is not None or cfg.scale.grad_accum_steps > 1
            or pdist.env_world_size() > 1)


def data_fingerprint(cfg, *datasets: PairData | None) -> str:
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


def _shard_embeddings(model: PALRewardModel, datasets: list[PairData], info: pdist.DistInfo) -> None:
    """Each rank embeds its share of the distinct texts into the shared cache; rank 0 merges the shards."""
    enc_cfg = model._cfg.encoder
    texts = sorted({t for d in datasets if d is not None and d.embeddings is None for t in d.texts})
    if not info.active or not enc_cfg.use_cache or not texts:
        return
    from palrm.encoders import EmbeddingCache

    cache = EmbeddingCache(enc_cfg.cache_dir)
    share = texts[info.rank::info.world_size]
    logger.info("rank %d embeds %d of %d distinct texts into %s", info.rank, len(share), len(texts), cache.directory)
    cache.encode(model._encoder(), share, batch_size=enc_cfg.batch_size, progress=False)
    pdist.barrier()
    if info.is_main:
        cache.compact(model._encoder())
    pdist.barrier()


def fit_scaled(model: PALRewardModel, train, val=None, *, log_path=None, checkpoint_dir=None,
               resume: bool = False) -> PALRewardModel:
    """Train `model` (a PALRewardModel) with the streaming loop; returns it fitted. See the module doc."""
    model._cfg = cfg = model._config()
    info = pdist.init_from_env(cfg.train.device)
    cfg.train.device = info.device
    train, val = model._begin_fit(train, val)
    fingerprint = data_fingerprint(cfg, train, val)
    common = {"scale": cfg.scale, "log_path": log_path, "checkpoint_dir": checkpoint_dir, "resume": resume,
              "info": info, "fingerprint": fingerprint}

    if cfg.finetune.enabled:
        _fit_finetune(model, train, val, common)
        return model

    _shard_embeddings(model, [train, val], info)
    table, train_idx, val_part = model._init_net(train, val)
    val_src = TableSource(*val_part) if val_part is not None else None
    model.history_ = train_stream(model.net_, TableSource(table, train_idx), val_src, cfg.train,
                                  param_groups=param_groups(model.net_, cfg.train), **common)
    return model


def _fit_finetune(model: PALRewardModel, train: PairData, val: PairData | None, common: dict) -> None:
    from palrm.finetune import (
        BackboneEncoder,
        FineTuneModule,
        TextPairSource,
        load_transformer,
        parse_hf_spec,
    )

    cfg = model._cfg
    if model.precomputed_:
        raise DataFormatError(f"{train.source}: fine-tuning needs texts, these pairs carry precomputed embeddings")
    path, pooling, max_length = parse_hf_spec(cfg.encoder.spec)
    device = cfg.train.device
    torch.manual_seed(cfg.train.seed)
    backbone, tokenizer = load_transformer(path, device)
    encoder = BackboneEncoder(backbone, tokenizer, pooling=pooling, max_length=max_length,
                              append_eos=cfg.finetune.append_eos, padding_side=cfg.finetune.padding_side,
                              device=device, bf16=cfg.finetune.bf16, source=path)
    model.input_dim_ = encoder.dim
    torch.manual_seed(cfg.train.seed)
    head = build_net(cfg.model, model.input_dim_, len(model.users_)).to(device)
    model.net_ = head
    module = FineTuneModule(encoder, head, cfg.finetune).to(device)

    def source(d: PairData) -> TextPairSource:
        known, rows = model._known_mask(d)
        d = d.select(known)
        return TextPairSource(encoder.tokens.encode(d.texts), rows[known], d.prompt, d.chosen, d.rejected,
                              encoder.tokens, device)

    logger.info("fine-tuning %s (%s pooling, append_eos=%s, padding %s) with %s",
                path, pooling, encoder.tokens.append_eos, encoder.tokens.padding_side, head.kind)
    model.history_ = train_stream(module, source(train), source(val) if val is not None else None, cfg.train,
                                  param_groups=module.param_groups(cfg.train, cfg.finetune), **common)
    model.backbone_ = module.finished_encoder()
    model.encoder_ = model.backbone_
    model.net_ = module.head.eval()
