"""Typed configuration: one dataclass per concern, YAML in and out, validation that lists every problem.

Every field carries its help text in `metadata["help"]`; the CLI uses those texts for `--help`.
Unknown keys are errors (a typo must not be silently ignored).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from palrm.errors import ConfigError

MODEL_KINDS = ("pal-a", "pal-b", "btl")
LINKS = ("euclidean", "cosine")
USER_MODES = ("mixture", "partition")
PROTOTYPE_SPACES = ("input", "latent")
ACTIVATIONS = ("gelu", "relu", "tanh", "silu", "identity")
LOSSES = ("bce", "hinge")
PRIORS = ("none", "gaussian", "mixture")
OFFSETS = ("none", "latent", "input")
AUTO_BOOL = ("auto", "yes", "no")
PADDING_SIDES = ("auto", "left", "right")
ADAPT_INITS = ("population", "uniform")
FALLBACK_PRIOR_STRENGTH = 1.0  # adapt.prior_strength=auto where a fit cannot choose it (the reason is logged)


def _f(default: Any, help: str, *, auto_type: type = int, **kw: Any) -> Any:  # noqa: A002 - "help" reads best here
    """A field with its help text; a field whose default is "auto" also takes a value of `auto_type`."""
    meta = {"help": help, "auto_type": auto_type}
    if isinstance(default, (list, dict, tuple)):
        return field(default_factory=lambda: type(default)(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass
class ModelConfig:
    kind: str = _f("pal-b", "Model: pal-a (ideal points independent of the prompt), pal-b (prompt-conditioned), or btl (one shared reward, the baseline).")
    k: int | str = _f("auto", "Number of prototypes K (each user is a mixture of K), or auto: choose the model (BTL, K in auto_ks, offsets in auto_offsets) by validation log-loss of known and held-out users (evaluation/selection.py). Ignored by btl.")
    d: int = _f(64, "Dimension of the latent preference space (output of f and g_k).")
    hidden: list = _f([256], "Hidden layer sizes of the MLPs f, g_k and the BTL reward head, e.g. [256] or [512, 256]; [] = linear.")
    activation: str = _f("gelu", f"Activation between hidden layers: one of {', '.join(ACTIVATIONS)}.")
    dropout: float = _f(0.0, "Dropout probability after each hidden activation.")
    link: str = _f("euclidean", "Score of a response: euclidean (-||f(x) - a||^2) or cosine (tau * cos(f(x), a), tau learned).")
    users: str = _f("mixture", "mixture (user weights anywhere on the simplex) or partition (each user scored with the argmax prototype).")
    prototype_space: str = _f("input", "PAL-A only: prototypes live in the input space and pass through f (f(P)w, the paper's default) or directly in the latent space.")
    tau_init: float = _f(1 / 0.07, "Cosine link: initial scale tau (CLIP's 1/0.07).")
    tau_max: float = _f(100.0, "Cosine link: upper cap of the learned scale tau.")
    offset: str = _f("none", "Personal offset delta_u beyond the K-mixture (models/offset.py): none (plain PAL), latent (the ideal point moves by delta_u in R^d), or input (a linear head on [phi(x), ||phi(x)||^2] per user; with kind btl: per-user heads shrunk toward the shared reward); Gaussian prior, MAP fit after training and for new users. PAL needs the euclidean link; btl takes input only.")
    auto_ks: list = _f([1, 2, 3, 4, 6, 8], "k=auto: the values of K tried.")
    auto_offsets: list = _f(["none", "latent", "input"], "k=auto: the offset kinds tried on each K (see offset).")
    auto_weight_decay: list = _f([0.01, 0.1], "k=auto, second stage: the train.weight_decay values tried (x auto_dropout) on the winning structure only; the configured train.weight_decay / model.dropout pair is the first-stage row itself.")
    auto_dropout: list = _f([0.0, 0.1], "k=auto, second stage: the model.dropout values tried (x auto_weight_decay) on the winning structure only.")
    auto_heldout: float = _f(0.2, "k=auto: fraction of the training users held out to judge onboarding (never the new users' data).")
    offset_var: float = _f(0.0, "Prior variance sigma^2 of each offset coordinate; 0 = choose it on the validation pairs of known users (the chosen value is stored here).")


@dataclass
class TrainConfig:
    epochs: int = _f(30, "Maximum number of passes over the training pairs.")
    batch_size: int = _f(256, "Pairs per minibatch.")
    lr: float = _f(1e-3, "AdamW learning rate of the shared parameters (f, g_k, prototypes, tau).")
    user_lr: float = _f(5e-2, "AdamW learning rate of the per-user weight logits.")
    weight_decay: float = _f(1e-2, "AdamW weight decay of the shared parameters (user logits get none).")
    loss: str = _f("bce", "Pairwise loss: bce (negative log-likelihood of the BTL model) or hinge (margin 1).")
    patience: int = _f(4, "Early stopping: epochs without validation-loss improvement before stopping (0 = never stop early).")
    seed: int = _f(0, "Random seed (initialisation and batch order); CPU runs are deterministic for a seed.")
    device: str = _f("cpu", "Torch device: cpu, cuda, cuda:1, mps.")
    progress: bool = _f(True, "Show progress bars.")


@dataclass
class AdaptConfig:
    steps: int = _f(300, "Optimisation steps when learning a new user's K weights (full batch over all new users).")
    lr: float = _f(0.1, "Adam learning rate of the new users' weight logits.")
    init: str = _f("population", "Starting point of a new user: population (mean logits of the known users) or uniform (all zeros).")
    prior: str = _f("gaussian", "none = maximum likelihood (the paper's protocol); gaussian (default) = MAP with a Gaussian on the logits fitted to the known users; mixture = MAP with a kernel density over the known users' logits (keeps distinct groups apart).")
    prior_strength: float | str = _f("auto", "Weight lambda of the prior term (a number >= 0; 0 turns it off), or auto (default): chosen on known users when fitting and the chosen number stored here. With model.k=auto the model selection chooses it together with the prior (none / gaussian / mixture) on held-out training users; with a fixed K it is chosen for the configured adapt.prior among 0 (maximum likelihood) and 0.1 / 0.3 / 1 / 3 / 10, each known user onboarded from its first 1, 2, 5, 10 training pairs with a prior fitted on the other half of the users and scored on its validation pairs (evaluation/selection.py, choose_prior_on_known_users). Fits that cannot choose (fine-tuning, memmap, BTL, too few users) store 1.0 and log why.", auto_type=float)
    offset_var: float = _f(0.0, "Prior variance of the personal offset (model.offset) of a user learned by adapt (new users, few-shot curves, palrm adapt, serve); 0 = model.offset_var. A variance that suits known users with hundreds of pairs lets one with two pairs overfit, so it is chosen on users onboarded from few pairs and stored here: held-out training users with model.k=auto, the fitted model's own users (two folds, with adapt.prior_strength=auto) with a fixed K.")


@dataclass
class EncoderConfig:
    spec: str = _f("minilm", "Text encoder: minilm (default, bundled all-MiniLM-L6-v2), hashing[:DIM], st:PATH, hf:PATH[:mean|last], or a local model directory.")
    cache_dir: str | None = _f(None, "Embedding cache directory (default: $PALRM_CACHE_DIR or ~/.cache/palrm/embeddings).")
    use_cache: bool = _f(True, "Cache embeddings on disk keyed by encoder identity and text hash.")
    batch_size: int = _f(32, "Texts per encoder forward pass.")


@dataclass
class FinetuneConfig:
    enabled: bool = _f(False, "Fine-tune the foundation model jointly with the PAL heads (PAL-Large); encoder.spec must be hf:PATH[:mean|last[:MAX_TOKENS]] (pooling and token limit come from it). false = frozen embeddings (PAL-Tiny).")
    append_eos: str = _f("auto", "Append the end-of-text token to every text: auto (when pooling=last and the tokenizer does not end texts with eos/sep itself), yes, no.")
    padding_side: str = _f("auto", "Padding side: auto (the tokenizer's own), left or right. Pooling reads the attention mask, so either is correct.")
    backbone_lr: float = _f(2e-5, "AdamW learning rate of the backbone (or its LoRA adapters).")
    backbone_weight_decay: float = _f(0.0, "AdamW weight decay of the backbone parameters.")
    warmup_steps: int = _f(100, "Linear warm-up of the backbone learning rate over this many optimizer steps (0 = none); the heads start at full rate.")
    freeze_backbone: bool = _f(False, "Keep the backbone fixed (eval mode, no gradients) while still embedding every batch through it.")
    lora: bool = _f(False, "Train LoRA adapters (peft; pip install 'palrm[peft]') instead of all backbone weights.")
    lora_r: int = _f(8, "LoRA rank.")
    lora_alpha: int = _f(16, "LoRA scaling alpha.")
    lora_dropout: float = _f(0.0, "LoRA dropout.")
    lora_target_modules: list = _f([], "Module names to adapt, e.g. [q_proj, v_proj]; [] = peft's default for the architecture.")
    gradient_checkpointing: bool = _f(False, "Recompute backbone activations in the backward pass (less memory, ~30% more compute).")
    bf16: bool = _f(True, "bfloat16 autocast of the backbone on CUDA (ignored on the CPU).")


@dataclass
class ScaleConfig:
    grad_accum_steps: int = _f(1, "Split each batch of train.batch_size pairs into this many micro-batches (same update, less memory).")
    checkpoint_every: int = _f(0, "Write a resumable checkpoint every N optimizer steps (0 = at the end of every epoch only; needs a run directory).")
    val_batch_size: int = _f(8192, "Pairs per forward pass when computing validation metrics.")


@dataclass
class PALConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)

    # ---- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict | None, *, where: str = "config", overrides: Mapping[str, Any] | None = None) -> "PALConfig":
        """Build and validate a config from sections `raw`, then `overrides` (see `updated`);
        raise ConfigError listing every problem (of the sections and of the overrides) at once."""
        problems: list[str] = []
        raw = raw or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping of sections (model, train, adapt, encoder), got {type(raw).__name__}")
        raw = _with_overrides(raw, overrides or {}, problems)
        sections = {}
        for name, section_cls in _SECTIONS.items():
            sections[name] = _build_section(section_cls, raw.get(name, {}), f"{where}: {name}", problems)
        for key in raw:
            if key not in _SECTIONS:
                problems.append(f"{where}: unknown section '{key}' (expected one of: {', '.join(_SECTIONS)})")
        # semantic checks run even when some keys were rejected, so every problem is reported at once
        config = cls(**{k: v for k, v in sections.items() if v is not None})
        problems.extend(config.problems())
        if problems:
            raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
        return config

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> "PALConfig":
        """Read a YAML config (sections model, train, ...), then apply `overrides` (see `updated`)."""
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except (FileNotFoundError, IsADirectoryError):
            raise ConfigError(f"config file {path} does not exist; pass an existing YAML file to --config") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        return cls.from_dict(raw, where=str(path), overrides=overrides)

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    def updated(self, overrides: Mapping[str, Any] | None = None, **named: Any) -> "PALConfig":
        """A new, validated config with overrides applied; `self` is left unchanged.

        Keys are dotted (``"model.k"``) or plain names of `OVERRIDE_NAMES` (``k``, ``epochs``,
        ``encoder``, ...), given as a mapping and/or as keywords: ``cfg.updated({"model.k": 4}, epochs=10)``.
        This is the one override path: the facade's ``PALRewardModel(k=...)``, the CLI's shortcut
        flags and ``--set SECTION.FIELD=VALUE`` all go through it. Every problem is reported at once.
        """
        return PALConfig.from_dict(self.to_dict(), where="config", overrides={**(overrides or {}), **named})

    # ---- semantic validation -----------------------------------------------------------------
    def problems(self) -> list[str]:
        m, t, a, e = self.model, self.train, self.adapt, self.encoder
        out: list[str] = []

        def choice(value, allowed, name):
            if value not in allowed:
                out.append(f"{name} = {value!r}: expected one of {', '.join(allowed)}")

        def positive(value, name, zero_ok=False):
            if value < 0 or (value == 0 and not zero_ok):
                out.append(f"{name} = {value!r}: must be {'>= 0' if zero_ok else '> 0'}")

        choice(m.kind, MODEL_KINDS, "model.kind")
        choice(m.link, LINKS, "model.link")
        choice(m.users, USER_MODES, "model.users")
        choice(m.prototype_space, PROTOTYPE_SPACES, "model.prototype_space")
        choice(m.activation, ACTIVATIONS, "model.activation")
        if m.k != "auto" and not (isinstance(m.k, int) and not isinstance(m.k, bool) and m.k > 0):
            out.append(f"model.k = {m.k!r}: expected a positive integer or auto")
        if not m.auto_ks or not all(isinstance(k, int) and k > 0 for k in m.auto_ks):
            out.append(f"model.auto_ks = {m.auto_ks!r}: expected a list of positive integers, e.g. [1, 2, 3]")
        for o in m.auto_offsets if isinstance(m.auto_offsets, list) else [m.auto_offsets]:
            choice(o, OFFSETS, "model.auto_offsets[]")
        for name, values, top in (("auto_weight_decay", m.auto_weight_decay, None), ("auto_dropout", m.auto_dropout, 1.0)):
            ok = isinstance(values, list) and values and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 and (top is None or v < top) for v in values)
            if not ok:
                bound = "in [0, 1)" if top else ">= 0"
                out.append(f"model.{name} = {values!r}: expected a non-empty list of numbers {bound}, e.g. [0.01, 0.1]")
        if not 0.0 <= m.auto_heldout < 1.0:
            out.append(f"model.auto_heldout = {m.auto_heldout!r}: must be in [0, 1)")
        positive(m.d, "model.d")
        if not all(isinstance(h, int) and h > 0 for h in m.hidden):
            out.append(f"model.hidden = {m.hidden!r}: expected a list of positive integers, e.g. [256]")
        if not 0.0 <= m.dropout < 1.0:
            out.append(f"model.dropout = {m.dropout!r}: must be in [0, 1)")
        positive(m.tau_init, "model.tau_init")
        choice(m.offset, OFFSETS, "model.offset")
        positive(m.offset_var, "model.offset_var", zero_ok=True)
        if m.kind == "btl" and m.offset not in ("none", "input"):
            out.append(f"model.offset = {m.offset!r}: kind btl has no latent ideal point; use offset input (per-user "
                       "linear heads on the shared reward) or none")
        elif m.offset != "none" and m.kind != "btl" and m.link != "euclidean":
            out.append(f"model.offset = {m.offset!r} needs link euclidean for kind {m.kind!r} (got link {m.link!r})")
        if m.tau_max < m.tau_init:
            out.append(f"model.tau_max = {m.tau_max!r}: must be >= model.tau_init ({m.tau_init})")
        positive(t.epochs, "train.epochs")
        positive(t.batch_size, "train.batch_size")
        positive(t.lr, "train.lr")
        positive(t.user_lr, "train.user_lr")
        positive(t.weight_decay, "train.weight_decay", zero_ok=True)
        positive(t.patience, "train.patience", zero_ok=True)
        choice(t.loss, LOSSES, "train.loss")
        positive(a.steps, "adapt.steps")
        positive(a.lr, "adapt.lr")
        choice(a.init, ADAPT_INITS, "adapt.init")
        choice(a.prior, PRIORS, "adapt.prior")
        if isinstance(a.prior_strength, str):
            if a.prior_strength != "auto":
                out.append(f"adapt.prior_strength = {a.prior_strength!r}: expected a number >= 0 (e.g. 0.3; 0 turns the "
                           "prior off) or auto (chosen on known users when fitting)")
        else:
            positive(a.prior_strength, "adapt.prior_strength", zero_ok=True)
        positive(a.offset_var, "adapt.offset_var", zero_ok=True)
        positive(e.batch_size, "encoder.batch_size")
        f, s = self.finetune, self.scale
        choice(f.append_eos, AUTO_BOOL, "finetune.append_eos")
        choice(f.padding_side, PADDING_SIDES, "finetune.padding_side")
        positive(f.backbone_lr, "finetune.backbone_lr", zero_ok=True)
        positive(f.backbone_weight_decay, "finetune.backbone_weight_decay", zero_ok=True)
        positive(f.warmup_steps, "finetune.warmup_steps", zero_ok=True)
        positive(f.lora_r, "finetune.lora_r")
        positive(f.lora_alpha, "finetune.lora_alpha")
        if not 0.0 <= f.lora_dropout < 1.0:
            out.append(f"finetune.lora_dropout = {f.lora_dropout!r}: must be in [0, 1)")
        if f.enabled and not (e.spec.startswith("hf:") or Path(e.spec).expanduser().is_dir()):
            out.append(f"finetune.enabled needs a transformers backbone: encoder.spec = {e.spec!r}, expected hf:PATH[:mean|last] (a directory written by save_pretrained)")
        positive(s.grad_accum_steps, "scale.grad_accum_steps")
        positive(s.checkpoint_every, "scale.checkpoint_every", zero_ok=True)
        positive(s.val_batch_size, "scale.val_batch_size")
        if s.grad_accum_steps > t.batch_size:
            out.append(f"scale.grad_accum_steps = {s.grad_accum_steps}: must be <= train.batch_size ({t.batch_size})")
        return out


_SECTIONS = {"model": ModelConfig, "train": TrainConfig, "adapt": AdaptConfig, "encoder": EncoderConfig,
             "finetune": FinetuneConfig, "scale": ScaleConfig}

# Plain override name -> dotted key, the one map behind `PALConfig.updated` (so behind
# `PALRewardModel(k=4, epochs=10)`, the CLI's shortcut flags and --set). Every field of the model,
# train, adapt and encoder sections under its own name (the first section wins: `lr` is train.lr,
# `batch_size` train.batch_size), plus the aliases below.
OVERRIDE_NAMES: dict[str, str] = {}
for _section in ("model", "train", "adapt", "encoder"):
    for _field in dataclasses.fields(_SECTIONS[_section]):
        OVERRIDE_NAMES.setdefault(_field.name, f"{_section}.{_field.name}")
OVERRIDE_NAMES.update({
    "encoder": "encoder.spec",
    "adapt_lr": "adapt.lr",
    "adapt_steps": "adapt.steps",
    "finetune": "finetune.enabled",
    "grad_accum": "scale.grad_accum_steps",
    "checkpoint_every": "scale.checkpoint_every",
})


def dotted_key(name: str) -> str:
    """The dotted config key of an override name: ``"k"`` -> ``"model.k"``; dotted keys pass unchanged."""
    if "." in name:
        return name
    if name not in OVERRIDE_NAMES:
        raise ConfigError(f"unknown option {name!r}; valid names: {', '.join(sorted(OVERRIDE_NAMES))} (or SECTION.FIELD)")
    return OVERRIDE_NAMES[name]


def _with_overrides(raw: dict, overrides: Mapping[str, Any], problems: list[str]) -> dict:
    """A copy of the sections `raw` with `overrides` (names or dotted keys) written in; problems are collected."""
    raw = {name: (dict(section) if isinstance(section, dict) else section) for name, section in raw.items()}
    for name, value in overrides.items():
        try:
            dotted = dotted_key(str(name))
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        section, _, key = dotted.partition(".")
        if section not in _SECTIONS or not key:
            problems.append(f"override {dotted!r}: expected SECTION.FIELD with SECTION one of {', '.join(_SECTIONS)}")
            continue
        if raw.get(section) is None:
            raw[section] = {}
        if not isinstance(raw[section], dict):
            continue  # reported by from_dict: the section is not a mapping
        raw[section][key] = value
    return raw


_TYPES = {int: (int,), float: (int, float), bool: (bool,), str: (str,), list: (list, tuple)}


def _build_section(section_cls, raw, where: str, problems: list[str]):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping, got {type(raw).__name__}")
        return None
    fields = {f.name: f for f in dataclasses.fields(section_cls)}
    values = {}
    for key, value in raw.items():
        if key not in fields:
            problems.append(f"{where}.{key}: unknown key (valid keys: {', '.join(fields)})")
            continue
        default = fields[key].default if fields[key].default is not dataclasses.MISSING else fields[key].default_factory()
        expected = type(default)
        auto_type = fields[key].metadata.get("auto_type", int)
        if default == "auto" and isinstance(value, _TYPES[auto_type]) and not isinstance(value, bool):  # "auto" or a number
            values[key] = auto_type(value)
            continue
        if default is None:  # optional string
            if value is not None and not isinstance(value, str):
                problems.append(f"{where}.{key} = {value!r}: expected a string or null")
                continue
        elif expected in _TYPES:
            ok = isinstance(value, _TYPES[expected]) and not (expected is not bool and isinstance(value, bool))
            if not ok:
                wanted = f"auto or a number ({auto_type.__name__})" if default == "auto" else expected.__name__
                problems.append(f"{where}.{key} = {value!r}: expected {wanted}")
                continue
            if expected is float:
                value = float(value)
            if expected is list:
                value = list(value)
        values[key] = value
    return section_cls(**values)


def field_help(section_cls) -> dict[str, str]:
    """Help text of every field of a config section (used by the CLI)."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(section_cls)}
