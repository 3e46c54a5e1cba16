"""Text encoders (text -> float32 vectors) and the on-disk embedding cache.

Quick start::

    from palrm.encoders import make_encoder, embed_texts

    enc = make_encoder("minilm")            # all-MiniLM-L6-v2, offline, 384-d
    X = embed_texts(["a", "b"], enc)        # cached under $PALRM_CACHE_DIR or ~/.cache/palrm/embeddings

Specs accepted by :func:`make_encoder` are listed in ``ENCODER_SPEC_FORMS``. Importing this package
does not import torch or transformers; models load on first use.
"""

from palrm.encoders.base import Encoder, PrecomputedEncoder, is_encoder
from palrm.encoders.cache import (
    EmbeddingCache,
    default_cache_dir,
    embed_texts,
    text_digest,
)
from palrm.encoders.hashing import HashingEncoder
from palrm.encoders.huggingface import HFEncoder, Tokenisation, load_transformer, pool_hidden_states
from palrm.encoders.registry import ENCODER_SPEC_FORMS, make_encoder
from palrm.encoders.sentence_transformers import SentenceTransformerEncoder

__all__ = [
    "ENCODER_SPEC_FORMS",
    "EmbeddingCache",
    "Encoder",
    "HFEncoder",
    "HashingEncoder",
    "PrecomputedEncoder",
    "SentenceTransformerEncoder",
    "Tokenisation",
    "load_transformer",
    "default_cache_dir",
    "embed_texts",
    "is_encoder",
    "make_encoder",
    "pool_hidden_states",
    "text_digest",
]
