"""The ONNX Runtime backend of the sentence-transformers encoders, on the packaged MiniLM weights."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from palrm.encoders import SentenceTransformerEncoder  # noqa: E402
from palrm.encoders.onnx import OnnxEncoder  # noqa: E402
from palrm.errors import ConfigError  # noqa: E402

pytestmark = pytest.mark.slow

TEXTS = [
    "The cat sat on the mat.",
    "  leading and trailing spaces  ",
    "Quarterly revenue grew by twelve percent, driven by subscriptions in Europe and Asia. " * 40,  # truncated at 256
    "",
    "Ünïcödé, emoji 🙂 and CJK 汉字",
    "x",
]


@pytest.fixture(scope="module")
def torch_minilm():
    return SentenceTransformerEncoder()


@pytest.fixture(scope="module")
def export_root(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def fp32(export_root):
    return OnnxEncoder(SentenceTransformerEncoder(), cache_dir=export_root, batch_size=4, max_batch_tokens=600)


def test_fp32_matches_torch_to_1e4(fp32, torch_minilm):
    ref = torch_minilm.encode(TEXTS)
    out = fp32.encode(TEXTS)
    assert out.shape == ref.shape == (len(TEXTS), 384) and out.dtype == np.float32
    assert np.abs(out - ref).max() <= 1e-4


def test_batches_do_not_change_vectors(fp32):
    alone = np.concatenate([fp32.encode([t]) for t in TEXTS])
    together = fp32.encode(TEXTS)  # length-sorted, padded batches capped at 4 texts / 600 tokens
    assert np.abs(alone - together).max() <= 1e-5
    tokens = fp32.count_tokens(TEXTS)
    assert tokens[2] == 256 and tokens[3] == 2  # truncated to max_seq_length; [CLS] [SEP] for ""


def test_export_is_reused_and_identities_differ(fp32, export_root, torch_minilm):
    fp32.encode(["warm"])
    onnx_file = fp32.export_dir / "model.onnx"
    stamp = onnx_file.stat().st_mtime_ns
    again = OnnxEncoder(SentenceTransformerEncoder(), cache_dir=export_root)
    again.encode(["again"])
    assert onnx_file.stat().st_mtime_ns == stamp  # no second export
    int8 = OnnxEncoder(SentenceTransformerEncoder(), quantize="int8", cache_dir=export_root)
    assert len({torch_minilm.identity, fp32.identity, int8.identity}) == 3
    assert (fp32.spec, int8.spec) == ("onnx:minilm", "onnx-int8:minilm")


def test_int8_stays_close_to_torch(export_root, torch_minilm):
    int8 = OnnxEncoder(SentenceTransformerEncoder(), quantize="int8", cache_dir=export_root)
    ref, out = torch_minilm.encode(TEXTS), int8.encode(TEXTS)
    cos = (ref * out).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1))
    assert cos.min() > 0.95 and np.abs(out - ref).max() > 1e-4  # close, and really quantised


def test_normalize_is_applied(export_root):
    enc = OnnxEncoder(SentenceTransformerEncoder(normalize=True), cache_dir=export_root)
    assert np.allclose(np.linalg.norm(enc.encode(TEXTS[:2]), axis=1), 1.0, atol=1e-5)


def test_rejects_other_encoders_and_options():
    from palrm.encoders import HashingEncoder

    with pytest.raises(ConfigError, match="sentence-transformers"):
        OnnxEncoder(HashingEncoder())
    with pytest.raises(ConfigError, match="int8"):
        OnnxEncoder(SentenceTransformerEncoder(), quantize="int4")


def test_specs_build_onnx_encoders_and_round_trip():
    from palrm.encoders import make_encoder

    for spec in ("onnx:minilm", "onnx-int8:minilm", "onnx:minilm:normalize"):
        enc = make_encoder(spec)
        assert isinstance(enc, OnnxEncoder) and enc.spec == spec and make_encoder(enc.spec).identity == enc.identity
    assert make_encoder("onnx-int8:minilm").quantize == "int8" and make_encoder("onnx:minilm:normalize").normalize
    with pytest.raises(ConfigError, match="sentence-transformers"):
        make_encoder("onnx:hashing")


def test_session_options_sleep_instead_of_spinning(export_root):
    import onnxruntime as ort

    options = OnnxEncoder(SentenceTransformerEncoder(), cache_dir=export_root, threads=2).session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.intra_op_num_threads == 2
