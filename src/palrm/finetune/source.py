"""PAL-Large: a transformers backbone trained jointly with the PAL heads.

`FineTuneModule` = backbone + a `RewardNet` head; `TextPairSource` is the `BatchSource` that turns
pair positions into one padded token batch of the distinct prompt and response texts of those
pairs, runs them through the backbone once, pools, and hands the (B, D) embeddings to the head
exactly as the frozen-embedding path does. So with a frozen backbone the training equals the
frozen path (tested), and with a trainable one gradients reach the backbone.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from palrm.config import FinetuneConfig, TrainConfig
from palrm.encoders.huggingface import Tokenisation
from palrm.finetune.backbone import BackboneEncoder, apply_lora
from palrm.models.base import RewardNet
from palrm.training.loop import param_groups as head_param_groups
from palrm.training.pairs import IndexedPairs, batch_logits

logger = logging.getLogger(__name__)


class FineTuneModule(nn.Module):
    """The backbone (optionally LoRA-wrapped, checkpointed, frozen) and the PAL head, trained as one module."""

    def __init__(self, encoder: BackboneEncoder, head: RewardNet, cfg: FinetuneConfig) -> None:
        super().__init__()
        self.encoder = encoder  # not a submodule attribute of its own: the backbone is registered below
        self.frozen = cfg.freeze_backbone or cfg.backbone_lr == 0
        model = encoder.model
        if cfg.lora and not self.frozen:
            model = apply_lora(model, cfg)
            encoder.lora = {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
                            "target_modules": list(cfg.lora_target_modules) or "peft default"}
        if self.frozen:
            for p in model.parameters():
                p.requires_grad_(False)
        elif cfg.gradient_checkpointing:
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5 name
                base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if cfg.lora and hasattr(base, "enable_input_require_grads"):
                base.enable_input_require_grads()
        self.backbone = model
        encoder.model = model
        self.head = head
        self.train(True)

    def train(self, mode: bool = True) -> FineTuneModule:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()  # a frozen backbone embeds exactly as the frozen-embedding path does
        return self

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            with torch.no_grad():
                return self.encoder.embed_ids(input_ids, attention_mask)
        return self.encoder.embed_ids(input_ids, attention_mask)

    def param_groups(self, train: TrainConfig, cfg: FinetuneConfig) -> list[dict]:
        """The head's groups (as train_net builds them) plus the backbone's own rate and warm-up."""
        groups = head_param_groups(self.head, train)
        trainable = [p for p in self.backbone.parameters() if p.requires_grad]
        if trainable and not self.frozen:
            groups.append({"params": trainable, "lr": cfg.backbone_lr, "weight_decay": cfg.backbone_weight_decay,
                           "warmup_steps": cfg.warmup_steps})
        return groups

    def finished_encoder(self) -> BackboneEncoder:
        """The trained backbone as an Encoder: LoRA adapters saved aside, then merged into the weights."""
        enc, model = self.encoder, self.backbone
        if hasattr(model, "merge_and_unload"):
            adapter_dir = Path(tempfile.mkdtemp(prefix="palrm-lora-"))
            model.save_pretrained(str(adapter_dir))  # adapter_model.safetensors + adapter_config.json
            model = model.merge_and_unload()
            enc.adapter_dir = adapter_dir
        for p in model.parameters():
            p.requires_grad_(False)
        disable = getattr(model, "activation_checkpointing_disable", None) or getattr(model, "gradient_checkpointing_disable", None)
        if disable is not None and getattr(model, "supports_gradient_checkpointing", False):
            disable()
        out = BackboneEncoder(model.eval(), enc.tokenizer, pooling=enc.pooling, max_length=enc.tokens.max_length,
                              append_eos="yes" if enc.tokens.append_eos else "no", padding_side=enc.tokens.padding_side,
                              device=enc.device, bf16=enc.bf16, source="<fine-tuned>")
        out.lora, out.adapter_dir = enc.lora, enc.adapter_dir
        return out


@dataclass
class TokenBatch:
    """Distinct texts of a batch as padded tokens, and the pairs as rows into their embeddings.

    Row `n_texts` (one past the last text) is the zero "no prompt" vector.
    """

    input_ids: torch.Tensor  # (T, L)
    attention_mask: torch.Tensor  # (T, L)
    pairs: IndexedPairs  # user rows; prompt / chosen / rejected rows into the T + 1 embeddings


class TextPairSource:
    """Pairs over texts, tokenised once up front; each batch embeds its distinct texts through the backbone.

    Args:
        token_ids: token id list of every text of the pair table (`Tokenisation.encode(texts)`).
        user, prompt, chosen, rejected: (n,) arrays; prompt < 0 = no prompt; user = row of the head's table.
        tokens: the Tokenisation (padding side and pad id).
        device: where batches go.
    """

    def __init__(self, token_ids: list[list[int]], user: np.ndarray, prompt: np.ndarray, chosen: np.ndarray,
                 rejected: np.ndarray, tokens: Tokenisation, device: str = "cpu") -> None:
        self.token_ids = token_ids
        self.user, self.prompt = np.asarray(user, np.int64), np.asarray(prompt, np.int64)
        self.chosen, self.rejected = np.asarray(chosen, np.int64), np.asarray(rejected, np.int64)
        self.tokens = tokens
        self.device = device

    def __len__(self) -> int:
        return len(self.user)

    def batch(self, positions: torch.Tensor) -> TokenBatch:
        pos = positions.cpu().numpy()
        p, c, r = self.prompt[pos], self.chosen[pos], self.rejected[pos]
        b = len(pos)
        rows, inverse = np.unique(np.concatenate([c, r, p[p >= 0]]), return_inverse=True)
        pl = np.full(b, len(rows), dtype=np.int64)
        pl[p >= 0] = inverse[2 * b:]
        input_ids, mask = self.tokens.collate([self.token_ids[i] for i in rows], self.device)
        pairs = IndexedPairs(torch.from_numpy(self.user[pos]), torch.from_numpy(pl),
                             torch.from_numpy(inverse[:b].astype(np.int64)), torch.from_numpy(inverse[b:2 * b].astype(np.int64)))
        return TokenBatch(input_ids, mask, pairs.to(self.device))

    def forward(self, module: FineTuneModule, batch: TokenBatch) -> torch.Tensor:
        emb = module.embed(batch.input_ids, batch.attention_mask)  # (T, D) float32
        table = torch.cat([emb, emb.new_zeros(1, emb.shape[1])], 0)  # + the "no prompt" row
        return batch_logits(module.head, table, batch.pairs)
