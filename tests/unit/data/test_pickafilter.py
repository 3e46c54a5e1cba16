"""Tests for Pick-a-Filter (palrm.data.pickafilter) on synthetic vectors in the documented layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from palrm.data.pickafilter import build_pickafilter, load_pickapic_embeddings
from palrm.errors import ConfigError, DataFormatError

D = 8


def _arrays(n: int = 200, n_users: int = 10, seed: int = 0, ties: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, size=n).astype(np.float64)
    label[:ties] = 0.5
    return {
        "prompt_emb": rng.standard_normal((n, D)).astype(np.float32),
        "image_a_emb": rng.standard_normal((n, D)).astype(np.float32) * 3.0,
        "image_b_emb": rng.standard_normal((n, D)).astype(np.float32) * 3.0,
        "user_ids": np.array([f"u{i % n_users}" for i in range(n)]),
        "label": label,
    }


def test_plain_pickapic_keeps_labels_and_vectors():
    raw = _arrays(ties=5)
    ds = build_pickafilter(**raw, beta=0.0)
    pairs = ds.pairs
    assert len(pairs) == 195 and ds.stats["ties_dropped"] == 5 and not ds.filtered.any()
    assert pairs.embeddings.shape == (3 * 195, D) and pairs.embeddings.dtype == np.float32
    rows = ds.input_rows
    np.testing.assert_array_equal(rows, np.arange(5, 200))
    np.testing.assert_allclose(pairs.embeddings[pairs.prompt], raw["prompt_emb"][rows])
    a_won = raw["label"][rows] == 1
    winner = np.where(a_won[:, None], raw["image_a_emb"][rows], raw["image_b_emb"][rows])
    np.testing.assert_allclose(pairs.embeddings[pairs.chosen], winner)
    assert pairs.has_prompts and pairs.meta["dataset"] == "pickapic"
    assert pairs.pair_user_ids.tolist() == raw["user_ids"][rows].tolist()


def test_groups_are_balanced_and_seeded():
    raw = _arrays(n_users=11)
    ds = build_pickafilter(**raw, beta=0.5, seed=1)
    counts = np.bincount(list(ds.user_group.values()))
    assert sorted(counts.tolist()) == [5, 6]
    np.testing.assert_array_equal(ds.pairs.group, [ds.user_group[u] for u in ds.pairs.pair_user_ids])
    splits = {tuple(sorted(build_pickafilter(**raw, seed=s).user_group.items())) for s in range(5)}
    assert len(splits) > 1


def test_filter_recipe():
    raw = _arrays(n=400)
    ds = build_pickafilter(**raw, beta=0.5, seed=2)
    pairs = ds.pairs
    assert ds.filtered.sum() == 200 and ds.flipped.sum() == 100  # half on the winner, half on the loser
    assert not (ds.flipped & ~ds.filtered).any()
    original_a_won = raw["label"][ds.input_rows] == 1
    chosen_is_a = np.array([pairs.texts[i].startswith("image_a/") for i in pairs.chosen])
    np.testing.assert_array_equal(chosen_is_a, original_a_won ^ ds.flipped)
    preferred = {0: "+cool", 1: "+warm"}
    for j in range(len(pairs)):
        chosen_text, rejected_text = pairs.texts[pairs.chosen[j]], pairs.texts[pairs.rejected[j]]
        if ds.filtered[j]:  # the chosen image carries the user's group's filter, the other the other one
            assert chosen_text.endswith(preferred[pairs.group[j]])
            assert rejected_text.endswith(preferred[1 - pairs.group[j]])
        else:
            assert "+" not in chosen_text and "+" not in rejected_text
    # A filtered embedding moves along the filter direction and keeps its norm.
    j = int(np.flatnonzero(ds.filtered)[0])
    row = ds.input_rows[j]
    is_a = pairs.texts[pairs.chosen[j]].startswith("image_a/")
    original = raw["image_a_emb" if is_a else "image_b_emb"][row]
    moved = pairs.embeddings[pairs.chosen[j]]
    np.testing.assert_allclose(np.linalg.norm(moved), np.linalg.norm(original), rtol=1e-5)
    direction = ds.filter_vectors["cool" if pairs.group[j] == 0 else "warm"]
    assert (moved - original) @ direction > 0


def test_groups_disagree_on_filtered_pairs():
    """The construction is heterogeneous: the preferred filter marks the winner for both groups."""
    ds = build_pickafilter(**_arrays(n=600, n_users=20), beta=1.0, seed=3)
    cool_won = np.array(["+cool" in ds.pairs.texts[i] for i in ds.pairs.chosen])
    np.testing.assert_array_equal(cool_won, ds.pairs.group == 0)


def test_custom_filter_vectors_and_default_scale():
    raw = _arrays()
    cool, warm = np.eye(D)[0] * 2, np.eye(D)[1] * 2
    ds = build_pickafilter(**raw, beta=1.0, filter_vectors={"cool": cool, "warm": warm})
    np.testing.assert_allclose(ds.filter_vectors["cool"], cool)
    default = build_pickafilter(**raw, beta=1.0, filter_strength=0.5)
    median = np.median(np.linalg.norm(np.concatenate([raw["image_a_emb"], raw["image_b_emb"]]), axis=1))
    np.testing.assert_allclose(np.linalg.norm(default.filter_vectors["warm"]), 0.5 * median, rtol=1e-5)
    with pytest.raises(ConfigError, match="keys"):
        build_pickafilter(**raw, filter_vectors={"blue": cool, "warm": warm})
    with pytest.raises(ConfigError, match="shape"):
        build_pickafilter(**raw, filter_vectors={"cool": cool[:3], "warm": warm})
    with pytest.raises(ConfigError, match="beta"):
        build_pickafilter(**raw, beta=1.5)


def test_deterministic():
    raw = _arrays()
    a, b = build_pickafilter(**raw, seed=4), build_pickafilter(**raw, seed=4)
    assert a.pairs.texts == b.pairs.texts
    np.testing.assert_array_equal(a.pairs.embeddings, b.pairs.embeddings)
    np.testing.assert_array_equal(a.flipped, b.flipped)


def test_bad_arrays_are_reported():
    raw = _arrays(n=20)
    raw["label"][[3, 7]] = 2.0
    raw["image_b_emb"] = raw["image_b_emb"][:, :5]
    raw["prompt_emb"][4, 0] = np.nan
    with pytest.raises(DataFormatError) as info:
        build_pickafilter(**raw)
    message = str(info.value)
    assert "rows [3, 7]" in message and "widths differ" in message and "NaN/inf in rows [4]" in message
    all_ties = _arrays(n=4, ties=4)
    with pytest.raises(DataFormatError, match="ties"):
        build_pickafilter(**all_ties)


def _file_arrays(raw: dict, int_users: bool = False) -> dict:
    out = {k: v for k, v in raw.items() if k != "user_ids"}
    out["user_id"] = np.arange(len(raw["label"])) % 7 if int_users else raw["user_ids"]
    return out


@pytest.mark.parametrize("fmt", ["npz", "safetensors", "parquet"])
def test_load_layouts_round_trip(tmp_path: Path, fmt: str):
    raw = _arrays(n=30)
    path = tmp_path / f"emb.{fmt}"
    if fmt == "npz":
        np.savez(path, **_file_arrays(raw))
    elif fmt == "safetensors":
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v) for k, v in _file_arrays(raw, int_users=True).items()}, str(path))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = {"user_id": raw["user_ids"], "label": raw["label"]}
        table |= {k: list(raw[k]) for k in ("prompt_emb", "image_a_emb", "image_b_emb")}
        pq.write_table(pa.table(table), path)
    loaded = load_pickapic_embeddings(path)
    np.testing.assert_allclose(loaded["image_a_emb"], raw["image_a_emb"])
    np.testing.assert_array_equal(loaded["label"], raw["label"])
    assert loaded["source"] == str(path)
    ds = build_pickafilter(**loaded, beta=0.5)
    assert len(ds.pairs) == 30 and ds.pairs.source == str(path)


def test_load_errors(tmp_path: Path):
    with pytest.raises(DataFormatError, match="no such file"):
        load_pickapic_embeddings(tmp_path / "missing.npz")
    partial = tmp_path / "partial.npz"
    np.savez(partial, label=np.ones(3), prompt_emb=np.zeros((3, 2)))
    with pytest.raises(DataFormatError, match=r"missing array\(s\) \['user_id', 'image_a_emb', 'image_b_emb'\]"):
        load_pickapic_embeddings(partial)
    other = tmp_path / "emb.csv"
    other.write_text("a,b\n")
    with pytest.raises(DataFormatError, match="unsupported extension"):
        load_pickapic_embeddings(other)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip file")
    with pytest.raises(DataFormatError, match="could not be read"):
        load_pickapic_embeddings(corrupt)
