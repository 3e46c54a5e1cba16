"""Tests for the psychotools paired-comparison builder (palrm.data.paircomp)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from palrm.data import paircomp
from palrm.data.paircomp import build_paircomp, default_source
from palrm.errors import ConfigError, DataFormatError

REAL = Path(__file__).resolve().parents[4] / "shared" / "data" / "psychotools-paircomp"
HEADER = '"row","subject","item_a","item_b","a_preferred"\n'


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """Two listeners (ids with leading zeros, like SoundQuality), three sessions, three items."""
    (tmp_path / "Tiny_comparisons.csv").write_text(
        HEADER
        + '1,"04","x","y",1\n1,"04","x","z",0\n1,"04","y","z",1\n'
        + '2,"04","x","y",1\n'
        + '3,"11","x","y",0\n3,"11","y","z",0\n'
    )
    (tmp_path / "Tiny_subjects.csv").write_text(
        '"row","id","gender","age","session"\n1,"04","f",30,1\n2,"04","f",30,2\n3,"11","m",NA,1\n'
    )
    return tmp_path


def test_tiny_fixture(tiny: Path):
    ds = build_paircomp("Tiny", source=tiny)
    pairs = ds.pairs
    assert ds.items == ["x", "y", "z"] and pairs.texts == ["x", "y", "z"]
    np.testing.assert_array_equal(pairs.embeddings, np.eye(3, dtype=np.float32))
    assert pairs.user_ids == ["04", "11"]
    assert len(pairs) == 6 and not pairs.has_prompts and pairs.group is None
    assert pairs.text_of(pairs.chosen) == ["x", "z", "y", "x", "y", "z"]
    assert pairs.text_of(pairs.rejected) == ["y", "x", "z", "y", "x", "y"]
    assert pairs.meta["license"] == "GPL-2"
    cov = ds.covariates
    assert cov.index.tolist() == ["04", "11"] and cov.index.name == "user_id"
    assert cov.loc["04", "gender"] == "f" and cov.loc["04", "age"] == 30
    assert np.isnan(cov.loc["11", "age"])
    assert "session" not in cov.columns  # varies within listener 04
    assert cov["n_rows"].tolist() == [2, 1]
    assert ds.row_covariates["user_id"].tolist() == ["04", "04", "11"]
    assert ds.row_covariates["session"].tolist() == [1, 2, 1]


def test_learned_is_onehot_and_bad_embedding(tiny: Path):
    onehot = build_paircomp("Tiny", source=tiny)
    learned = build_paircomp("Tiny", source=tiny, embedding="learned")
    np.testing.assert_array_equal(onehot.pairs.embeddings, learned.pairs.embeddings)
    assert learned.pairs.meta["embedding"] == "learned"
    with pytest.raises(ConfigError, match="embedding must be one of"):
        build_paircomp("Tiny", source=tiny, embedding="clip")


def test_missing_source_and_name(tiny: Path, tmp_path: Path, monkeypatch):
    with pytest.raises(DataFormatError, match=r"available in .*\['Tiny'\]"):
        build_paircomp("Topmodel2007", source=tiny)
    with pytest.raises(DataFormatError, match="not a directory"):
        build_paircomp("Tiny", source=tmp_path / "nowhere")
    monkeypatch.setattr(paircomp, "default_source", lambda: None)
    with pytest.raises(DataFormatError, match="pass source="):
        build_paircomp("Tiny")


def test_env_variable_source(tiny: Path, monkeypatch):
    monkeypatch.setenv("PALRM_PAIRCOMP_DIR", str(tiny))
    assert default_source() == tiny
    assert len(build_paircomp("Tiny").pairs) == 6


def test_malformed_rows_are_reported(tmp_path: Path):
    (tmp_path / "Bad_comparisons.csv").write_text(
        HEADER + '1,1,"a","b",1\n1,1,"a","a",0\n2,2,"a","b",2\n2,2,"a","b",NA\n'
    )
    (tmp_path / "Bad_subjects.csv").write_text('"row","age"\n1,20\n2,30\n')
    with pytest.raises(DataFormatError) as info:
        build_paircomp("Bad", source=tmp_path)
    message = str(info.value)
    assert "Bad_comparisons.csv" in message
    assert "item_a equals item_b on line(s) [3]" in message
    assert "a_preferred not 0 or 1 on line(s) [4]" in message and "empty values on line(s) [5]" in message
    (tmp_path / "Cols_comparisons.csv").write_text('"row","subject","winner"\n1,1,"a"\n')
    (tmp_path / "Cols_subjects.csv").write_text('"row"\n1\n')
    with pytest.raises(DataFormatError, match=r"missing column\(s\) \['item_a', 'item_b', 'a_preferred'\]"):
        build_paircomp("Cols", source=tmp_path)


def test_subject_without_covariates(tmp_path: Path):
    (tmp_path / "Gap_comparisons.csv").write_text(HEADER + '1,1,"a","b",1\n2,2,"a","b",0\n')
    (tmp_path / "Gap_subjects.csv").write_text('"row","age"\n1,20\n')
    with pytest.raises(DataFormatError, match=r"no covariate row for subject\(s\) \['2'\]"):
        build_paircomp("Gap", source=tmp_path)


@pytest.mark.skipif(not REAL.is_dir(), reason="psychotools CSVs not present")
def test_real_topmodel2007():
    ds = build_paircomp("Topmodel2007", source=REAL)
    pairs = ds.pairs
    assert len(pairs) == 2880 and len(pairs.user_ids) == 192 and len(ds.items) == 6
    assert set(ds.items) == {"Barbara", "Anni", "Hana", "Fiona", "Mandy", "Anja"}
    assert np.bincount(pairs.user).tolist() == [15] * 192  # all 6*5/2 pairs per subject
    assert list(ds.covariates.columns) == ["gender", "age", "q1", "q2", "q3", "n_rows"]
    assert set(ds.covariates["gender"]) == {"male", "female"}
    assert ds.covariates.index.tolist() == pairs.user_ids
    # The data are heterogeneous: the most preferred contestant differs by gender.
    frame = pairs.to_frame()
    frame["gender"] = ds.covariates.loc[frame["user_id"], "gender"].to_numpy()
    wins = frame.groupby("gender")["chosen"].value_counts(normalize=True)
    assert wins["female"].idxmax() == "Barbara" and wins["male"].idxmax() == "Hana"


@pytest.mark.skipif(not REAL.is_dir(), reason="psychotools CSVs not present")
def test_real_soundquality_users_are_listeners():
    ds = build_paircomp("SoundQuality", source=REAL)
    assert len(ds.pairs) == 21924 and len(ds.pairs.user_ids) == 40 and len(ds.items) == 8
    assert all(len(u) == 2 for u in ds.pairs.user_ids)  # "04", not 4
    assert ds.covariates["n_rows"].sum() == 783
