"""Dirty data: every kind of invalid row reported at once, or dropped with on_invalid="skip"."""

import json

import numpy as np
import pandas as pd
import pytest

from palrm.data import load_pairs
from palrm.data.tables import save_rejected
from palrm.errors import ConfigError, DataFormatError


def good(i: int, user: str = "u1") -> dict:
    return {"user_id": user, "prompt": f"p{i % 3}", "chosen": f"good answer {i}", "rejected": f"bad answer {i}", "split": "train"}


def dirty_rows() -> list[dict]:
    rows = [good(i, f"u{i % 4}") for i in range(20)]
    rows[1]["chosen"] = "   "  # line 2: empty response
    rows[2]["rejected"] = rows[2]["chosen"] + "  "  # line 3: identical (ignoring whitespace)
    rows[3]["user_id"] = None  # line 4: no user
    rows[4]["split"] = "holdout"  # line 5: unknown split
    for i in (10, 11, 12, 13, 14, 15, 16):  # lines 11-17: identical
        rows[i]["rejected"] = rows[i]["chosen"]
    rows[18]["chosen"] = ["a", "chat"]  # line 19: not text
    rows[19]["user_id"], rows[19]["rejected"] = None, rows[19]["chosen"]  # line 20: two problems
    return rows


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_error_lists_every_kind_of_problem_with_counts_and_first_rows(tmp_path):
    path = write(tmp_path / "dirty.jsonl", dirty_rows())
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(path)
    msg = str(excinfo.value)
    assert "13 of 20 rows are invalid (5 kinds of problem); nothing was loaded" in msg
    assert "empty_response (1 row): column 'chosen' is empty, whitespace-only or null at line 2." in msg
    assert "identical_responses (9 rows)" in msg and "lines 3, 11, 12, 13, 14 and 4 more (9 in all)" in msg
    assert "missing_user (2 rows)" in msg and "lines 4, 20" in msg
    assert "invalid_split (1 row)" in msg and "'holdout'" in msg and "line 5" in msg
    assert "non_text (1 row)" in msg and "line 19" in msg
    assert "--on-invalid skip" in msg


def test_skip_drops_exactly_the_invalid_rows_and_changes_nothing_else(tmp_path, caplog):
    rows = dirty_rows()
    with caplog.at_level("WARNING", logger="palrm"):
        data = load_pairs(write(tmp_path / "dirty.jsonl", rows), on_invalid="skip")
    assert "skipped 13 invalid rows of 20" in caplog.text
    bad_lines = {2, 3, 4, 5, 11, 12, 13, 14, 15, 16, 17, 19, 20}
    clean = load_pairs(write(tmp_path / "clean.jsonl", [r for i, r in enumerate(rows, 1) if i not in bad_lines]))
    assert len(data) == len(clean) == 7
    for name in ("user", "prompt", "chosen", "rejected", "split"):
        assert np.array_equal(getattr(data, name), getattr(clean, name)), name
    assert data.texts == clean.texts and data.user_ids == clean.user_ids
    assert data.meta["rejected_counts"] == {"missing_user": 2, "non_text": 1, "empty_response": 1, "identical_responses": 9,
                                            "invalid_split": 1}
    rejected = data.meta["rejected"]
    assert [r["line"] for r in rejected] == sorted(bad_lines)  # line 20 once, with both of its reasons
    last = rejected[-1]
    assert last["line"] == 20 and sorted(last["reasons"]) == ["identical_responses", "missing_user"]
    assert last["record"]["user_id"] is None and last["record"]["chosen"] == rows[19]["chosen"]
    assert rejected[-2]["record"]["chosen"] == ["a", "chat"]

    out = save_rejected(data, tmp_path / "run" / "rejected.jsonl")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines == [{"source": str(tmp_path / "dirty.jsonl"), **r} for r in rejected]
    assert save_rejected(clean, tmp_path / "none.jsonl") is None and not (tmp_path / "none.jsonl").exists()


def test_skip_with_csv_counts_data_rows(tmp_path):
    frame = pd.DataFrame([good(i) for i in range(4)])
    frame.loc[2, "rejected"] = frame.loc[2, "chosen"]
    path = tmp_path / "p.csv"
    frame.to_csv(path, index=False)
    data = load_pairs(path, on_invalid="skip")
    assert len(data) == 3 and data.meta["rejected"][0]["data_row"] == 3


def test_precomputed_embeddings_identical_and_unknown_rows(tmp_path):
    vectors = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    frame = pd.DataFrame({"user_id": ["a", "a", "b", "b"], "chosen": [0, 1, 2, 9], "rejected": [1, 1, 3, 4]})
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(frame, embeddings=vectors)
    assert "identical_responses (1 row)" in str(excinfo.value) and "invalid_embedding_row (1 row)" in str(excinfo.value)
    data = load_pairs(frame, embeddings=vectors, on_invalid="skip")
    assert len(data) == 2 and data.meta["rejected_counts"] == {"identical_responses": 1, "invalid_embedding_row": 1}
    assert np.allclose(data.embeddings[data.chosen], vectors[[0, 2]])


def test_string_group_labels_are_mapped_and_the_mapping_kept():
    frame = pd.DataFrame([good(i, f"u{i}") for i in range(4)]).assign(group=["liberal", "conservative", "liberal", "moderate"])
    data = load_pairs(frame)
    assert data.meta["group_labels"] == {"conservative": 0, "liberal": 1, "moderate": 2}
    assert data.group.tolist() == [1, 0, 1, 2]
    ints = load_pairs(frame.assign(group=[3, 1, 3, 2]))
    assert ints.group.tolist() == [3, 1, 3, 2] and "group_labels" not in ints.meta


def test_on_invalid_value_and_everything_invalid(tmp_path):
    frame = pd.DataFrame([good(0)])
    with pytest.raises(ConfigError, match="on_invalid='drop'"):
        load_pairs(frame, on_invalid="drop")
    with pytest.raises(DataFormatError, match="every row is invalid"):
        load_pairs(frame.assign(rejected=frame.chosen), on_invalid="skip")


def test_malformed_json_lines_are_one_more_kind_of_problem(tmp_path):
    rows = [json.dumps(good(i, f"u{i % 2}")) for i in range(6)]
    rows[1] = '{"user_id": "u1", "chosen": "x"'  # truncated
    rows[4] = '["a", "list"]'
    bad_value = good(9)
    bad_value["rejected"] = bad_value["chosen"]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(rows + [json.dumps(bad_value)]) + "\n")
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(path)
    msg = str(excinfo.value)
    assert "3 of 7 rows are invalid (2 kinds of problem)" in msg
    assert "malformed_json (2 lines)" in msg and "lines 2, 5" in msg and "identical_responses (1 row)" in msg
    data = load_pairs(path, on_invalid="skip")
    assert len(data) == 4 and data.meta["rejected_counts"] == {"identical_responses": 1, "malformed_json": 2}
    assert [(r["line"], r["reasons"]) for r in data.meta["rejected"]] == [(2, ["malformed_json"]), (5, ["malformed_json"]),
                                                                          (7, ["identical_responses"])]
    assert data.meta["rejected"][0]["raw"] == rows[1]
