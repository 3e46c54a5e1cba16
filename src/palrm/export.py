"""Scalar reward model export: one user's (or one mixture's) PAL reward as a standalone model.

`export_scalar(model, out_dir, user_id=... | weights=...)` (CLI: `palrm export`, in palrm.cli.export) writes

    config.json         format marker, the source config, input dimension, encoder spec and identity,
                        the mixture (who this reward is for) and any accuracy figures
    model.safetensors   the shared network weights and the mixture weights w (K,) (no user table);
                        for one user of a model with personal offsets (`model.offset`) also that
                        user's offset delta_u (r,), without which the reward would be the mixture's
    README.md           a model card: what it was trained on, its accuracy, which user or mixture,
                        how to load it

and `ScalarRewardModel.from_pretrained(dir)` loads it again (safetensors + JSON only):

    rm = ScalarRewardModel.from_pretrained("runs/alice-rm")
    rm(["prompt", "prompt"], ["answer A", "answer B"])   # tensor([r_A, r_B])

For any two responses x, y of one prompt, r(x) - r(y) equals the PAL preference logit of the source
model for that user or mixture (the score difference under the same weights; tested).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from palrm.atomic import atomic_directory
from palrm.core import (
    Embedder,
    FittedModel,
    as_pairs,
    build_encoder,
    check_encoder,
    check_format_version,
    embedding_table,
    encoder_spec,
    resolve_device,
    score_items,
    score_texts,
    text_rows,
)
from palrm.errors import ConfigError, DataFormatError, ModelFileError, PalrmError
from palrm.normalization import NO_STATS_HINT, RewardNormalizer
from palrm.training.posterior import UserPosterior, parse_risk, reward_samples
from palrm.version import __version__

logger = logging.getLogger(__name__)

SCALAR_FORMAT = "palrm-scalar-reward"
SCALAR_FORMAT_VERSION = 2  # 2: exports of a population aggregate (format 1: one mixture; both are read)
MIXTURE_KEY = "palrm.mixture_weights"
OFFSET_KEY = "palrm.user_offset"  # (r,) the exported user's personal offset (models/offset.py), when the model has them
AGGREGATE_USERS_KEY = "palrm.aggregate_user_weights"  # (U, K) the users an aggregate runs over, when it needs them
CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "model.safetensors", "README.md"

__all__ = ["ScalarRewardModel", "export_scalar"]


BACKBONE_DIR = "backbone"


def _mixture(state, user_id: str | None, weights: Any) -> tuple[np.ndarray, dict]:
    """(weights (K,), description) of whose reward is exported."""
    k = state.net.k
    if not state.net.has_users:
        if user_id is not None:
            logger.warning("export: the BTL baseline has one reward for everybody; user %r is ignored", user_id)
        return np.ones(1, dtype=np.float32), {"source": "btl", "description": "the BTL baseline's single reward (no users)"}
    if user_id is not None and weights is not None:
        raise ConfigError("export: give either a user id or mixture weights, not both")
    if user_id is not None:
        state.net.eval()
        w = state.user_weights(str(user_id))  # UnknownUserError names the fix
        desc = {"source": "user", "user_id": str(user_id), "description": f"user {user_id!r}"}
        post = state.posteriors.get(str(user_id))
        if post is not None:  # the mixture with its uncertainty: rewards with std / risk after loading
            desc["posterior"] = post.to_dict()
        return w.astype(np.float32), desc
    # a mixture, the population or a group: no personal offset (delta = 0, models/offset.py)
    if weights is None:
        raise ConfigError("export: say whose reward to export: a user id, 'population', 'group:K' or K mixture weights")
    w = state.resolve_weights(weights).cpu().numpy().astype(np.float32)
    if isinstance(weights, str) and weights == "population":
        desc = {"source": "population", "description": f"the population (mean weights of {len(state.users)} users)"}
    elif isinstance(weights, str):
        g = int(weights.split(":", 1)[1])
        desc = {"source": "group", "group": g, "description": f"prototype {g} alone (group {g} of K={k})"}
    else:
        desc = {"source": "weights", "description": f"the mixture {[round(float(x), 4) for x in w]}"}
    return w, desc


def _aggregate(state, aggregate: str, user_id, weights, tensors: dict) -> tuple[dict, dict]:
    """(mixture description, config.json "aggregate" entry) of an aggregate export; adds the users'
    weights to `tensors` when the aggregate runs over them."""
    from palrm.aggregate import needs_users, parse_aggregate

    agg = parse_aggregate(aggregate)
    if user_id is not None or weights is not None:
        raise ConfigError("export: give a user id, mixture weights or an aggregate, not more than one")
    if state.reference_stats is None:
        raise ConfigError("export: this model has no reference statistics for aggregates (saved by an older palrm); "
                          "load it, call model.set_reference(training_pairs), save it, then export")
    entry = {"spec": str(agg), "reference_stats": state.reference_stats.to_dict(), "n_users": None}
    if needs_users(agg, state.net.has_users):
        state.net.eval()
        with torch.no_grad():
            tensors[AGGREGATE_USERS_KEY] = state.net.user_weights(torch.arange(len(state.users), device=state.device))[:, : state.net.k].cpu().contiguous()
        entry["n_users"] = len(state.users)
    who = f"its {len(state.users)} users" if agg.over == "users" else f"its K={state.net.k} learned groups"
    desc = {"source": "aggregate", "aggregate": str(agg), "weights": None,
            "description": f"the population aggregate `{agg}` over {who}"}
    return desc, entry


def _metrics_near(model_dir: Path | None) -> dict | None:
    """Accuracy figures written next to a model by `palrm train` (metrics.json) or the quickstart (results.json)."""
    if model_dir is None:
        return None
    for name in ("metrics.json", "results.json"):
        path = model_dir.parent / name
        if path.is_file():
            try:
                return {"file": name, "metrics": json.loads(path.read_text())}
            except json.JSONDecodeError:
                logger.warning("export: %s is not valid JSON; left out of the model card", path)
    return None


def _headline(metrics: dict | None) -> list[str]:
    """A few readable lines from metrics.json / results.json."""
    if not metrics:
        return []
    lines = []
    m = metrics["metrics"]
    for split in ("test", "validation", "train"):
        if isinstance(m.get(split), dict) and "accuracy" in m[split]:
            lines.append(f"- {split} accuracy of the source model (all its users): {m[split]['accuracy']:.4f} "
                         f"on {m[split].get('n_pairs', '?')} pairs")
    seen = m.get("seen", {}).get("pal") if isinstance(m.get("seen"), dict) else None
    if isinstance(seen, dict) and "accuracy" in seen:  # quickstart results.json
        lines.append(f"- seen-user test accuracy of the source model (quickstart): {seen['accuracy']:.4f} on "
                     f"{seen.get('n_pairs', '?')} pairs of {seen.get('n_users', '?')} users")
        if isinstance(m.get("dataset"), dict) and m["dataset"].get("name"):
            lines.append(f"- trained on: {m['dataset']['name']}")
    return lines


def export_scalar(
    model,
    out_dir: str | os.PathLike,
    *,
    user_id: str | None = None,
    weights: Any = None,
    source: str | os.PathLike | None = None,
    eval_pairs=None,
    aggregate: str | None = None,
    normalize: bool = False,
) -> Path:
    """Write `model`'s reward for `user_id` (or `weights`: K numbers, 'population', 'group:k'; or a
    population `aggregate` such as "maxmin", see `palrm.aggregate`) to `out_dir`.

    `model`: a fitted `PALRewardModel` or its `palrm.core.FittedModel`.

    `eval_pairs` (PairData / DataFrame / path), when given, is scored with the exported reward and its
    accuracy goes into config.json and the model card (only that user's pairs when `user_id` is given).
    Writing is atomic: a failed export leaves an earlier directory intact. The model's reward statistics
    travel with every export (`reward_normalization`); with `normalize` the exported model returns
    (r - mean) / std by default (`"normalize": true` in config.json).
    """
    state = model if isinstance(model, FittedModel) else getattr(model, "fitted_", None)
    if state is None:
        raise PalrmError("this PALRewardModel is not fitted yet: call fit(train) or PALRewardModel.load(dir) first")
    if state.precomputed:
        raise PalrmError("this model was trained on precomputed embeddings, not texts; a scalar text reward "
                         "model cannot be exported from it")
    if normalize and state.reward_stats is None:
        raise ConfigError(f"--normalize: {NO_STATS_HINT}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.net.state_dict().items()
               if not k.startswith("user_logits.") and k != "user_offsets"}  # no user table: only the exported user's row
    if aggregate is not None:
        mixture, agg_meta = _aggregate(state, aggregate, user_id, weights, tensors)
    else:
        w, mixture = _mixture(state, user_id, weights)
        mixture["weights"] = [float(x) for x in w]
        tensors[MIXTURE_KEY] = torch.from_numpy(w.copy())
        if mixture["source"] == "user" and state.net.offset_dim:  # the user's personal offset travels too
            offset = state.net.user_offsets[state.user_row(str(user_id))].detach().cpu().float().contiguous()
            tensors[OFFSET_KEY] = offset
            mixture["offset"] = {"kind": state.net.offset_kind, "dim": int(offset.numel()),
                                 "norm": float(offset.norm()), "prior_var": float(state.config.model.offset_var)}
        agg_meta = None
    source_dir = Path(source) if source is not None else None
    cfg = state.config
    encoder = state.embedder.encoder
    meta = {
        "format": SCALAR_FORMAT,
        "format_version": 1 if agg_meta is None else 2,
        "palrm_version": __version__,
        "kind": state.net.kind,
        "input_dim": state.input_dim,
        "encoder": {"spec": cfg.encoder.spec, "identity": getattr(encoder, "identity", None)},
        "mixture": mixture,
        "source_model": {"path": str(source_dir) if source_dir else None, "num_users": len(state.users),
                         "k": state.net.k},
        "config": cfg.to_dict(),
        "metrics": _metrics_near(source_dir),
        "eval": None,
        "reward_normalization": None if state.reward_stats is None else state.reward_stats.to_dict(),
        "normalize": bool(normalize),
        "aggregate": agg_meta,
    }
    out_dir = Path(out_dir)
    if source_dir is not None and out_dir.resolve() == source_dir.resolve():
        raise PalrmError(f"{out_dir} is the model being exported; export to another directory (-o)")
    if out_dir.exists() and not _is_scalar_export(out_dir) and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise PalrmError(f"{out_dir} exists and is not an earlier scalar export (left untouched); export to a new or "
                         "empty directory, or to an earlier `palrm export` output to replace it")
    with atomic_directory(out_dir) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": SCALAR_FORMAT, "palrm": __version__})
        if state.backbone is not None:  # PAL-Large: the fine-tuned backbone travels inside
            state.backbone.save(tmp / BACKBONE_DIR)
            meta["backbone"] = {**state.backbone.describe(), "path": BACKBONE_DIR}
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        if eval_pairs is not None:
            meta["eval"] = _evaluate_export(tmp, state, eval_pairs, user_id if mixture["source"] == "user" else None)
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        (tmp / CARD_FILE).write_text(_model_card(meta, out_dir.name))
    return out_dir


def _is_scalar_export(directory: Path) -> bool:
    """True when `directory` holds an earlier export (config.json with the scalar format marker)."""
    try:
        return json.loads((directory / CONFIG_FILE).read_text()).get("format") == SCALAR_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _evaluate_export(directory: Path, state, pairs, user_id: str | None) -> dict:
    data = as_pairs(pairs, "evaluation pairs")
    if data.embeddings is not None:
        raise DataFormatError(f"{data.source}: evaluation pairs must hold texts, not embedding row ids")
    if user_id is not None:
        data = data.for_users([user_id])
    if len(data) == 0:
        raise DataFormatError(f"{data.source}: no evaluation pairs" + (f" of user {user_id!r}" if user_id else ""))
    rm = ScalarRewardModel.from_pretrained(directory, device=state.device, encoder=state.embedder.encoder)
    prompts = [data.texts[i] if i >= 0 else None for i in data.prompt]
    chosen = [data.texts[i] for i in data.chosen]
    rejected = [data.texts[i] for i in data.rejected]
    diff = (rm(prompts, chosen) - rm(prompts, rejected)).cpu().numpy()
    return {"accuracy": float((diff > 0).mean()), "n_pairs": int(len(data)), "n_users": int(len(data.users_present())),
            "data": str(data.source), "users": "the exported user's pairs" if user_id else "all pairs"}


def _model_card(meta: dict, name: str) -> str:
    cfg = meta["config"]
    m = cfg.get("model", {})
    lines = [
        f"# {name}: a palrm scalar reward model",
        "",
        f"A standalone scalar reward r(prompt, response) exported from a PAL personalized reward model "
        f"(palrm {meta['palrm_version']}, Chen et al., arXiv 2406.08469). It is the reward of "
        f"**{meta['mixture']['description']}**.",
        "",
        "## How to load it",
        "",
        "```python",
        "from palrm import ScalarRewardModel",
        "",
        f'rm = ScalarRewardModel.from_pretrained("{name}")',
        'rewards = rm(["Your prompt", "Your prompt"], ["response A", "response B"])  # torch.Tensor of floats',
        "```",
        "",
        "Only `palrm` is needed (weights are read with safetensors; nothing is unpickled). For RLHF with TRL: "
        "`palrm.integrations.trl.reward_function(rm)`.",
        "",
        "## What it is",
        "",
        f"- model: {meta['kind']} (K={meta['source_model']['k']} prototypes, link {m.get('link', '?')}, "
        f"d={m.get('d', '?')}), input dimension {meta['input_dim']}",
        f"- text encoder: `{meta['encoder']['spec']}` (identity `{meta['encoder']['identity']}`); the reward is only "
        "meaningful with this encoder",
        *_card_who(meta),
        f"- source model: {meta['source_model']['path'] or '(in memory)'}, {meta['source_model']['num_users']} users",
        "",
        "## Accuracy",
        "",
    ]
    acc = _headline(meta.get("metrics"))
    if meta.get("eval"):
        e = meta["eval"]
        acc.insert(0, f"- this exported reward on {e['users']} of `{e['data']}`: accuracy {e['accuracy']:.4f} "
                      f"({e['n_pairs']} pairs)")
    lines += acc or ["- no accuracy figures were available at export time (pass `palrm export ... --data PAIRS` to measure)."]
    lines += ["", "## Training data", "",
              f"- trained by palrm with seed {cfg.get('train', {}).get('seed', '?')}; see the source model's directory "
              "and its run directory (config.yaml, metrics.json) for the data it was trained on.", ""]
    return "\n".join(lines)


def _card_who(meta: dict) -> list[str]:
    if meta.get("aggregate"):
        a = meta["aggregate"]
        return [f"- aggregate: `{a['spec']}` (palrm.aggregate): each learned group's reward standardised on the source "
                f"model's reference set ({a['reference_stats'].get('source', '?')}), then aggregated",
                "- rewards are in standard deviations of the reference set; their differences are not preference logits"]
    off = meta["mixture"].get("offset")
    offset_line = ([f"- personal offset: {off['kind']}, {off['dim']} numbers (norm {off['norm']:.4f}), fitted by MAP "
                    "beyond the mixture and exported with it"] if off else [])
    return [f"- mixture weights over the K prototypes: {[round(x, 6) for x in meta['mixture']['weights']]}",
            *offset_line,
            "- the difference of two rewards for the same prompt is the source model's preference logit for this "
            "user or mixture: P(A preferred over B) = sigmoid(r(A) - r(B))"]


class ScalarRewardModel:
    """A scalar reward model exported by `palrm export`: `model(prompts, responses) -> tensor (n,)`.

    Load with `ScalarRewardModel.from_pretrained(directory)`. `prompts` may be one string (used for
    every response), None (no prompt), or a sequence as long as `responses`.
    """

    def __init__(self, net, weights: torch.Tensor | None, meta: dict, *, device: str = "cpu", use_cache: bool = False,
                 config=None, encoder=None, aggregate_users: torch.Tensor | None = None) -> None:
        from palrm.aggregate import ReferenceStats
        from palrm.config import PALConfig

        self.net = net
        self.weights = weights  # (K,) the exported mixture, (K + r,) with a user's personal offset; None for an aggregate export
        agg = meta.get("aggregate")
        self.aggregate = None if not agg else agg["spec"]
        self.reference_stats = None if not agg else ReferenceStats.from_dict(agg["reference_stats"])
        self.aggregate_users = aggregate_users  # (U, K) or None
        self.meta = meta
        self.device = device
        self.use_cache = use_cache
        self.config = config if config is not None else PALConfig.from_dict(meta["config"])
        self.config.encoder.use_cache = bool(use_cache)  # off: nothing read from or written to the disk cache
        self._embedder = Embedder(self.config.encoder, encoder, device=device)
        self.reward_stats = RewardNormalizer.from_dict(meta.get("reward_normalization"))
        self.normalize = bool(meta.get("normalize", False))  # exported with --normalize

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, device: str | None = None, use_cache: bool = False,
                        encoder=None) -> "ScalarRewardModel":
        """Load an exported directory (JSON + safetensors only). `use_cache` also writes new embeddings to the
        on-disk cache (it is always read). `encoder`: the Encoder object to use instead of rebuilding the saved spec
        (its identity must match the saved one). `device`: default the CPU."""
        from palrm.config import PALConfig
        from palrm.models import build_net

        directory = Path(directory)
        missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (directory / f).is_file()]
        if missing:
            raise ModelFileError(f"{directory} is not an exported palrm reward model: missing {', '.join(missing)}. "
                                 "Create one with `palrm export MODEL_DIR --user ID -o DIR`.")
        try:
            meta = json.loads((directory / CONFIG_FILE).read_text())
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"{directory / CONFIG_FILE} is damaged ({exc}); export the model again") from None
        if meta.get("format") != SCALAR_FORMAT:
            hint = " (this is a full PAL model: load it with PALRewardModel.load)" if "num_users" in meta else ""
            raise ModelFileError(f"{directory / CONFIG_FILE}: not a {SCALAR_FORMAT} file{hint}")
        check_format_version(meta, SCALAR_FORMAT_VERSION, directory)
        config = PALConfig.from_dict(meta["config"], where=str(directory / CONFIG_FILE))
        device = resolve_device(device, "cpu")
        config.train.device = device
        net = build_net(config.model, int(meta["input_dim"]), 1)
        try:
            state = load_file(str(directory / WEIGHTS_FILE))
        except Exception as exc:  # safetensors raises its own error types
            raise ModelFileError(f"{directory / WEIGHTS_FILE} could not be read ({exc}); export the model again") from None
        weights = state.pop(MIXTURE_KEY, None)
        offset = state.pop(OFFSET_KEY, None)
        users = state.pop(AGGREGATE_USERS_KEY, None)
        if weights is None and not meta.get("aggregate"):
            raise ModelFileError(f"{directory / WEIGHTS_FILE} has no {MIXTURE_KEY}; export the model again")
        state["user_logits.weight"] = net.user_logits.weight.detach().clone()  # unused placeholder row
        if net.offset_dim:  # unused placeholder row; the exported user's offset follows the weights
            if state.get("user_offsets") is not None and meta.get("mixture", {}).get("source") == "user" and offset is None:
                logger.warning("%s: exported by an older palrm without the user's personal offset; its rewards are the "
                               "user's mixture alone. Export the model again to include the offset.", directory)
            state["user_offsets"] = net.user_offsets.detach().clone()
        if offset is not None and weights is not None:
            weights = torch.cat([weights, offset.to(weights)])  # (K + r): the mixture, then the personal offset
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelFileError(f"{directory / WEIGHTS_FILE} does not match its config.json ({exc})") from None
        if meta.get("backbone"):  # a fine-tuned backbone (PAL-Large) exported with the heads
            from palrm.finetune import BackboneEncoder

            encoder = BackboneEncoder.load(directory / meta["backbone"].get("path", BACKBONE_DIR), device=device,
                                           bf16=config.finetune.bf16)
        elif encoder is not None:
            check_encoder(encoder, meta["encoder"].get("identity"), encoder_spec(encoder), directory)
        return cls(net.to(device).eval(), None if weights is None else weights.to(device), meta, device=device,
                   use_cache=use_cache, config=config, encoder=encoder,
                   aggregate_users=None if users is None else users.to(device))

    @property
    def encoder(self):
        """The text encoder (the saved spec, rebuilt and its identity checked on first use)."""
        if not self._embedder.loaded:
            spec = self.meta["encoder"]["spec"]
            if spec == "custom" or spec.startswith("hf:<"):
                raise ModelFileError(f"this reward model was exported from a model built with an encoder object ({spec!r}); "
                                     "pass it: ScalarRewardModel.from_pretrained(dir, encoder=obj)")
            enc = build_encoder(spec, self.device)
            check_encoder(enc, self.meta["encoder"].get("identity"), spec, "this reward model")
            self._embedder.encoder = enc
        return self._embedder.encoder

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), D) float32 vectors on the model's device."""
        self.encoder  # noqa: B018 - builds and checks the encoder
        vecs = self._embedder.embed(list(texts), store=self.use_cache)
        return torch.from_numpy(vecs).to(self.device)

    def __call__(self, prompts: str | Sequence[str | None] | None, responses: Sequence[str], *,
                 normalize: bool | None = None, uncertainty: bool = False, risk: str | None = None):
        """Rewards (n,) float32 of `responses` (each for its prompt); `normalize` (default: as exported)
        returns (r - mean) / std with the source model's reference statistics of users' rewards.

        A user's export carries the user's weight posterior (`mixture.posterior` in config.json):
        `uncertainty=True` returns (mean, std) tensors under it, `risk="quantile:0.1"` the 10% quantile
        (see `PALRewardModel.reward`). Exports without a posterior are certain (std 0). Normalised
        rewards scale the std by 1 / std of the reference statistics.
        """
        if isinstance(responses, str):
            responses = [responses]
        responses = list(responses)
        n = len(responses)
        if prompts is None or isinstance(prompts, str):
            prompts = [prompts] * n
        prompts = list(prompts)
        if len(prompts) != n:
            raise ConfigError(f"ScalarRewardModel: got {len(prompts)} prompts for {n} responses; pass one prompt, "
                              "or one per response")
        bad = [i for i, r in enumerate(responses) if not isinstance(r, str)]
        if bad:
            raise DataFormatError(f"ScalarRewardModel: response {bad[0]} is a {type(responses[bad[0]]).__name__}, not a string")
        if n == 0:
            return (torch.zeros(0), torch.zeros(0)) if uncertainty else torch.zeros(0)
        normalize = self.normalize if normalize is None else normalize
        if normalize and self.reward_stats is None:
            raise ConfigError(f"normalize: {NO_STATS_HINT} (then export again)")
        post = self.meta["mixture"].get("posterior")
        q = parse_risk(risk)
        if (not uncertainty and risk is None) or post is None:  # no posterior (or an aggregate): certain rewards
            value = score_texts(self.net, self._weights(n), prompts, responses, lambda texts: self.embed(texts).cpu().numpy(),
                                input_dim=int(self.meta["input_dim"]), **self._aggregate_args(n))
            std = torch.zeros(n)
        else:
            texts, p_rows, x_rows = text_rows(prompts, responses)
            table = embedding_table(self.embed(texts).cpu().numpy(), self.device)
            p_vec, x_vec = table[torch.from_numpy(p_rows).to(table.device)], table[torch.from_numpy(x_rows).to(table.device)]
            k = self.net.k
            offset = self.weights[k:] if self.weights is not None and self.weights.numel() > k else None  # (r,) delta_u
            samples = reward_samples(UserPosterior.from_dict(post), self.net, p_vec, x_vec, offset=offset)  # (S, n)
            value = torch.from_numpy(np.asarray(samples.mean(0) if q is None else np.quantile(samples, q, axis=0), dtype=np.float32))
            std = torch.from_numpy(samples.std(0).astype(np.float32))
        if normalize:
            value = torch.from_numpy(np.asarray(self.reward_stats.apply(value.numpy()), dtype=np.float32))
            std = std / float(self.reward_stats.std)
        return (value, std) if uncertainty else value

    def _weights(self, n: int) -> torch.Tensor:
        """(n, K [+ r]) the exported mixture (and personal offset) per item (unused by an aggregate export)."""
        if self.weights is None:
            return torch.ones(n, self.net.k, device=self.device)
        return self.weights.float().expand(n, -1)  # (n, K [+ r])

    def _aggregate_args(self, n: int) -> dict:
        if self.aggregate is None:
            return {}
        return {"aggregates": [self.aggregate] * n, "reference_stats": self.reference_stats, "user_weights": self.aggregate_users}

    def score_embeddings(self, prompt_vectors: torch.Tensor | None, response_vectors: torch.Tensor) -> torch.Tensor:
        """Rewards from precomputed vectors (n, D) (prompt None: no prompt)."""
        x = torch.as_tensor(response_vectors, dtype=torch.float32, device=self.device)
        p = torch.zeros_like(x) if prompt_vectors is None else torch.as_tensor(prompt_vectors, dtype=torch.float32, device=self.device)
        return score_items(self.net, self._weights(x.shape[0]), p, x, **self._aggregate_args(x.shape[0]))

    def __repr__(self) -> str:
        return (f"ScalarRewardModel(kind={self.meta['kind']!r}, encoder={self.meta['encoder']['spec']!r}, "
                f"for={self.meta['mixture']['description']!r})")
