"""A trainable transformers backbone: per-model tokenisation, pooling, LoRA, save and load.

`Tokenisation` settles what differs between models instead of assuming OPT's conventions:

* **end of text**: with last-token pooling the pooled token should be an end-of-text marker. BERT-style
  tokenizers already end every text with [SEP]; GPT-2, OPT and Llama tokenizers add none at the end
  (OPT and Llama add a BOS at the start). `append_eos="auto"` appends the tokenizer's eos token
  exactly when pooling is "last" and the tokenizer does not end texts with eos/sep itself.
* **padding side**: the tokenizer's own (or forced left/right). Pooling reads the attention mask,
  and with left padding position ids are computed from the mask so decoder models see positions
  0..len-1 for the real tokens.
* **pad id**: the pad token, else eos, else 0 (padding positions are masked out).

`BackboneEncoder` is a palrm `Encoder` (identity, spec, dim, encode) around a possibly fine-tuned
model, so a fine-tuned `PALRewardModel` evaluates and scores through the very same code path.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from palrm.encoders.huggingface import POOLINGS, _output_dim, pool_hidden_states
from palrm.errors import ConfigError, ModelFileError

logger = logging.getLogger(__name__)

BACKBONE_META = "palrm_backbone.json"
ADAPTER_DIR = "adapter"


class Tokenisation:
    """Texts -> token id lists -> padded (input_ids, attention_mask), following the model's conventions."""

    def __init__(self, tokenizer: Any, *, pooling: str, max_length: int, append_eos: str = "auto",
                 padding_side: str = "auto") -> None:
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        eos = tokenizer.eos_token_id
        sep = getattr(tokenizer, "sep_token_id", None)
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        ends_special = bool(probe) and probe[-1] in {i for i in (eos, sep) if i is not None}
        if append_eos == "auto":
            self.append_eos = pooling == "last" and eos is not None and not ends_special
        else:
            self.append_eos = append_eos == "yes"
        if self.append_eos and eos is None:
            raise ConfigError("finetune.append_eos = yes, but the tokenizer has no eos token; use append_eos: no")
        self.eos_id = eos
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos if eos is not None else 0)
        self.padding_side = tokenizer.padding_side if padding_side == "auto" else padding_side
        if self.padding_side not in ("left", "right"):
            raise ConfigError(f"padding side {self.padding_side!r}: expected left or right")

    def settings(self) -> dict:
        return {"max_length": self.max_length, "append_eos": self.append_eos, "padding_side": self.padding_side}

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text (special tokens included, truncated on the right, eos kept)."""
        if not texts:
            return []
        room = self.max_length - (1 if self.append_eos else 0)
        ids = self.tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=room)["input_ids"]
        if self.append_eos:
            ids = [list(x) + [self.eos_id] for x in ids]
        return [list(x) for x in ids]

    def collate(self, ids: list[list[int]], device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Pad to the longest: (n, L) input ids and attention mask."""
        longest = max((len(x) for x in ids), default=1) or 1
        input_ids = torch.full((len(ids), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), longest), dtype=torch.long)
        for i, x in enumerate(ids):
            if not x:
                continue
            sl = slice(longest - len(x), longest) if self.padding_side == "left" else slice(0, len(x))
            input_ids[i, sl] = torch.tensor(x, dtype=torch.long)
            mask[i, sl] = 1
        return input_ids.to(device), mask.to(device)


def load_transformer(path: str | Path, device: str = "cpu") -> tuple[Any, Any]:
    """(AutoModel, AutoTokenizer) from a local directory (never the hub unless HF_HUB_OFFLINE=0)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    local = Path(path).expanduser().is_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=local)
        model = AutoModel.from_pretrained(str(path), local_files_only=local)
    except Exception as err:
        raise ConfigError(f"could not load the transformers backbone {str(path)!r} ({type(err).__name__}: {err}). "
                          "Fix: pass hf:DIR with a directory written by save_pretrained (model and tokenizer).") from err
    return model.to(device), tokenizer


def parse_hf_spec(spec: str) -> tuple[str, str, int]:
    """(path, pooling, max_length) of an `hf:PATH[:mean|last[:N]]` spec (or a bare model directory)."""
    from palrm.encoders import make_encoder
    from palrm.encoders.huggingface import HFEncoder

    enc = make_encoder(spec)
    if not isinstance(enc, HFEncoder):
        raise ConfigError(f"fine-tuning needs a transformers backbone, encoder.spec = {spec!r} is "
                          f"{type(enc).__name__}; use hf:PATH[:mean|last] with a directory written by save_pretrained")
    return enc._source, enc.pooling, enc.max_length


class BackboneEncoder:
    """An `Encoder` over a (fine-tuned) transformers model with palrm's per-model tokenisation.

    Args:
        model: the transformers model (a peft model is merged before it gets here).
        tokenizer: its tokenizer.
        pooling: "mean" or "last".
        max_length, append_eos, padding_side: see `Tokenisation`.
        device: where it runs; bf16: bfloat16 autocast on CUDA.
        source: a label for messages and `spec`.
    """

    def __init__(self, model: Any, tokenizer: Any, *, pooling: str = "mean", max_length: int = 512,
                 append_eos: str = "auto", padding_side: str = "auto", device: str = "cpu", bf16: bool = True,
                 source: str = "<fine-tuned>") -> None:
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        limit = getattr(model.config, "max_position_embeddings", None)
        max_length = min(int(max_length), limit) if isinstance(limit, int) else int(max_length)
        self.tokens = Tokenisation(tokenizer, pooling=pooling, max_length=max_length, append_eos=append_eos,
                                   padding_side=padding_side)
        self.device = device
        self.bf16 = bf16
        self.source = source
        self.spec = f"backbone:{source}"
        self._identity: str | None = None
        self.adapter_dir: Path | None = None  # LoRA adapters saved beside the merged weights
        self.lora: dict | None = None
        self._accepts = set(inspect.signature(model.forward).parameters)

    # ---- Encoder protocol ------------------------------------------------------------------
    @property
    def identity(self) -> str:
        """Hash of the weights, the config and the tokenisation (computed once; the model is final here)."""
        if self._identity is None:
            h = hashlib.sha256(self.model.config.to_json_string().encode())
            h.update(json.dumps({"pooling": self.pooling, **self.tokens.settings()}, sort_keys=True).encode())
            for key, tensor in sorted(self.model.state_dict().items()):
                h.update(key.encode())
                h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            h.update(repr(sorted(self.tokenizer.get_vocab().items())).encode())
            self._identity = f"backbone:weights-sha256={h.hexdigest()}"
        return self._identity

    @property
    def dim(self) -> int:
        return _output_dim(self.model.config)

    def embed_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled float32 (n, D) embeddings of padded token ids (with autograd when enabled)."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.tokens.padding_side == "left" and "position_ids" in self._accepts:
            kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        on_cuda = input_ids.device.type == "cuda"
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16 and on_cuda):
            hidden = self.model(**kwargs)[0]  # (n, L, D) last hidden state
            pooled = pool_hidden_states(hidden, attention_mask, self.pooling)
        return pooled.float()

    def encode(self, texts: list[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        from tqdm.auto import tqdm

        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        ids = self.tokens.encode(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))  # less padding
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode():
            for start in tqdm(range(0, len(texts), batch_size), disable=not progress, leave=False, desc="embedding"):
                idx = order[start:start + batch_size]
                input_ids, mask = self.tokens.collate([ids[i] for i in idx], self.device)
                out[idx] = self.embed_ids(input_ids, mask).cpu().numpy()
        self.model.train(was_training)
        return out

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
