"""The Encoder protocol helpers, PrecomputedEncoder and the make_encoder registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from palrm.encoders import (
    ENCODER_SPEC_FORMS,
    Encoder,
    HashingEncoder,
    HFEncoder,
    PrecomputedEncoder,
    SentenceTransformerEncoder,
    is_encoder,
    make_encoder,
)
from palrm.encoders.base import check_texts, fingerprint_directory
from palrm.errors import ConfigError, DataFormatError

# -- check_texts --------------------------------------------------------------------------------


def test_a_bare_string_is_rejected() -> None:
    with pytest.raises(TypeError, match=r"wrap it in a list"):
        HashingEncoder().encode("hello")  # type: ignore[arg-type]


def test_non_string_items_are_named() -> None:
    with pytest.raises(TypeError, match=r"#1 \(int\).*#3 \(NoneType\)"):
        check_texts(["a", 1, "b", None])  # type: ignore[list-item]


# -- PrecomputedEncoder -------------------------------------------------------------------------


def test_precomputed_looks_up_in_input_order() -> None:
    matrix = np.arange(12, dtype=np.float64).reshape(4, 3)
    enc = PrecomputedEncoder((["r0", "r1", "r2", "r3"], matrix))
    out = enc.encode(["r2", "r0", "r2"])
    assert out.dtype == np.float32 and out.shape == (3, 3)
    np.testing.assert_array_equal(out, matrix[[2, 0, 2]])
    assert enc.dim == 3 and len(enc) == 4 and "r1" in enc
    assert enc.encode([]).shape == (0, 3)
    assert isinstance(enc, Encoder) and is_encoder(enc)


def test_precomputed_from_dict_matches_tuple() -> None:
    rng = np.random.default_rng(0)
    table = {f"k{i}": rng.normal(size=5) for i in range(4)}
    a = PrecomputedEncoder(table)
    b = PrecomputedEncoder((list(table), np.stack(list(table.values()))))
    assert a.identity == b.identity
    np.testing.assert_allclose(a.encode(["k3", "k1"]), b.encode(["k3", "k1"]))


def test_precomputed_unknown_key_names_key_and_fix() -> None:
    enc = PrecomputedEncoder({"a": np.ones(2), "b": np.zeros(2)}, name="pickapic.npz")
    with pytest.raises(DataFormatError) as info:
        enc.encode(["a", "zzz-missing"])
    message = str(info.value)
    assert "zzz-missing" in message and "pickapic.npz" in message and "Fix:" in message


def test_precomputed_identity_depends_on_content() -> None:
    a = PrecomputedEncoder({"a": np.ones(2)})
    b = PrecomputedEncoder({"a": np.full(2, 2.0)})
    c = PrecomputedEncoder({"b": np.ones(2)})
    assert len({a.identity, b.identity, c.identity}) == 3


@pytest.mark.parametrize(
    "table, match",
    [
        ({"a": np.ones(2), "b": np.ones(3)}, "different lengths"),
        ((["a", "a"], np.ones((2, 2))), "duplicated"),
        ((["a", "b"], np.ones((3, 2))), "shape"),
        ((["a"], np.array([[np.nan, 1.0]])), "NaN"),
        ({}, "empty"),
    ],
)
def test_precomputed_rejects_bad_tables(table, match: str) -> None:
    with pytest.raises(DataFormatError, match=match):
        PrecomputedEncoder(table)


def test_precomputed_spec_cannot_be_rebuilt_from_a_string() -> None:
    enc = PrecomputedEncoder({"a": np.ones(2)})
    with pytest.raises(ConfigError, match="PrecomputedEncoder"):
        make_encoder(enc.spec)
    assert make_encoder(enc) is enc


# -- make_encoder -------------------------------------------------------------------------------


def test_encoder_instances_pass_through() -> None:
    enc = HashingEncoder(dim=8)
    assert make_encoder(enc) is enc


def test_make_encoder_does_not_load_models(tmp_path: Path) -> None:
    (tmp_path / "modules.json").write_text("[]")
    enc = make_encoder(tmp_path)  # a Path works like its string
    assert isinstance(enc, SentenceTransformerEncoder) and enc._model is None
    assert make_encoder(enc) is enc  # is_encoder does not touch the lazy `dim`
    assert enc._model is None


def test_directory_with_config_json_is_transformers(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert isinstance(make_encoder(str(tmp_path)), HFEncoder)


def test_st_and_hf_spec_parsing(tmp_path: Path) -> None:
    st = make_encoder(f"st:{tmp_path}:normalize")
    assert isinstance(st, SentenceTransformerEncoder) and st.normalize
    hf = make_encoder(f"hf:{tmp_path}:last:128")
    assert isinstance(hf, HFEncoder) and (hf.pooling, hf.max_length) == ("last", 128)
    hub = make_encoder("hf:facebook/opt-350m:last")  # a hub name: accepted, loaded only on use
    assert isinstance(hub, HFEncoder) and hub.pooling == "last" and hub.spec == "hf:facebook/opt-350m:last:512"


@pytest.mark.parametrize(
    "spec, match",
    [
        ("word2vec", "unknown encoder 'word2vec'"),
        ("", "empty"),
        ("hashing:big", "integers"),
        ("st:", "required"),
        ("hf:", "required"),
        ("hf:model:128", "pooling"),
        ("./no/such/dir", "no directory"),
    ],
)
def test_bad_specs_list_the_accepted_forms(spec: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        make_encoder(spec)
    assert all(form in str(info.value) for form in ENCODER_SPEC_FORMS)


def test_a_file_is_not_a_model_directory(tmp_path: Path) -> None:
    file = tmp_path / "weights.bin"
    file.write_bytes(b"x")
    with pytest.raises(ConfigError, match="is a file"):
        make_encoder(str(file))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="neither modules.json"):
        make_encoder(str(empty))


def test_non_encoder_objects_are_rejected() -> None:
    with pytest.raises(ConfigError, match="got a int"):
        make_encoder(3)  # type: ignore[arg-type]


# -- fingerprint --------------------------------------------------------------------------------


def test_fingerprint_sees_edits_in_the_middle_of_small_files_and_the_ends_of_large_ones(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"a": 1}')
    big = tmp_path / "model.safetensors"
    big.write_bytes(bytes(3000))
    before = fingerprint_directory(tmp_path, head_bytes=1000)
    big.write_bytes(bytes(2999) + b"\x01")  # last byte of a large file
    assert fingerprint_directory(tmp_path, head_bytes=1000) != before
    after_big = fingerprint_directory(tmp_path, head_bytes=1000)
    (tmp_path / "config.json").write_text('{"a": 2}')
    assert fingerprint_directory(tmp_path, head_bytes=1000) != after_big
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "junk").write_text("ignored")
    assert fingerprint_directory(tmp_path, head_bytes=1000) == fingerprint_directory(tmp_path, head_bytes=1000)
