"""Saving and loading fitted models (safetensors + JSON only; nothing is ever unpickled).

A model directory holds

    config.json         format_version, palrm version, kind, input_dim, num_users, inputs, the
                        encoder's spec and identity, the full config (and the backbone, fine-tuned),
                        the aggregates' reference statistics (palrm.aggregate), the onboarding
                        prior's record (prior_choice: how adapt.prior_strength was chosen)
    model.safetensors   the network (shared weights + the user table)
    users.json          user ids, row u of the user table is users[u]
    posteriors.json     the posterior prior and each user's weight posterior (+ weights mean and
                        uncertainty, readable), when the model has them (issue 10)
    backbone/           fine-tuned models only: the backbone + tokenizer (save_pretrained)

The checks every loader shares (the full model here, `ScalarRewardModel` in export.py):
`check_format_version` (a file from a newer palrm is refused with an upgrade hint),
`resolve_device` (a model saved on "cuda" opens on the CPU, with a warning, where CUDA is absent)
and `check_encoder` (the encoder that will embed texts must be the one the model was trained with).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from palrm.atomic import atomic_directory
from palrm.config import PALConfig
from palrm.core.state import FittedModel
from palrm.core.table import CUSTOM_ENCODER, Embedder, build_encoder, encoder_spec
from palrm.errors import ConfigError, ModelFileError
from palrm.models import build_net
from palrm.normalization import RewardNormalizer
from palrm.training.posterior import PopulationPrior, UserPosterior
from palrm.version import __version__

logger = logging.getLogger(__name__)

CONFIG_FILE, WEIGHTS_FILE, USERS_FILE = "config.json", "model.safetensors", "users.json"
POSTERIOR_FILE = "posteriors.json"
BACKBONE_DIR = "backbone"
FORMAT_VERSION = 1

__all__ = ["save", "load", "check_format_version", "check_encoder", "resolve_device", "encoder_spec",
           "FORMAT_VERSION", "CONFIG_FILE", "WEIGHTS_FILE", "USERS_FILE", "POSTERIOR_FILE", "BACKBONE_DIR"]


def check_format_version(meta: dict, supported: int, where: Path | str) -> None:
    """Refuse a file written in a format newer than `supported` (or with an unreadable version)."""
    try:
        version = int(meta.get("format_version", 0))
    except (TypeError, ValueError):
        raise ModelFileError(f"{where}: format_version {meta.get('format_version')!r} is not a number; re-save the model") from None
    if version > supported:
        raise ModelFileError(f"{where} was written by a newer palrm ({meta.get('palrm_version', '?')}, format {version}; "
                             f"this palrm {__version__} reads format <= {supported}); upgrade palrm: pip install -U palrm")


def resolve_device(device: str | None, saved: str) -> str:
    """The device to open a model on: `device` when given, else the saved one where it exists, else the CPU."""
    chosen = device or saved or "cpu"
    kind = torch.device(chosen).type
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "meta": True,
                 "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())}.get(kind, True)
    if available:
        return chosen
    if device:  # asked for explicitly: say so instead of silently running elsewhere
        raise ConfigError(f"device {device!r} is not available on this machine; pass device='cpu' (CLI: --device cpu)")
    warnings.warn(f"this model was saved on {saved!r}, which is not available here; loading it on the CPU "
                  "(pass device=... to choose)", stacklevel=3)
    logger.warning("model saved on %r loaded on the CPU (%r is not available)", saved, saved)
    return "cpu"


def check_encoder(encoder, expected_identity: str | None, spec: str, where: Path | str) -> None:
    """The encoder must give the vectors the model was trained on: same identity (when one was saved)."""
    if not expected_identity:
        return
    identity = getattr(encoder, "identity", None)
    if identity != expected_identity:
        raise ModelFileError(f"{where}: encoder {spec!r} now has identity {identity!r}, but the model was trained with "
                             f"{expected_identity!r}; its rewards would be meaningless. Pass the original encoder "
                             "(encoder=...) or retrain with this one")


def save(state: FittedModel, directory: str | os.PathLike) -> Path:
    """Write `state` to `directory` atomically (a failed save leaves an earlier model there intact)."""
    directory = Path(directory)
    cfg = state.config
    encoder = None if state.precomputed else state.embedder.encoder
    with atomic_directory(directory) as tmp:
        meta = {
            "format_version": FORMAT_VERSION,
            "palrm_version": __version__,
            "kind": state.net.kind,
            "input_dim": state.input_dim,
            "num_users": len(state.users),
            "inputs": "precomputed" if state.precomputed else "text",
            "encoder_identity": None if encoder is None else getattr(encoder, "identity", None),
            "config": cfg.to_dict(),
            "reference_stats": None if state.reference_stats is None else state.reference_stats.to_dict(),
            "reward_normalization": None if state.reward_stats is None else state.reward_stats.to_dict(),
            "prior_choice": state.prior_choice,
        }
        if state.backbone is not None:  # fine-tuned: the backbone travels inside
            state.backbone.save(tmp / BACKBONE_DIR)
            meta["backbone"] = state.backbone.describe()
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.net.state_dict().items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "palrm": __version__})
        (tmp / USERS_FILE).write_text(json.dumps(state.users))
        if state.posteriors or state.posterior_prior is not None:
            prior = state.posterior_prior
            (tmp / POSTERIOR_FILE).write_text(json.dumps({
                "prior": prior.to_dict() if isinstance(prior, PopulationPrior) else None,
                "users": {u: {**p.to_dict(), "weights_mean": p.weights_mean.round(6).tolist(), "uncertainty": round(p.uncertainty, 6)}
                          for u, p in state.posteriors.items() if u in state.user_index}}))
    return directory


def load(directory: str | os.PathLike, *, device: str | None = None, encoder=None) -> FittedModel:
    """Load a model written by `save`. `encoder`: the Encoder object to embed texts with (required when
    the model was saved with an encoder object that has no spec: "custom")."""
    directory = Path(directory)
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE, USERS_FILE) if not (directory / f).is_file()]
    if missing:
        raise ModelFileError(f"{directory} is not a palrm model directory: missing {', '.join(missing)}. "
                             "Pass the directory written by PALRewardModel.save / palrm train (RUN_DIR/model).")
    try:
        meta = json.loads((directory / CONFIG_FILE).read_text())
        users = json.loads((directory / USERS_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{directory / CONFIG_FILE} is damaged ({exc}); re-save the model") from None
    check_format_version(meta, FORMAT_VERSION, directory)
    try:
        config = PALConfig.from_dict(meta["config"], where=str(directory / CONFIG_FILE))
        input_dim, num_users = int(meta["input_dim"]), int(meta["num_users"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{directory / CONFIG_FILE} is damaged ({exc!r}); re-save the model") from None
    config.train.device = resolve_device(device, config.train.device)
    precomputed = meta.get("inputs") == "precomputed"
    backbone = None
    if meta.get("backbone"):  # a fine-tuned backbone saved inside the model directory
        from palrm.finetune import BackboneEncoder

        backbone = BackboneEncoder.load(directory / meta["backbone"].get("path", BACKBONE_DIR),
                                        device=config.train.device, bf16=config.finetune.bf16)
        encoder = backbone
    elif encoder is not None:
        check_encoder(encoder, meta.get("encoder_identity"), encoder_spec(encoder), directory)
    elif not precomputed:
        encoder = _rebuild_encoder(config.encoder.spec, meta.get("encoder_identity"), config.train.device, directory)
    net = build_net(config.model, input_dim, max(len(users), 1) if config.model.kind != "btl" else num_users)
    try:
        net.load_state_dict(load_file(str(directory / WEIGHTS_FILE)), strict=True)
    except Exception as exc:  # safetensors raises its own error types
        raise ModelFileError(f"{directory / WEIGHTS_FILE} could not be read ({exc}); re-save the model") from None
    state = FittedModel(net=net.to(config.train.device).eval(), users=[str(u) for u in users], config=config,
                        input_dim=input_dim, precomputed=precomputed,
                        embedder=Embedder(config.encoder, encoder, device=config.train.device), backbone=backbone,
                        reference_stats=_reference_stats(meta, directory),
                        reward_stats=RewardNormalizer.from_dict(meta.get("reward_normalization"), str(directory / CONFIG_FILE)),
                        prior_choice=meta.get("prior_choice"))
    if (directory / POSTERIOR_FILE).is_file():
        try:
            saved = json.loads((directory / POSTERIOR_FILE).read_text())
            state.posteriors = {u: UserPosterior.from_dict(d) for u, d in saved["users"].items()}
            state.posterior_prior = None if saved["prior"] is None else PopulationPrior.from_dict(saved["prior"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{directory / POSTERIOR_FILE} is damaged ({exc!r}); delete it and re-adapt the users") from None
    return state


def _reference_stats(meta: dict, directory: Path):
    """The aggregates' reference statistics saved in config.json (None for models saved before them)."""
    from palrm.aggregate import ReferenceStats

    if not meta.get("reference_stats"):
        return None
    try:
        return ReferenceStats.from_dict(meta["reference_stats"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{directory / CONFIG_FILE}: reference_stats is damaged ({exc!r}); re-save the model") from None


def _rebuild_encoder(spec: str, identity: str | None, device: str, directory: Path):
    if spec == CUSTOM_ENCODER:
        raise ModelFileError(f"{directory} was saved with an encoder object that has no spec, so palrm cannot rebuild "
                             "it; pass the same encoder when loading: PALRewardModel.load(dir, encoder=obj) (identity "
                             f"{identity!r})")
    try:
        encoder = build_encoder(spec, device)
    except ConfigError as exc:
        raise ModelFileError(f"{directory}: its encoder spec cannot be rebuilt ({exc}); pass the encoder when loading: "
                             "PALRewardModel.load(dir, encoder=obj)") from None
    check_encoder(encoder, identity, spec, directory)
    return encoder
