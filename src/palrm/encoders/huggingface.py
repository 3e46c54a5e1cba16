"""`HFEncoder`: palrm's one transformers encoder (frozen, and the base of the fine-tuned `BackboneEncoder`).

Texts become token ids through one `Tokenisation` (the same for frozen and fine-tuned use), then
padded batches go through the model and are pooled:

* **mean** averages the final hidden states over real tokens (the attention mask);
* **last** takes the hidden state of the last real token of each row, found from the mask, so it is
  correct whichever side the tokenizer pads on. The PAL paper embeds with OPT-350m's last token
  (``hf:facebook/opt-350m:last``; its 512-d output comes from OPT's ``project_out``).

With left padding the position ids are derived from the attention mask (real tokens get positions
0..len-1), so a decoder (GPT-2, Llama, ...) embeds a text the same way alone or in a batch with
longer texts. `Tokenisation` settles what differs between models instead of assuming OPT's
conventions:

* **end of text**: with last-token pooling the pooled token should be an end-of-text marker.
  BERT-style tokenizers already end every text with [SEP]; GPT-2, OPT and Llama tokenizers add none
  at the end. ``append_eos="auto"`` appends the tokenizer's eos token exactly when pooling is
  "last" and the tokenizer does not end texts with eos/sep itself.
* **padding side**: the tokenizer's own (or forced left/right).
* **pad id**: the pad token, else eos, else 0 (padding positions are masked out).
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

__all__ = ["HFEncoder", "POOLINGS", "Tokenisation", "load_transformer", "output_dim", "pool_hidden_states"]

Pooling = Literal["mean", "last"]
POOLINGS: tuple[str, ...] = ("mean", "last")
TOKENISATION_VERSION = 2  # part of the identity: v2 = Tokenisation (eos rule, pad id) + position ids from the mask

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


def output_dim(config: Any) -> int:
    """Width of ``last_hidden_state`` from a transformers config (OPT projects to word_embed_proj_dim)."""
    for name in ("word_embed_proj_dim", "hidden_size", "d_model", "n_embd", "dim"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ConfigError(f"Cannot tell the hidden size of a {type(config).__name__}; it has no hidden_size or d_model.")


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
            raise ConfigError("append_eos = yes (finetune.append_eos), but the tokenizer has no eos token; use append_eos: no")
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
        import torch

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
    logger.info("loading transformers model %s on %s", path, device)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    local = Path(path).expanduser().is_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=local)
        model = AutoModel.from_pretrained(str(path), local_files_only=local)
    except Exception as err:
        where = ("Fix: check that the directory holds both the model and the tokenizer written by save_pretrained."
                 if local else
                 "It is not a local directory and the hub could not be used (offline: HF_HUB_OFFLINE=1). Fix: pass a "
                 "local path to a directory written by save_pretrained (encoder='hf:/path/to/model'), or, where the "
                 "hub is reachable, set HF_HUB_OFFLINE=0.")
        raise ConfigError(f"Could not load the transformers model {str(path)!r} ({type(err).__name__}: {err}). "
                          f"{where}") from err
    return model.to(device), tokenizer


class HFEncoder:
    """Embed texts with a transformers model, mean or last-token pooling, and palrm's `Tokenisation`.

    Args:
        model: a local directory written by ``save_pretrained`` (model and tokenizer) or a hub
            name (only where the hub is reachable; set ``HF_HUB_OFFLINE=0``).
        pooling: "mean" or "last".
        max_length: tokens kept per text (texts are truncated on the right, an appended eos is
            kept); also capped by the model's ``max_position_embeddings``.
        device: torch device to run on.
        batch_size: default batch size of ``encode``.
        append_eos, padding_side: see `Tokenisation` ("auto" follows the model).
        bf16: bfloat16 autocast when running on CUDA.
    """

    def __init__(self, model: str | Path, pooling: Pooling = "mean", max_length: int = 512, device: str = "cpu",
                 batch_size: int = 32, *, append_eos: str = "auto", padding_side: str = "auto",
                 bf16: bool = False) -> None:
        self._settings(pooling, max_length, device, batch_size, append_eos, padding_side, bf16)
        path = Path(model).expanduser()
        if path.is_dir():
            path = path.resolve()
            self.source = str(path)
            self._local = True
            origin = f"sha256={fingerprint_directory(path)}"  # content, not location
        else:
            self.source = str(model)
            self._local = False
            origin = f"{model}@hub"
        self.identity = f"hf:{origin}:{self._identity_suffix()}"
        self.spec = f"hf:{self.source}:{pooling}:{max_length}"

    def _settings(self, pooling: str, max_length: int, device: str, batch_size: int, append_eos: str,
                  padding_side: str, bf16: bool) -> None:
        if pooling not in POOLINGS:
            raise ConfigError(f"HFEncoder pooling must be one of {POOLINGS}, got {pooling!r}")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ConfigError(f"HFEncoder max_length must be a positive int, got {max_length!r}")
        if append_eos not in ("auto", "yes", "no"):
            raise ConfigError(f"append_eos must be auto, yes or no, got {append_eos!r}")
        if padding_side not in ("auto", "left", "right"):
            raise ConfigError(f"padding_side must be auto, left or right, got {padding_side!r}")
        self.pooling = pooling
        self.max_length = max_length
        self.device = device
        self.batch_size = int(batch_size)
        self.append_eos = append_eos
        self.padding_side = padding_side
        self.bf16 = bf16
        self.model: Any = None
        self.tokenizer: Any = None
        self.tokens: Tokenisation | None = None
        self._dim: int | None = None
        self._accepts: set[str] = set()

    def _identity_suffix(self) -> str:
        return (f"pooling={self.pooling}:max_length={self.max_length}:append_eos={self.append_eos}:"
                f"padding={self.padding_side}:tokenisation=v{TOKENISATION_VERSION}")

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, *, pooling: Pooling = "mean", max_length: int = 512,
                   device: str = "cpu", batch_size: int = 32, name: str | None = None, append_eos: str = "auto",
                   padding_side: str = "auto", bf16: bool = False) -> HFEncoder:
        """Wrap an already constructed ``(model, tokenizer)`` pair.

        The identity hashes the weights, the config and the tokenizer vocabulary, so it changes
        whenever the outputs could. ``spec`` names ``name`` (or the model's ``name_or_path``);
        rebuilding from it works only if that is a saved directory.
        """
        self = cls.__new__(cls)
        self._settings(pooling, int(max_length), device, batch_size, append_eos, padding_side, bf16)
        self.source = name or getattr(model.config, "_name_or_path", "") or "<in-memory model>"
        self._local = Path(self.source).is_dir()
        self._attach(model, tokenizer, own=True)
        self.identity = f"hf:weights-sha256={weights_digest(model, tokenizer)}:{self._identity_suffix()}"
        self.spec = f"hf:{self.source}:{pooling}:{self.max_length}"
        return self

    # -- loading ------------------------------------------------------------------------------

    def _attach(self, model: Any, tokenizer: Any, *, own: bool) -> None:
        """Adopt a (model, tokenizer); `own` puts the model in eval mode on this encoder's device."""
        if own:
            model.eval()
            model.to(self.device)
        limit = getattr(model.config, "max_position_embeddings", None)
        length = min(self.max_length, limit) if isinstance(limit, int) else self.max_length
        if length < self.max_length:
            logger.info("max_length %d capped to the model's %d positions", self.max_length, limit)
        self.model = model
        self.tokenizer = tokenizer
        self.tokens = Tokenisation(tokenizer, pooling=self.pooling, max_length=length, append_eos=self.append_eos,
                                   padding_side=self.padding_side)
        self._accepts = set(inspect.signature(model.forward).parameters)

    def prepare(self) -> HFEncoder:
        """Load the model and tokenizer now (``encode`` does it on first use); returns self."""
        if self.model is None:
            model, tokenizer = load_transformer(self.source, self.device)
            self._attach(model, tokenizer, own=True)
        return self

    # -- Encoder protocol ---------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Embedding dimension, read from the model config (without loading the weights)."""
        if self._dim is None:
            if self.model is not None:
                self._dim = output_dim(self.model.config)
            else:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                from transformers import AutoConfig

                try:
                    config = AutoConfig.from_pretrained(self.source, local_files_only=self._local)
                except Exception as err:
                    raise ConfigError(
                        f"Could not read the config of {self.source!r} ({err}). Fix: pass a local directory "
                        "written by save_pretrained."
                    ) from err
                self._dim = output_dim(config)
        return self._dim

    def embed_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled float32 (n, D) embeddings of padded token ids (n, L) (with autograd when enabled)."""
        import torch

        self.prepare()
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.tokens.padding_side == "left" and "position_ids" in self._accepts:  # real tokens at 0..len-1
            kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (n, L)
        on_cuda = input_ids.device.type == "cuda"
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16 and on_cuda):
            hidden = self.model(**kwargs)[0]  # (n, L, D) last hidden state
            pooled = pool_hidden_states(hidden, attention_mask, self.pooling)  # (n, D)
        return pooled.float()

    def encode(self, texts: list[str], *, batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """Embed ``texts``; returns float32 ``(len(texts), dim)``.

        Texts are sorted by token count before batching (less padding) and returned in input order.
        """
        import torch
        from tqdm.auto import tqdm

        texts = check_texts(texts, f"{type(self).__name__}.encode")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self.prepare()
        step = int(batch_size or self.batch_size)
        ids = self.tokens.encode(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in tqdm(range(0, len(texts), step), disable=not progress, leave=False, desc="embedding"):
                    idx = order[start:start + step]
                    input_ids, mask = self.tokens.collate([ids[i] for i in idx], self.device)
                    out[idx] = self.embed_ids(input_ids, mask).cpu().numpy()
        finally:
            self.model.train(was_training)
        return check_output(out, len(texts), None, f"transformers model {self.source!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.source!r}, pooling={self.pooling!r}, max_length={self.max_length})"


def weights_digest(model: Any, tokenizer: Any, extra: str = "") -> str:
    """sha256 hex of a model's config and weights, `extra` and the tokenizer's vocabulary."""
    h = hashlib.sha256(model.config.to_json_string().encode())
    if extra:
        h.update(extra.encode())
    for key, tensor in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(_tensor_bytes(tensor))
    h.update(repr(sorted(tokenizer.get_vocab().items())).encode())
    return h.hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The raw bytes of a tensor of any dtype (bfloat16 included)."""
    import torch

    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
