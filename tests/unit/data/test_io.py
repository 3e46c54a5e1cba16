"""Tests of palrm.data.io: loading, validating and saving preference pairs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from palrm.data import (
    NO_PROMPT,
    ColumnMap,
    PairData,
    check_embedding_dim,
    load_embeddings,
    load_pairs,
    save_embeddings,
    save_pairs,
)
from palrm.errors import ConfigError, DataFormatError

ROWS = [
    {"user_id": "alice", "prompt": "Name a fruit.", "chosen": "apple", "rejected": "stone"},
    {"user_id": "bob", "prompt": "Name a fruit.", "chosen": "stone", "rejected": "apple"},
    {"user_id": "alice", "prompt": "", "chosen": "Name a fruit.", "rejected": "pear"},
    {"user_id": "carol", "prompt": "Say hi, \"politely\"\nplease", "chosen": "héllo, wörld 👋", "rejected": "go away"},
]


def write_jsonl(path: Path, records: list[dict], blank_after_first: bool = False) -> Path:
    lines = [json.dumps(r) for r in records]
    if blank_after_first:
        lines.insert(1, "")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def pairs_as_tuples(data: PairData) -> list[tuple]:
    """Each pair as (user id, prompt text, chosen text, rejected text)."""
    return list(
        zip(data.pair_user_ids.tolist(), data.text_of(data.prompt), data.text_of(data.chosen), data.text_of(data.rejected))
    )


def expected_tuples(rows: list[dict]) -> list[tuple]:
    return [(str(r["user_id"]), r.get("prompt") or "", r["chosen"], r["rejected"]) for r in rows]


def assert_error(excinfo: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(excinfo.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# ---------------------------------------------------------------------------------------------
# Reading the supported formats


def test_jsonl_loads_into_index_arrays_over_unique_texts(tmp_path: Path) -> None:
    data = load_pairs(write_jsonl(tmp_path / "p.jsonl", ROWS))
    assert pairs_as_tuples(data) == expected_tuples(ROWS)
    # Every distinct text stored once; prompts and responses share the table.
    assert len(data.texts) == len(set(data.texts))
    assert set(data.texts) == {"Name a fruit.", "apple", "stone", "pear", ROWS[3]["prompt"], ROWS[3]["chosen"], "go away"}
    assert data.chosen[2] == data.prompt[0]  # "Name a fruit." as a response and as a prompt: one entry
    assert data.prompt[2] == NO_PROMPT  # empty prompt
    assert data.user_ids == ["alice", "bob", "carol"]  # order of first appearance
    assert data.user.tolist() == [0, 1, 0, 2]
    assert data.source == str(tmp_path / "p.jsonl")
    assert data.split is None and data.group is None and data.embeddings is None
    for name in ("user", "prompt", "chosen", "rejected"):
        assert getattr(data, name).dtype == np.int64


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".pq", ".json"])
def test_all_formats_give_the_same_pairs(tmp_path: Path, suffix: str) -> None:
    frame = pd.DataFrame(ROWS)
    path = tmp_path / f"p{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".json":
        path.write_text(json.dumps(ROWS), encoding="utf-8")  # a JSON array of objects
    else:
        frame.to_parquet(path, index=False)
    assert pairs_as_tuples(load_pairs(path)) == expected_tuples(ROWS)


def test_dataframe_source_and_missing_prompt_column() -> None:
    frame = pd.DataFrame(ROWS).drop(columns=["prompt"])
    data = load_pairs(frame)
    assert data.source == "<DataFrame>"
    assert not data.has_prompts
    assert (data.prompt == NO_PROMPT).all()
    assert data.text_of(data.chosen) == [r["chosen"] for r in ROWS]


def test_user_ids_become_strings_and_null_prompts_mean_no_prompt(tmp_path: Path) -> None:
    rows = [
        {"user_id": 7, "prompt": None, "chosen": "a", "rejected": "b"},
        {"user_id": 12, "prompt": "   ", "chosen": "b", "rejected": "a"},
        {"user_id": 7, "chosen": "c", "rejected": "a"},  # key absent entirely
    ]
    data = load_pairs(write_jsonl(tmp_path / "p.jsonl", rows))
    assert data.user_ids == ["7", "12"]
    assert (data.prompt == NO_PROMPT).all()


def test_csv_keeps_user_ids_and_texts_verbatim(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text('user_id,chosen,rejected\n007,NA,null\n1.50," padded ",x\n', encoding="utf-8")
    data = load_pairs(path)
    assert data.user_ids == ["007", "1.50"]
    assert data.text_of(data.chosen) == ["NA", " padded "]
    assert data.text_of(data.rejected) == ["null", "x"]


def test_fmt_overrides_the_suffix(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "pairs.txt", ROWS)
    assert len(load_pairs(path, fmt="jsonl")) == len(ROWS)
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(path, fmt="xml")
    assert_error(excinfo, "unknown format 'xml'", "jsonl")


# ---------------------------------------------------------------------------------------------
# Column mapping and the unordered form


def test_column_map_from_overrides_accepts_cli_names_and_ignores_none() -> None:
    columns = ColumnMap.from_overrides(user_column="worker", chosen_column="win", rejected="lose", prompt=None)
    assert columns == ColumnMap(user_id="worker", chosen="win", rejected="lose")
    assert ColumnMap.from_overrides(response_a_column="x").response_a == "x"
    with pytest.raises(ConfigError, match="unknown column option 'usr'"):
        ColumnMap.from_overrides(usr="worker")
    with pytest.raises(ConfigError, match="non-empty string"):
        ColumnMap.from_overrides(user_id="  ")


def test_mapped_columns_are_read() -> None:
    frame = pd.DataFrame({"worker": ["w1", "w2"], "post": ["p", "q"], "win": ["a", "b"], "lose": ["b", "a"]})
    columns = ColumnMap.from_overrides(user_column="worker", prompt_column="post", chosen_column="win", rejected_column="lose")
    data = load_pairs(frame, columns=columns)
    assert pairs_as_tuples(data) == [("w1", "p", "a", "b"), ("w2", "q", "b", "a")]


@pytest.mark.parametrize(
    "labels",
    [[1, -1, -1], [1, 0, 0], ["a", "b", "B"], ["1", "-1", "-1"], [True, False, False], [1.0, 0.0, 0.0]],
    ids=["plus-minus", "one-zero", "letters", "strings", "bools", "floats"],
)
def test_unordered_form_orders_pairs_by_label(labels: list) -> None:
    frame = pd.DataFrame({"user_id": ["u", "u", "v"], "response_a": ["x", "y", "z"], "response_b": ["p", "q", "r"], "label": labels})
    data = load_pairs(frame)
    assert data.text_of(data.chosen) == ["x", "q", "r"]
    assert data.text_of(data.rejected) == ["p", "y", "z"]
    assert data.meta["form"] == "response_a/response_b/label"


def test_unordered_form_from_csv(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("user_id,response_a,response_b,label\nu,x,y,b\nu,x,z,A\n", encoding="utf-8")
    data = load_pairs(path)
    assert data.text_of(data.chosen) == ["y", "x"]


def test_mixed_label_conventions_are_an_error() -> None:
    frame = pd.DataFrame({"user_id": ["u"] * 4, "response_a": list("abcd"), "response_b": list("efgh"), "label": [1, -1, 0, -1]})
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(frame)
    assert_error(excinfo, "<DataFrame>", "mixes conventions", "row 3 ", "{1, -1}, {1, 0} or {'a', 'b'}")


@pytest.mark.parametrize("bad", [2, "yes", None])
def test_label_outside_accepted_sets(tmp_path: Path, bad) -> None:
    rows = [
        {"user_id": "u", "response_a": "a", "response_b": "b", "label": 1},
        {"user_id": "u", "response_a": "a", "response_b": "c", "label": bad},
    ]
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(write_jsonl(tmp_path / "p.jsonl", rows))
    assert_error(excinfo, "p.jsonl", "outside the accepted sets", "line 2", repr(bad))


def test_missing_user_column_lists_columns_and_the_mapping_option() -> None:
    frame = pd.DataFrame({"worker": ["w"], "chosen": ["a"], "rejected": ["b"]})
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(frame)
    assert_error(
        excinfo, "<DataFrame>", "no column 'user_id'", "'worker', 'chosen', 'rejected'", "Perhaps 'worker'",
        "--user-column", "ColumnMap(user_id=",
    )


def test_missing_response_columns() -> None:
    frame = pd.DataFrame({"user_id": ["u"], "chosen": ["a"]})
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(frame)
    assert_error(excinfo, "no column 'rejected'", "--rejected-column")
    frame = pd.DataFrame({"user_id": ["u"], "text": ["a"]})
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(frame)
    assert_error(excinfo, "no column 'chosen'", "response_a", "--chosen-column")
    frame = pd.DataFrame({"user_id": ["u"], "response_a": ["a"], "response_b": ["b"]})
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(frame)
    assert_error(excinfo, "no column 'label'", "--label-column")


def test_explicitly_mapped_optional_column_must_exist() -> None:
    frame = pd.DataFrame({"user_id": ["u"], "chosen": ["a"], "rejected": ["b"]})
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(frame, columns=ColumnMap(prompt="question"))
    assert_error(excinfo, "no column 'question'", "--prompt-column")


# ---------------------------------------------------------------------------------------------
# Row validation


@pytest.mark.parametrize("bad", [None, "", "   "])
def test_null_or_empty_user_id_names_the_jsonl_line(tmp_path: Path, bad) -> None:
    rows = [dict(ROWS[0]), dict(ROWS[1], user_id=bad)]
    path = write_jsonl(tmp_path / "p.jsonl", rows, blank_after_first=True)  # the bad row is on line 3
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(path)
    assert_error(excinfo, str(path), "user id column 'user_id' is null or empty", "line 3", "fill in or remove")


@pytest.mark.parametrize("column", ["chosen", "rejected"])
@pytest.mark.parametrize("bad", [None, "", " \t\n"])
def test_empty_or_null_response_is_an_error(tmp_path: Path, column: str, bad) -> None:
    rows = [dict(r) for r in ROWS]
    rows[1][column] = bad
    rows[3][column] = bad
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(write_jsonl(tmp_path / "p.jsonl", rows))
    assert_error(excinfo, f"column {column!r} is", "lines 2, 4", "non-empty responses")


def test_csv_errors_count_data_rows(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("user_id,chosen,rejected\nu,a,b\nu,,b\nu,c,d\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(path)
    assert_error(excinfo, "data row 2 (1-based, header not counted)")


def test_identical_chosen_and_rejected(tmp_path: Path) -> None:
    rows = [dict(ROWS[0]), dict(ROWS[1], chosen="same", rejected="same "), dict(ROWS[2])]
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(write_jsonl(tmp_path / "p.jsonl", rows))
    assert_error(excinfo, "identical", "line 2", "remove these rows")


def test_many_bad_rows_are_summarised(tmp_path: Path) -> None:
    rows = [dict(ROWS[0], user_id=None) for _ in range(9)]
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(write_jsonl(tmp_path / "p.jsonl", rows))
    assert_error(excinfo, "lines 1, 2, 3, 4, 5 and 4 more (9 in all)")


def test_conversational_format_is_rejected_with_a_hint() -> None:
    frame = pd.DataFrame({"user_id": ["u"], "chosen": [[{"role": "assistant", "content": "a"}]], "rejected": ["b"]})
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(frame)
    assert_error(excinfo, "holds list values", "apply_chat_template")


def test_numbers_in_text_columns_hint_at_embeddings() -> None:
    frame = pd.DataFrame({"user_id": ["u"], "chosen": [3], "rejected": [4]})
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(frame)
    assert_error(excinfo, "instead of text", "embeddings=")


def test_split_column_is_normalised(tmp_path: Path) -> None:
    splits = ["train", "VAL", "Dev", "test"]
    frame = pd.DataFrame(ROWS).assign(split=splits, group=[0, 1, 0, 2])
    frame.to_csv(tmp_path / "p.csv", index=False)
    data = load_pairs(tmp_path / "p.csv")
    assert data.split.tolist() == ["train", "validation", "validation", "test"]
    assert data.group.tolist() == [0, 1, 0, 2]
    assert data.group.dtype == np.int64


def test_bad_split_and_group_values() -> None:
    base = pd.DataFrame(ROWS)
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(base.assign(split=["train", "holdout", "test", "train"]))
    assert_error(excinfo, "unknown values ('holdout')", "row 2 ", "val, valid, dev")
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(base.assign(split=["train", None, "test", "train"]))
    assert_error(excinfo, "empty in some rows", "row 2 ")
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(base.assign(group=[0, [1], 0, 1]))
    assert_error(excinfo, "invalid_group (1 row)", "lists or mappings", "row 2 ")


def test_an_all_empty_optional_column_is_ignored() -> None:
    data = load_pairs(pd.DataFrame(ROWS).assign(split=[None] * 4))
    assert data.split is None


# ---------------------------------------------------------------------------------------------
# File problems


def test_file_not_found_suggests_close_names(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "pairs.jsonl", ROWS)
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(tmp_path / "pair.jsonl")
    assert_error(excinfo, "pair.jsonl", "not found", "pairs.jsonl")


def test_unknown_file_type(tmp_path: Path) -> None:
    path = tmp_path / "pairs.xlsx"
    path.write_bytes(b"x")
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(path)
    assert_error(excinfo, "pairs.xlsx", "'.xlsx'", ".jsonl", "fmt=")


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("p.parquet", b"this is not parquet at all", "could not read the file as parquet"),
        ("p.csv", b"user_id,chosen,rejected\n\xff\xfe\xfa,b,c\n", "could not read the file as csv"),
        ("p.jsonl", b'{"user_id": "\xff"}\n', "could not read the file as jsonl"),
    ],
)
def test_unreadable_file(tmp_path: Path, name: str, content: bytes, fragment: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(path)
    assert_error(excinfo, str(path), fragment)


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").mkdir()
    with pytest.raises(DataFormatError, match="is a directory"):
        load_pairs(tmp_path / "d.jsonl")


def test_malformed_json_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(ROWS[0]) + '\n{"user_id": "u", "chosen": \n' + json.dumps(ROWS[1]) + "\n[1, 2]\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(path)
    assert_error(excinfo, str(path), "malformed JSON on lines 2, 4", "line 2:", "one JSON object per line")


@pytest.mark.parametrize(
    ("name", "content"),
    [("p.jsonl", ""), ("p.jsonl", "\n\n  \n"), ("p.csv", ""), ("p.csv", "user_id,prompt,chosen,rejected\n"), ("p.json", "[]")],
)
def test_empty_file_has_no_pairs(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(path)
    assert_error(excinfo, str(path), "no pairs")


def test_empty_parquet_and_dataframe_have_no_pairs(tmp_path: Path) -> None:
    empty = pd.DataFrame({c: pd.Series([], dtype=str) for c in ("user_id", "chosen", "rejected")})
    empty.to_parquet(tmp_path / "p.parquet")
    for source in (tmp_path / "p.parquet", empty):
        with pytest.raises(DataFormatError, match="no pairs"):
            load_pairs(source)


def test_loading_writes_nothing(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "p.jsonl", ROWS)
    np.save(tmp_path / "e.npy", np.ones((3, 2)))
    pd.DataFrame({"user_id": ["u"], "chosen": [0], "rejected": [1]}).to_parquet(tmp_path / "ids.parquet")
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    load_pairs(tmp_path / "p.jsonl")
    load_pairs(tmp_path / "ids.parquet", embeddings=tmp_path / "e.npy")
    with pytest.raises(DataFormatError):
        load_pairs(tmp_path / "missing.jsonl")
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


# ---------------------------------------------------------------------------------------------
# Saving


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_save_load_round_trip(tmp_path: Path, suffix: str) -> None:
    frame = pd.DataFrame(ROWS).assign(split=["train", "validation", "test", "train"], group=[0, 1, 0, 1])
    frame.loc[0, "user_id"] = "007"
    frame.loc[1, "chosen"] = "comma, \"quote\"\nnewline"
    data = load_pairs(frame)
    path = save_pairs(data, tmp_path / "sub" / f"out{suffix}")
    assert path == tmp_path / "sub" / f"out{suffix}"
    back = load_pairs(path)
    assert pairs_as_tuples(back) == pairs_as_tuples(data)
    assert back.split.tolist() == data.split.tolist()
    assert back.group.tolist() == data.group.tolist()
    assert back.texts == data.texts
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text("previous content\n", encoding="utf-8")
    data = load_pairs(pd.DataFrame(ROWS))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_pairs(data, path)
    assert path.read_text(encoding="utf-8") == "previous content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_save_rejects_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="'.txt'"):
        save_pairs(load_pairs(pd.DataFrame(ROWS)), tmp_path / "out.txt")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Precomputed embeddings


def id_frame(prompt, chosen, rejected, users=None) -> pd.DataFrame:
    users = users or ["u"] * len(chosen)
    return pd.DataFrame({"user_id": users, "prompt": prompt, "chosen": chosen, "rejected": rejected})


def test_embeddings_are_compacted_to_referenced_rows() -> None:
    matrix = np.arange(40, dtype=np.float64).reshape(10, 4)
    data = load_pairs(id_frame([9, None, ""], [2, 5, 9], [5, 7, 2]), embeddings=matrix)
    assert data.texts == ["9", "2", "5", "7"]
    assert data.embeddings.dtype == np.float32
    np.testing.assert_array_equal(data.embeddings, matrix[[9, 2, 5, 7]].astype(np.float32))
    assert data.prompt.tolist() == [0, NO_PROMPT, NO_PROMPT]
    np.testing.assert_array_equal(data.embeddings[data.chosen], matrix[[2, 5, 9]])
    np.testing.assert_array_equal(data.embeddings[data.rejected], matrix[[5, 7, 2]])
    assert data.meta["embedding_rows_total"] == 10


def test_embedding_files_npy_safetensors_parquet(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    matrix = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    np.save(tmp_path / "e.npy", matrix)
    save_file({"vectors": matrix}, str(tmp_path / "one.safetensors"))
    save_file({"embeddings": matrix, "extra": np.zeros(2, dtype=np.float32)}, str(tmp_path / "named.safetensors"))
    pd.DataFrame({"embedding": list(matrix)}).to_parquet(tmp_path / "list.parquet")
    pd.DataFrame(matrix, columns=["d0", "d1", "d2"]).to_parquet(tmp_path / "wide.parquet")
    for name in ("e.npy", "one.safetensors", "named.safetensors", "list.parquet", "wide.parquet"):
        ids, loaded = load_embeddings(tmp_path / name)
        assert ids is None, name
        assert loaded.dtype == np.float32
        np.testing.assert_array_equal(loaded, matrix)
    csv = tmp_path / "pairs.csv"
    id_frame(["", "4"], ["0", "1"], ["1", "5"]).to_csv(csv, index=False)  # ids arrive as strings from CSV
    data = load_pairs(csv, embeddings=tmp_path / "e.npy")
    np.testing.assert_array_equal(data.embeddings[data.rejected], matrix[[1, 5]])


def test_safetensors_with_several_unnamed_tensors_is_an_error(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({"a": np.zeros((2, 2), np.float32), "b": np.zeros((2, 2), np.float32)}, str(tmp_path / "e.safetensors"))
    with pytest.raises(DataFormatError, match="none named 'embeddings'"):
        load_embeddings(tmp_path / "e.safetensors")


def test_embedding_ids_column(tmp_path: Path) -> None:
    matrix = np.eye(3, dtype=np.float32)
    pd.DataFrame({"id": [100, 200, 300], "embedding": list(matrix)}).to_parquet(tmp_path / "e.parquet")
    ids, _ = load_embeddings(tmp_path / "e.parquet")
    assert ids == ["100", "200", "300"]
    data = load_pairs(id_frame([300], [100], [200]), embeddings=tmp_path / "e.parquet")
    assert data.texts == ["300", "100", "200"]
    np.testing.assert_array_equal(data.embeddings, matrix[[2, 0, 1]])
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(id_frame([None], [100], [0]), embeddings=tmp_path / "e.parquet")
    assert_error(excinfo, "references embedding rows that do not exist", "'100', '200', '300'", "row 1 ")


def test_embeddings_with_unordered_form() -> None:
    frame = pd.DataFrame({"user_id": ["u", "v"], "response_a": [0, 1], "response_b": [2, 3], "label": ["b", "a"]})
    data = load_pairs(frame, embeddings=np.eye(4))
    assert data.text_of(data.chosen) == ["2", "1"]


def test_reference_to_a_missing_embedding_row(tmp_path: Path) -> None:
    np.save(tmp_path / "e.npy", np.ones((4, 2)))
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(id_frame([None, None], [0, 1], [3, 4]), embeddings=tmp_path / "e.npy")
    assert_error(excinfo, "<DataFrame>", "'rejected' references embedding rows that do not exist", "rows 0..3", "row 2 ")
    with pytest.raises(DataFormatError, match="do not exist"):
        load_pairs(id_frame([None], [-1], [0]), embeddings=tmp_path / "e.npy")


def test_non_integer_embedding_ids() -> None:
    with pytest.raises(DataFormatError) as excinfo:
        load_pairs(id_frame([None], ["a cat"], [1]), embeddings=np.ones((3, 2)))
    assert_error(excinfo, "integer embedding row ids", "'a cat'")


def test_same_embedding_row_for_both_responses() -> None:
    with pytest.raises(DataFormatError, match="same embedding row"):
        load_pairs(id_frame([None, None], [0, 1], [2, 1]), embeddings=np.ones((3, 2)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e39])
def test_nan_or_inf_in_embeddings(tmp_path: Path, bad: float) -> None:
    matrix = np.ones((5, 3))
    matrix[3, 1] = bad
    np.save(tmp_path / "e.npy", matrix)
    with pytest.raises(DataFormatError) as excinfo:
        load_embeddings(tmp_path / "e.npy")
    assert_error(excinfo, "e.npy", "NaN or inf", "row ids (0-based) 3")
    with pytest.raises(DataFormatError, match="NaN or inf"):
        load_pairs(id_frame([None], [0], [1]), embeddings=matrix)


@pytest.mark.parametrize(
    ("array", "fragment"),
    [(np.ones(5), "2-D array"), (np.array([["a", "b"]]), "numeric"), (np.ones((0, 3)), "empty")],
)
def test_bad_embedding_arrays(tmp_path: Path, array: np.ndarray, fragment: str) -> None:
    np.save(tmp_path / "e.npy", array)
    with pytest.raises(DataFormatError, match=fragment):
        load_embeddings(tmp_path / "e.npy")


def test_pickled_npy_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "e.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataFormatError, match="never unpickles"):
        load_embeddings(tmp_path / "e.npy")


def test_embedding_file_problems(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="not found"):
        load_embeddings(tmp_path / "nope.npy")
    (tmp_path / "e.pt").write_bytes(b"x")
    with pytest.raises(DataFormatError, match="unknown embedding file type '.pt'"):
        load_embeddings(tmp_path / "e.pt")
    (tmp_path / "e.safetensors").write_bytes(b"garbage")
    with pytest.raises(DataFormatError, match="could not read"):
        load_embeddings(tmp_path / "e.safetensors")


def test_check_embedding_dim() -> None:
    data = load_pairs(id_frame([None], [0], [1]), embeddings=np.ones((2, 8)))
    check_embedding_dim(data, 8)  # passes
    check_embedding_dim(load_pairs(pd.DataFrame(ROWS)), 8)  # texts only: nothing to check
    with pytest.raises(DataFormatError) as excinfo:
        check_embedding_dim(data, 1024, "the model in runs/pal")
    assert_error(excinfo, "<DataFrame>", "dimension 8", "the model in runs/pal expects 1024-dimensional")
    with pytest.raises(DataFormatError, match="dimension 3"):
        check_embedding_dim(np.ones((4, 3)), 8)


def test_embedding_round_trip(tmp_path: Path) -> None:
    matrix = np.random.default_rng(1).normal(size=(8, 5))
    data = load_pairs(id_frame([7, None], [1, 2], [3, 7], users=["a", "b"]), embeddings=matrix)
    save_pairs(data, tmp_path / "pairs.jsonl")
    save_embeddings(data, tmp_path / "emb.parquet")
    back = load_pairs(tmp_path / "pairs.jsonl", embeddings=tmp_path / "emb.parquet")
    assert pairs_as_tuples(back) == pairs_as_tuples(data)
    np.testing.assert_array_equal(back.embeddings[back.chosen], data.embeddings[data.chosen])
    np.testing.assert_array_equal(back.embeddings[back.prompt[:1]], matrix[[7]].astype(np.float32))
    with pytest.raises(DataFormatError, match="no precomputed embeddings"):
        save_embeddings(load_pairs(pd.DataFrame(ROWS)), tmp_path / "x.parquet")
