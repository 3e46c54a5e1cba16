"""HashingEncoder: deterministic, dependency-free, similarity-preserving."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from palrm.encoders import Encoder, HashingEncoder, make_encoder

TEXTS = ["the cat sat on the mat", "The cat sat on a mat.", "quantum chromodynamics lecture notes", "", "Hi!", "Hi."]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_shape_dtype_and_unit_norm() -> None:
    enc = HashingEncoder(dim=48)
    out = enc.encode(TEXTS)
    assert isinstance(enc, Encoder)
    assert out.shape == (len(TEXTS), 48) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)  # the empty string too
    assert enc.encode([]).shape == (0, 48)


def test_same_text_same_vector_across_instances_and_batches() -> None:
    a = HashingEncoder().encode(TEXTS)
    b = np.concatenate([HashingEncoder().encode([t]) for t in TEXTS])
    np.testing.assert_array_equal(a, b)


def test_same_vector_in_another_process_with_another_hash_seed() -> None:
    code = (
        "import json; from palrm.encoders.hashing import HashingEncoder; "
        f"print(json.dumps(HashingEncoder(dim=32, seed=7).encode({TEXTS!r}).tolist()))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    other = np.asarray(json.loads(done.stdout.strip().splitlines()[-1]), dtype=np.float32)
    np.testing.assert_array_equal(other, HashingEncoder(dim=32, seed=7).encode(TEXTS))


def test_similar_texts_are_closer_than_unrelated_ones() -> None:
    v = HashingEncoder(dim=256).encode(TEXTS)
    assert _cos(v[0], v[1]) > 0.6
    assert _cos(v[0], v[1]) > _cos(v[0], v[2]) + 0.4


def test_distinct_texts_get_distinct_vectors() -> None:
    v = HashingEncoder().encode(["Hi!", "Hi.", "hi", "Hi"])  # same words, different characters
    assert len({row.tobytes() for row in v}) == 4


def test_seed_and_dim_change_vectors_and_identity() -> None:
    base = HashingEncoder(dim=64, seed=0)
    other = HashingEncoder(dim=64, seed=1)
    assert base.identity != other.identity
    assert not np.allclose(base.encode(TEXTS[:3]), other.encode(TEXTS[:3]))
    assert HashingEncoder(dim=32).identity != base.identity


@pytest.mark.parametrize("spec, dim, seed", [("hashing", 64, 0), ("hashing:128", 128, 0), ("hashing:16:3", 16, 3)])
def test_specs(spec: str, dim: int, seed: int) -> None:
    enc = make_encoder(spec)
    assert isinstance(enc, HashingEncoder) and (enc.dim, enc.seed) == (dim, seed)
    assert make_encoder(enc.spec).identity == enc.identity


@pytest.mark.parametrize("kwargs", [{"dim": 1}, {"dim": 8.0}, {"dim": True}, {"seed": -1}, {"seed": "0"}])
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="HashingEncoder"):
        HashingEncoder(**kwargs)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=80), max_size=6))
def test_any_text_gives_a_finite_unit_vector(texts: list[str]) -> None:
    out = HashingEncoder(dim=16).encode(texts)
    assert out.shape == (len(texts), 16)
    assert np.isfinite(out).all()
    norms = np.linalg.norm(out, axis=1)
    assert np.all((np.abs(norms - 1) < 1e-5) | (norms == 0))
