"""PAL-Large: fine-tune a transformers backbone jointly with the PAL heads (see docs/architecture.md)."""

from palrm.encoders.huggingface import Tokenisation, load_transformer
from palrm.finetune.backbone import BackboneEncoder, apply_lora, parse_hf_spec
from palrm.finetune.source import FineTuneModule, TextPairSource, TokenBatch

__all__ = ["BackboneEncoder", "FineTuneModule", "TextPairSource", "TokenBatch", "Tokenisation", "apply_lora",
           "load_transformer", "parse_hf_spec"]
