"""`HFEncoder`: a transformers ``AutoModel`` with mean or last-token pooling.

Mean pooling averages the final hidden states over real tokens (the attention mask). Last-token
pooling takes the hidden state of the last real token of each row, found from the attention
mask, so it is correct whichever side the tokenizer pads on. The PAL paper embeds with OPT-350m's
last token (``hf:facebook/opt-350m:last``; its 512-d output comes from OPT's ``project_out``).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from palrm.encoders.base import check_output, check_texts, fingerprint_directory
from palrm.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)

__all__ = ["HFEncoder", "pool_hidden_states", "POOLINGS"]

Pooling = Literal["mean", "last"]
POOLINGS: tuple[str, ...] = ("mean", "last")
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def pool_hidden_states(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool token states into one vector per row.

    Args:
        hidden: (batch, seq, d) final hidden states.
        attention_mask: (batch, seq), 1 for real tokens and 0 for padding (either side).
        pooling: "mean" (average over real tokens) or "last" (state of the last real token).

    Returns:
        (batch, d) pooled states. A row without real tokens pools to zeros ("mean") or to
        position 0 ("last").
    """
    import torch

    if pooling == "mean":
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (batch, seq, 1)
        summed = (hidden * mask).sum(dim=1)  # (batch, d)
        count = mask.sum(dim=1).clamp(min=1.0)  # (batch, 1)
        return summed / count
    if pooling == "last":
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)  # (seq,)
        last = (attention_mask.long() * positions).argmax(dim=1)  # (batch,) highest real position
        rows = torch.arange(hidden.shape[0], device=hidden.device)  # (batch,)
        return hidden[rows, last]  # (batch, d)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def _output_dim(config: Any) -> int:
    """Width of ``last_hidden_state`` from a transformers config (OPT projects to word_embed_proj_dim)."""
    for name in ("word_embed_proj_dim", "hidden_size", "d_model", "n_embd", "dim"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ConfigError(f"Cannot tell the hidden size of a {type(config).__name__}; it has no hidden_size or d_model.")


class HFEncoder:
    """Embed texts with a transformers model and mean or last-token pooling.

    Args:
        model: a local directory written by ``save_pretrained`` (model and tokenizer) or a hub
            name (only where the hub is reachable; set ``HF_HUB_OFFLINE=0``).
        pooling: "mean" or "last".
        max_length: tokens kept per text (texts are truncated on the right); also capped by the
            model's ``max_position_embeddings``.
        device: torch device to run on.
        batch_size: default batch size of ``encode``.
    """

    def __init__(
        self,
        model: str | Path,
        pooling: Pooling = "mean",
        max_length: int = 512,
        device: str = "cpu",
        batch_size: int = 32,
    ) -> None:
        if pooling not in POOLINGS:
            raise ConfigError(f"HFEncoder pooling must be one of {POOLINGS}, got {pooling!r}")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ConfigError(f"HFEncoder max_length must be a positive int, got {max_length!r}")
        self.model = model
        self.pooling = pooling
        self.max_length = max_length
        self.device = device
        self.batch_size = int(batch_size)
        self._model: Any = None
        self._tokenizer: Any = None
        self._dim: int | None = None
        self._accepted: tuple[str, ...] = ()
        path = Path(model).expanduser()
        if path.is_dir():
            path = path.resolve()
            self._source = str(path)
            self._local = True
            origin = f"sha256={fingerprint_directory(path)}"  # content, not location
        else:
            self._source = str(model)
            self._local = False
            origin = f"{model}@hub"
        self.identity = f"hf:{origin}:pooling={pooling}:max_length={max_length}"
        self.spec = f"hf:{self._source}:{pooling}:{max_length}"

    @classmethod
    def from_model(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        pooling: Pooling = "mean",
        max_length: int = 512,
        device: str = "cpu",
        batch_size: int = 32,
        name: str | None = None,
    ) -> HFEncoder:
        """Wrap an already constructed ``(model, tokenizer)`` pair.

        The identity hashes the weights, the config and the tokenizer vocabulary, so it changes
        whenever the outputs could. ``spec`` names ``name`` (or the model's ``name_or_path``);
        rebuilding from it works only if that is a saved directory.
        """
        self = cls.__new__(cls)
        if pooling not in POOLINGS:
            raise ConfigError(f"HFEncoder pooling must be one of {POOLINGS}, got {pooling!r}")
        self.model = model
        self.pooling = pooling
        self.max_length = int(max_length)
        self.device = device
        self.batch_size = int(batch_size)
        self._source = name or getattr(model.config, "_name_or_path", "") or "<in-memory model>"
        self._local = Path(self._source).is_dir()
        self._dim = None
        self._attach(model, tokenizer)
        h = hashlib.sha256(model.config.to_json_string().encode())
        for key, tensor in sorted(model.state_dict().items()):
            h.update(key.encode())
            h.update(_tensor_bytes(tensor))
        h.update(repr(sorted(tokenizer.get_vocab().items())).encode())
        self.identity = f"hf:weights-sha256={h.hexdigest()}:pooling={pooling}:max_length={self.max_length}"
        self.spec = f"hf:{self._source}:{pooling}:{self.max_length}"
        return self

    # -- loading ------------------------------------------------------------------------------

    def _attach(self, model: Any, tokenizer: Any) -> None:
        model.eval()
        model.to(self.device)
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ConfigError(
                    f"The tokenizer of {self._source!r} has neither a pad nor an eos token; set "
                    "tokenizer.pad_token before building the encoder."
                )
            tokenizer.pad_token = tokenizer.eos_token  # pooling reads the mask, so the pad id is irrelevant
        self._model = model
        self._tokenizer = tokenizer
        accepted = inspect.signature(model.forward).parameters
        self._accepted = tuple(k for k in _MODEL_INPUTS if k in accepted)
        limit = getattr(model.config, "max_position_embeddings", None)
        self._effective_max_length = min(self.max_length, limit) if isinstance(limit, int) else self.max_length
        if self._effective_max_length < self.max_length:
            logger.info("max_length %d capped to the model's %d positions", self.max_length, limit)

    def _load(self) -> tuple[Any, Any]:
        if self._model is not None:
            return self._model, self._tokenizer
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub unless the user asked to
        from transformers import AutoModel, AutoTokenizer

        logger.info("loading transformers model %s on %s", self._source, self.device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(self._source, local_files_only=self._local)
            model = AutoModel.from_pretrained(self._source, local_files_only=self._local)
        except Exception as err:
            where = (
                "Fix: check that the directory holds both the model and the tokenizer written by save_pretrained."
                if self._local
                else "It is not a local directory and the hub could not be used (offline: HF_HUB_OFFLINE=1). "
                "Fix: pass a local path to a directory written by save_pretrained (encoder='hf:/path/to/model'), "
                "or, where the hub is reachable, set HF_HUB_OFFLINE=0."
            )
            raise ConfigError(
                f"Could not load the transformers model {self._source!r} ({type(err).__name__}: {err}). {where}"
            ) from err
        self._attach(model, tokenizer)
        return model, tokenizer

    # -- Encoder protocol ---------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Embedding dimension, read from the model config (without loading the weights)."""
        if self._dim is None:
            if self._model is not None:
                self._dim = _output_dim(self._model.config)
            else:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                from transformers import AutoConfig

                try:
                    config = AutoConfig.from_pretrained(self._source, local_files_only=self._local)
                except Exception as err:
                    raise ConfigError(
                        f"Could not read the config of {self._source!r} ({err}). Fix: pass a local directory "
                        "written by save_pretrained."
                    ) from err
                self._dim = _output_dim(config)
        return self._dim

    def encode(self, texts: list[str], *, batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """Embed ``texts``; returns float32 ``(len(texts), dim)``.

        Texts are sorted by length before batching (less padding) and returned in input order.
        """
        import torch
        from tqdm.auto import tqdm

        texts = check_texts(texts, "HFEncoder.encode")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model, tokenizer = self._load()
        step = int(batch_size or self.batch_size)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out: np.ndarray | None = None
        with torch.inference_mode(), tqdm(
            total=len(texts), unit="text", desc="embedding", disable=not progress, leave=False
        ) as bar:
            for start in range(0, len(texts), step):
                idx = order[start : start + step]
                enc = tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self._effective_max_length,
                    return_tensors="pt",
                )
                inputs = {k: enc[k].to(self.device) for k in self._accepted if k in enc}
                hidden = model(**inputs)[0]  # (batch, seq, d) last_hidden_state
                pooled = pool_hidden_states(hidden, enc["attention_mask"].to(hidden.device), self.pooling)  # (batch, d)
                block = pooled.float().cpu().numpy()
                if out is None:
                    out = np.empty((len(texts), block.shape[1]), dtype=np.float32)
                out[idx] = block
                bar.update(len(idx))
        result = check_output(out, len(texts), None, f"transformers model {self._source!r}")
        self._dim = result.shape[1]
        return result

    def __repr__(self) -> str:
        return f"HFEncoder(model={self._source!r}, pooling={self.pooling!r}, max_length={self.max_length})"


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The raw bytes of a tensor of any dtype (bfloat16 included)."""
    import torch

    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
