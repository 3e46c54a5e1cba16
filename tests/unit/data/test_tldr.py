"""Tests for the Reddit TL;DR length-variant builder (palrm.data.tldr), on small fixtures written in
the exact format of openai/summarize_from_feedback's comparisons files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from palrm.data.tldr import build_tldr, is_supervised_policy
from palrm.errors import DataFormatError

# worker -> number of sup-vs-sup comparisons with different lengths; w00 busiest.
COUNTS = {f"w{i:02d}": 30 - i for i in range(12)} | {"rare1": 4, "rare2": 2}


def _record(worker: str, k: int, policies=("sup1", "sup2"), same_length=False, choice=None) -> dict:
    short = f"short summary {k}"
    long = short + " with some more words" * (1 + k % 3)
    texts = (short, short.replace("short", "SHORT")) if same_length else (
        (short, long) if k % 2 else (long, short))
    return {
        "info": {"id": f"t3_{worker}_{k}", "post": f"Post {k % 7} about things.", "title": f"title {k}",
                 "subreddit": "relationships", "site": None, "article": None},
        "split": "train",
        "summaries": [{"text": " " + texts[0], "policy": policies[0], "note": None},
                      {"text": " " + texts[1], "policy": policies[1], "note": None}],
        "choice": k % 2 if choice is None else choice,
        "worker": worker,
        "batch": "batch3",
        "extra": {"confidence": 7},
    }


def _write(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.fixture
def comparisons_dir(tmp_path: Path) -> Path:
    records = []
    for worker, n in COUNTS.items():
        records += [_record(worker, k) for k in range(n)]
    # Noise the builder must filter out: PPO / reference / pretrained policies, equal lengths, CNN/DM.
    records += [_record("w11", 100 + k, policies=("sup4_ppo_rm3_kl10", "sup2")) for k in range(40)]
    records += [_record("w10", 200 + k, policies=("ref", "sup1")) for k in range(5)]
    records += [_record("w10", 300 + k, policies=("pretrain_6b_t0.7", "pretrain_1b")) for k in range(5)]
    records += [_record("w09", 400 + k, same_length=True) for k in range(6)]
    cnndm = _record("w00", 500)
    cnndm["info"] = {"id": "cnn1", "post": None, "article": "An article.", "site": "cnn.com"}
    records.append(cnndm)
    half = len(records) // 2
    _write(tmp_path / "batch3.json", records[:half])
    _write(tmp_path / "batch4.jsonl", records[half:] + [""])  # blank line tolerated
    (tmp_path / "README.txt").write_text("not data")
    return tmp_path


def test_policy_rule():
    assert is_supervised_policy("sup1") and is_supervised_policy("sup4_t0.7") and is_supervised_policy("SUP2")
    assert not is_supervised_policy("sup4_ppo_rm3_kl10")
    assert not is_supervised_policy("ref") and not is_supervised_policy("pretrain_6b_t0.7")


def test_recipe(comparisons_dir: Path):
    ds = build_tldr(comparisons_dir, n_seen=10, n_seen_longer=7, min_unseen_pairs=10, seed=0)
    assert ds.seen_users == [f"w{i:02d}" for i in range(10)]  # busiest first, noise not counted
    assert ds.unseen_users == ["w10", "w11"]  # rare1/rare2 below min_unseen_pairs
    assert sum(ds.user_prefers_longer[u] for u in ds.seen_users) == 7
    assert sum(ds.user_prefers_longer[u] for u in ds.unseen_users) == 1  # round(2 * 7 / 10)
    pairs = ds.pairs
    assert len(pairs) == sum(COUNTS[u] for u in ds.seen_users + ds.unseen_users)
    assert pairs.user_ids == ds.seen_users + ds.unseen_users
    assert np.all(np.diff(pairs.user) >= 0)  # seen users' pairs first
    chosen, rejected = pairs.text_of(pairs.chosen), pairs.text_of(pairs.rejected)
    for i, uid in enumerate(pairs.pair_user_ids):
        longer_won = len(chosen[i].strip()) > len(rejected[i].strip())
        assert longer_won == ds.user_prefers_longer[uid]
        assert pairs.group[i] == int(ds.user_prefers_longer[uid])
    prompts = set(pairs.text_of(pairs.prompt))
    assert prompts and all(p.startswith("Human: Post ") and p.endswith(" Assistant:") for p in prompts)
    assert len(pairs.texts) == len(set(pairs.texts))  # each text stored once
    assert not any("SHORT" in t for t in pairs.texts)  # equal-length pairs dropped
    assert ds.stats["skipped_policy"] == 50 and ds.stats["skipped_equal_length"] == 6
    assert ds.stats["skipped_not_reddit"] == 1
    assert ds.agrees_with_human.shape == (len(pairs),) and ds.agrees_with_human.dtype == bool
    assert 0 < ds.agrees_with_human.mean() < 1


def test_deterministic_and_seeded(comparisons_dir: Path):
    a = build_tldr(comparisons_dir, min_unseen_pairs=10, seed=3)
    b = build_tldr(comparisons_dir, min_unseen_pairs=10, seed=3)
    assert a.user_prefers_longer == b.user_prefers_longer
    np.testing.assert_array_equal(a.pairs.chosen, b.pairs.chosen)
    assignments = {tuple(sorted(build_tldr(comparisons_dir, seed=s).user_prefers_longer.items()))
                   for s in range(6)}
    assert len(assignments) > 1


def test_single_file_and_custom_policy_filter(tmp_path: Path):
    records = [_record(w, k, policies=("sup4_ppo_rm3_kl10", "sup1")) for w in ("a", "b") for k in range(3)]
    file = _write(tmp_path / "one.jsonl", records)
    with pytest.raises(DataFormatError, match="only 0 workers"):
        build_tldr(file, n_seen=2, n_seen_longer=1)
    ds = build_tldr(file, n_seen=2, n_seen_longer=1, policy_filter=lambda name: True)
    assert len(ds.pairs) == 6 and ds.unseen_users == []


def test_missing_path_and_empty_dir(tmp_path: Path):
    with pytest.raises(DataFormatError, match="no such file"):
        build_tldr(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataFormatError, match=r"no \*\.json or \*\.jsonl"):
        build_tldr(tmp_path)


def test_malformed_lines_are_reported_with_line_numbers(tmp_path: Path):
    good = _record("w", 1)
    no_post = _record("w", 2)
    del no_post["info"]["post"]
    three = _record("w", 3)
    three["summaries"].append({"text": "x", "policy": "sup1"})
    records = [good, "{not json", {k: v for k, v in good.items() if k != "worker"}, no_post, three,
               _record("w", 4, choice=2), "[1, 2]"]
    file = _write(tmp_path / "bad.json", records)
    with pytest.raises(DataFormatError) as info:
        build_tldr(file, n_seen=1, n_seen_longer=1)
    message = str(info.value)
    assert "bad.json" in message and "6 malformed" in message
    for fragment in ("line 2: invalid JSON", "line 3: missing field(s) ['worker']", "line 4: missing field",
                     "info.post", "line 5", "list of two", "line 6", "got 2", "... and 1 more"):
        assert fragment in message
    assert "fix or remove" in message
