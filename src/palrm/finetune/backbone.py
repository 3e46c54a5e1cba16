"""A trainable transformers backbone: the fine-tuned `HFEncoder`, with LoRA, save and load.

`BackboneEncoder` is palrm's one transformers encoder (`palrm.encoders.huggingface.HFEncoder`:
`Tokenisation`, position ids from the attention mask, pooling) around a model object that training
updates, so a fine-tuned `PALRewardModel` evaluates and scores through the very same code as the
frozen path. It adds what a fine-tuned model needs: an identity over its weights, `describe` /
`save` / `load` of the backbone folder, and the LoRA adapters.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from palrm.encoders.huggingface import HFEncoder, load_transformer, weights_digest
from palrm.errors import ConfigError, ModelFileError

logger = logging.getLogger(__name__)

BACKBONE_META = "palrm_backbone.json"
ADAPTER_DIR = "adapter"


def parse_hf_spec(spec: str) -> tuple[str, str, int]:
    """(path, pooling, max_length) of an `hf:PATH[:mean|last[:N]]` spec (or a bare model directory)."""
    from palrm.encoders import make_encoder

    enc = make_encoder(spec)
    if not isinstance(enc, HFEncoder):
        raise ConfigError(f"fine-tuning needs a transformers backbone, encoder.spec = {spec!r} is "
                          f"{type(enc).__name__}; use hf:PATH[:mean|last] with a directory written by save_pretrained")
    return enc.source, enc.pooling, enc.max_length


class BackboneEncoder(HFEncoder):
    """An `HFEncoder` over a (fine-tuned) transformers model object.

    Args:
        model: the transformers model (a peft model is merged before it gets here). It is used as
            given (not moved, mode unchanged): fine-tuning trains it in place.
        tokenizer: its tokenizer.
        pooling: "mean" or "last".
        max_length, append_eos, padding_side: see `Tokenisation`.
        device: where it runs; bf16: bfloat16 autocast on CUDA.
        source: a label for messages and `spec`.
    """

    def __init__(self, model: Any, tokenizer: Any, *, pooling: str = "mean", max_length: int = 512,
                 append_eos: str = "auto", padding_side: str = "auto", device: str = "cpu", bf16: bool = True,
                 source: str = "<fine-tuned>") -> None:
        self._settings(pooling, int(max_length), device, 32, append_eos, padding_side, bf16)
        self.source = source
        self._local = False
        self.spec = f"backbone:{source}"
        self._identity: str | None = None
        self.adapter_dir: Path | None = None  # LoRA adapters saved beside the merged weights
        self.lora: dict | None = None
        self._attach(model, tokenizer, own=False)

    @property
    def identity(self) -> str:
        """Hash of the weights, the config and the tokenisation (computed once; the model is final here)."""
        if self._identity is None:
            settings = json.dumps({"pooling": self.pooling, **self.tokens.settings()}, sort_keys=True)
            self._identity = f"backbone:weights-sha256={weights_digest(self.model, self.tokenizer, settings)}"
        return self._identity

    # ---- persistence -----------------------------------------------------------------------
    def describe(self) -> dict:
        """What config.json records about the backbone (the exporter reads this)."""
        return {"format": "transformers", "path": "backbone", "pooling": self.pooling, **self.tokens.settings(),
                "architecture": type(self.model).__name__, "model_type": getattr(self.model.config, "model_type", None),
                "dim": self.dim, "lora": self.lora,
                "adapter_path": f"backbone/{ADAPTER_DIR}" if self.adapter_dir is not None else None}

    def save(self, directory: str | Path) -> None:
        """save_pretrained (safetensors) of model and tokenizer, palrm's tokenisation settings, LoRA adapters."""
        import shutil

        directory = Path(directory)
        self.model.save_pretrained(str(directory), safe_serialization=True)
        self.tokenizer.save_pretrained(str(directory))
        (directory / BACKBONE_META).write_text(json.dumps({"pooling": self.pooling, **self.tokens.settings(),
                                                           "lora": self.lora}, indent=2))
        if self.adapter_dir is not None and Path(self.adapter_dir).is_dir():
            shutil.copytree(self.adapter_dir, directory / ADAPTER_DIR, dirs_exist_ok=True)

    @classmethod
    def load(cls, directory: str | Path, *, device: str = "cpu", bf16: bool = True) -> BackboneEncoder:
        directory = Path(directory)
        meta_path = directory / BACKBONE_META
        if not meta_path.is_file():
            raise ModelFileError(f"{directory} holds no fine-tuned backbone ({BACKBONE_META} missing); re-save the model")
        meta = json.loads(meta_path.read_text())
        model, tokenizer = load_transformer(directory, device)
        enc = cls(model.eval(), tokenizer, pooling=meta["pooling"], max_length=meta["max_length"],
                  append_eos="yes" if meta["append_eos"] else "no", padding_side=meta["padding_side"],
                  device=device, bf16=bf16, source=str(directory))
        enc.lora = meta.get("lora")
        if (directory / ADAPTER_DIR).is_dir():
            enc.adapter_dir = directory / ADAPTER_DIR
        return enc


def apply_lora(model: Any, cfg) -> Any:
    """Wrap `model` in peft LoRA adapters (only the adapters train). Needs the `peft` extra."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ConfigError("finetune.lora needs the peft package: pip install 'palrm[peft]'") from None
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_target_modules) or None)
    try:
        return get_peft_model(model, lora)
    except ValueError as err:
        raise ConfigError(f"LoRA could not be applied to {type(model).__name__} ({err}); set "
                          "finetune.lora_target_modules to the names of its attention projections") from None
