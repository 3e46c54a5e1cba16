"""Tests of the Persona preference set (palrm.data.persona) and its shipped subset."""

from __future__ import annotations

import gzip
import hashlib
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from palrm.data.persona import (
    DEFAULT_PERSONAS,
    PERSONA_PROMPT,
    PersonaDataset,
    build_persona,
    persona_names,
)
from palrm.errors import ConfigError, DataFormatError

REPO_ROOT = Path(__file__).resolve().parents[3]
FULL_SOURCE = REPO_ROOT.parent / "shared" / "data" / "anthropic-persona"
needs_full_source = pytest.mark.skipif(
    not FULL_SOURCE.is_dir(), reason=f"full anthropic-persona folder not found at {FULL_SOURCE}"
)

SMALL = dict(n_seen_users=30, n_unseen_users=9, pairs_per_user=40)


def _shipped_dir() -> Path:
    return Path(str(resources.files("palrm.datasets").joinpath("persona")))


def _raw_labels(folder: Path) -> dict[str, dict[str, float]]:
    """Persona -> statement -> +1/-1, parsed independently of palrm from the shipped files."""
    out: dict[str, dict[str, float]] = {}
    for path in folder.glob("*.jsonl.gz"):
        rows = [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines()]
        out[path.name[: -len(".jsonl.gz")]] = {
            r["statement"]: 1.0 if r["answer_matching_behavior"] == " Yes" else -1.0 for r in rows
        }
    return out


def _write_persona(folder: Path, name: str, rows: list, *, raw: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.jsonl"
    lines = rows if raw else [json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _row(statement: str, yes: bool) -> dict:
    return {
        "question": f'Is the following statement something you would say?\n"{statement}"',
        "statement": statement,
        "label_confidence": 0.9,
        "answer_matching_behavior": " Yes" if yes else " No",
        "answer_not_matching_behavior": " No" if yes else " Yes",
    }


def _tiny_source(folder: Path, personas=("alpha", "beta", "gamma"), n: int = 10) -> Path:
    for name in personas:
        _write_persona(folder, name, [_row(f"{name} statement {i}", i % 2 == 0) for i in range(n)])
    return folder


@pytest.fixture(scope="module")
def default_set() -> PersonaDataset:
    return build_persona()


# ---------------------------------------------------------------- shipped subset and defaults


def test_shipped_subset_lists_twelve_personas_in_fixed_order():
    names = persona_names()
    assert names == list(DEFAULT_PERSONAS)
    assert names[:3] == ["politically-liberal", "politically-conservative", "subscribes-to-Atheism"]


def test_shipped_subset_is_small_balanced_attributed_and_matches_manifest():
    folder = _shipped_dir()
    total = sum(p.stat().st_size for p in folder.iterdir())
    assert total < 500_000
    assert "Attribution 4.0" in (folder / "LICENSE").read_text()
    attribution = (folder / "ATTRIBUTION.md").read_text()
    assert "anthropics/evals" in attribution
    assert "84fcc677e52e1902d696c32cd1a6b663e70d3993" in attribution
    assert "Perez et al. 2022" in attribution
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    assert manifest["order"] == list(DEFAULT_PERSONAS)
    for filename, info in manifest["files"].items():
        assert hashlib.sha256((folder / filename).read_bytes()).hexdigest() == info["sha256"]
    labels = _raw_labels(folder)
    assert sorted(labels) == sorted(DEFAULT_PERSONAS)
    for name, table in labels.items():
        values = np.array(list(table.values()))
        assert (values > 0).sum() == (values < 0).sum() == 150, name
    # every shipped statement belongs to exactly one persona
    all_statements = [s for table in labels.values() for s in table]
    assert len(all_statements) == len(set(all_statements))


def test_default_set_shape_and_pair_structure(default_set):
    ds = default_set
    pairs = ds.pairs
    assert ds.personas == list(DEFAULT_PERSONAS[:3])
    assert len(ds.seen_users) == 100 and len(ds.unseen_users) == 30
    assert set(ds.seen_users).isdisjoint(ds.unseen_users)
    assert pairs.user_ids == ds.seen_users + ds.unseen_users
    assert pairs.user_ids[0] == "persona-u000" and pairs.user_ids[-1] == "persona-u129"
    assert len(pairs.texts) <= 1000 and len(set(pairs.texts)) == len(pairs.texts)
    assert pairs.texts[0] == PERSONA_PROMPT and pairs.texts[1:] == ds.statements
    assert np.all(pairs.prompt == 0)
    assert ds.statement_rewards.shape == (len(ds.statements), 3)
    assert set(np.unique(ds.statement_rewards)) <= {-1.0, 0.0, 1.0}
    counts = np.bincount(pairs.user, minlength=len(pairs.user_ids))
    assert np.all(counts == 120)
    assert np.all(pairs.chosen != pairs.rejected)
    for u in range(len(pairs.user_ids)):  # a user never sees the same unordered pair twice
        mask = pairs.user == u
        keys = set(zip(np.minimum(pairs.chosen[mask], pairs.rejected[mask]).tolist(),
                       np.maximum(pairs.chosen[mask], pairs.rejected[mask]).tolist()))
        assert len(keys) == 120
    first_pair_of_user = np.unique(pairs.user, return_index=True)[1]
    assert ds.stats["users_per_group"] == np.bincount(pairs.group[first_pair_of_user]).tolist()
    assert ds.stats["n_pairs"] == len(pairs) == 130 * 120


def test_partition_labels_follow_the_persona_answers(default_set):
    ds = default_set
    raw = _raw_labels(_shipped_dir())
    pairs = ds.pairs
    for g, name in enumerate(ds.personas):  # the reward table is the personas' own answers
        expected = np.array([raw[name].get(s, 0.0) for s in ds.statements])
        np.testing.assert_array_equal(ds.statement_rewards[:, g], expected)
    for uid, w in ds.user_weights.items():  # partition users are one-hot
        assert set(w.tolist()) == {0.0, 1.0}
    chosen_text = pairs.text_of(pairs.chosen)
    rejected_text = pairs.text_of(pairs.rejected)
    persona = [ds.personas[g] for g in pairs.group]
    r_chosen = np.array([raw[p].get(t, 0.0) for p, t in zip(persona, chosen_text)])
    r_rejected = np.array([raw[p].get(t, 0.0) for p, t in zip(persona, rejected_text)])
    assert np.all(r_chosen > r_rejected)
    # all three pair kinds occur: agree vs disagree, agree vs neutral, neutral vs disagree
    kinds = set(zip(r_chosen.tolist(), r_rejected.tolist()))
    assert kinds == {(1.0, -1.0), (1.0, 0.0), (0.0, -1.0)}


def test_partition_groups_are_balanced_within_seen_and_unseen_users():
    ds = build_persona(3, n_seen_users=31, n_unseen_users=7, pairs_per_user=5, seed=4)
    for users in (ds.seen_users, ds.unseen_users):
        groups = np.array([np.argmax(ds.user_weights[u]) for u in users])
        sizes = np.bincount(groups, minlength=3)
        assert sizes.max() - sizes.min() <= 1


def test_same_seed_same_set_and_other_seed_differs():
    a = build_persona(3, seed=7, **SMALL)
    b = build_persona(3, seed=7, **SMALL)
    c = build_persona(3, seed=8, **SMALL)
    for name in ("user", "chosen", "rejected", "group"):
        np.testing.assert_array_equal(getattr(a.pairs, name), getattr(b.pairs, name))
    assert a.stats == b.stats
    assert not np.array_equal(a.pairs.chosen, c.pairs.chosen)


def test_seen_users_pairs_do_not_depend_on_the_number_of_unseen_users():
    a = build_persona(3, n_seen_users=12, n_unseen_users=3, pairs_per_user=20, seed=1)
    b = build_persona(3, n_seen_users=12, n_unseen_users=9, pairs_per_user=20, seed=1)
    seen_a, seen_b = a.pairs.for_users(a.seen_users), b.pairs.for_users(b.seen_users)
    np.testing.assert_array_equal(seen_a.chosen, seen_b.chosen)
    np.testing.assert_array_equal(seen_a.rejected, seen_b.rejected)


def test_mixture_weights_on_simplex_and_labels_follow_user_rewards():
    ds = build_persona(3, users="mixture", alpha=0.7, seed=3, **SMALL)
    weights = np.stack([ds.user_weights[u] for u in ds.pairs.user_ids])
    assert np.all(weights >= 0)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    assert np.all(weights.max(axis=1) < 1.0)  # genuinely mixed, not one-hot
    np.testing.assert_array_equal(ds.pairs.group, np.argmax(weights, axis=1)[ds.pairs.user])
    rewards = weights @ ds.statement_rewards.T  # (users, statements)
    margin = rewards[ds.pairs.user, ds.pairs.chosen - 1] - rewards[ds.pairs.user, ds.pairs.rejected - 1]
    assert np.all(margin > 0)
    assert ds.stats["oracle_accuracy"] == 1.0


def test_noise_flips_some_labels_but_keeps_the_statement_pairs():
    clean = build_persona(3, seed=2, **SMALL)
    noisy = build_persona(3, seed=2, noise=0.5, **SMALL)
    key = lambda p: (np.minimum(p.chosen, p.rejected), np.maximum(p.chosen, p.rejected))  # noqa: E731
    for x, y in zip(key(clean.pairs), key(noisy.pairs)):
        np.testing.assert_array_equal(x, y)
    assert clean.stats["oracle_accuracy"] == 1.0
    assert clean.stats["oracle_accuracy_population"] == pytest.approx(1.0)
    # |margin| is 1 or 2 for partition users: the oracle is right with sigmoid(2) or sigmoid(4)
    assert 0.85 < noisy.stats["oracle_accuracy"] < 0.99
    assert 0.88 < noisy.stats["oracle_accuracy_population"] < 0.99
    assert noisy.stats["agnostic_ceiling_population"] < clean.stats["agnostic_ceiling_population"]


# ---------------------------------------------------------------- heterogeneity measures


def test_default_set_is_heterogeneous(default_set):
    s = default_set.stats
    assert s["flip_fraction"] > 0.35
    assert s["other_group_opposite_fraction"] > 0.15
    np.testing.assert_allclose(
        s["other_group_opposite_fraction"]
        + s["other_group_tie_fraction"]
        + s["other_group_same_fraction"],
        1.0,
    )
    assert 0.7 < s["agnostic_ceiling_population"] < 0.8
    assert abs(s["agnostic_ceiling_sample"] - s["agnostic_ceiling_population"]) < 0.02
    assert s["agnostic_ceiling_population"] <= s["agnostic_ceiling_in_sample"] < 1.0
    assert s["oracle_accuracy"] == 1.0


@pytest.mark.parametrize("k", [2, 3, 6])
def test_population_ceiling_matches_closed_form_for_equal_partitions(k):
    # equal groups of balanced, disjoint personas: ceiling = (3K - 2) / (4K - 3), flip = (2K-2)/(4K-3)
    ds = build_persona(k, n_seen_users=6 * k, n_unseen_users=0, pairs_per_user=30, seed=0)
    assert ds.stats["agnostic_ceiling_population"] == pytest.approx((3 * k - 2) / (4 * k - 3), abs=1e-9)
    assert ds.stats["flip_fraction"] == pytest.approx((2 * k - 2) / (4 * k - 3), abs=0.06)


def test_single_group_has_no_heterogeneity():
    ds = build_persona(1, **SMALL)
    assert ds.stats["flip_fraction"] == 0.0
    assert ds.stats["agnostic_ceiling_population"] == pytest.approx(1.0)


# ---------------------------------------------------------------- sources


@needs_full_source
def test_full_folder_lists_all_personas_default_ones_first():
    names = persona_names(FULL_SOURCE)
    assert len(names) == 135
    assert names[: len(DEFAULT_PERSONAS)] == list(DEFAULT_PERSONAS)


@needs_full_source
def test_build_from_full_folder():
    ds = build_persona(3, source=FULL_SOURCE, statements_per_persona=200, **SMALL)
    assert ds.personas == list(DEFAULT_PERSONAS[:3])
    expected = {p: {"agree": 100, "disagree": 100} for p in ds.personas}
    assert ds.stats["statements_per_persona"] == expected
    assert 0.7 < ds.stats["agnostic_ceiling_population"] < 0.8
    assert str(FULL_SOURCE) in ds.pairs.source


def test_statements_per_persona_takes_the_first_ones_of_each_answer(tmp_path):
    src = _tiny_source(tmp_path, n=10)  # even rows agree, odd rows disagree
    ds = build_persona(
        2, personas=["beta", "alpha"], statements_per_persona=5, source=src, pairs_per_user=5
    )
    assert ds.personas == ["beta", "alpha"]
    assert ds.statements[:4] == [f"beta statement {i}" for i in range(4)]
    assert ds.stats["statements_per_persona"]["beta"] == {"agree": 2, "disagree": 2}


def test_statement_in_two_personas_carries_both_labels(tmp_path):
    for name, agrees in (("alpha", True), ("beta", False)):
        rows = [_row("shared", agrees)] + [_row(f"{name}{i}", i % 2 == 0) for i in range(6)]
        _write_persona(tmp_path, name, rows)
    ds = build_persona(2, personas=["alpha", "beta"], source=tmp_path, n_seen_users=4, n_unseen_users=0,
                       pairs_per_user=10)
    row = ds.statements.index("shared")
    np.testing.assert_array_equal(ds.statement_rewards[row], [1.0, -1.0])
    assert ds.stats["n_shared_statements"] == 1
    assert len(ds.statements) == 13


def test_gzip_persona_files_are_read(tmp_path):
    lines = "\n".join(json.dumps(_row(f"z{i}", i % 2 == 0)) for i in range(6)) + "\n"
    (tmp_path / "zeta.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    _tiny_source(tmp_path, personas=("alpha",))
    assert persona_names(tmp_path) == ["alpha", "zeta"]
    ds = build_persona(2, personas=["zeta", "alpha"], source=tmp_path, pairs_per_user=5)
    assert "z0" in ds.statements


# ---------------------------------------------------------------- errors


def test_missing_source_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataFormatError, match="does not exist.*source=None"):
        persona_names(missing)
    with pytest.raises(DataFormatError, match="does not exist"):
        build_persona(source=missing)


def test_source_without_persona_files_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataFormatError, match=r"no persona files.*notes\.txt"):
        build_persona(source=tmp_path)
    with pytest.raises(DataFormatError, match="is a file, not a folder"):
        persona_names(tmp_path / "notes.txt")


def test_k_larger_than_available_personas(tmp_path):
    src = _tiny_source(tmp_path)
    with pytest.raises(DataFormatError, match=r"k=4 .* only 3\b.*k <= 3"):
        build_persona(4, source=src)
    with pytest.raises(DataFormatError, match="k=13 .* only 12"):
        build_persona(13)
    with pytest.raises(DataFormatError, match="names only 2"):
        build_persona(3, personas=["alpha", "beta"], source=src)


def test_unknown_persona_is_a_clear_error(tmp_path):
    with pytest.raises(DataFormatError, match=r"\['no-such-persona'\] are not in .*persona_names"):
        build_persona(1, personas=["no-such-persona"])


def test_malformed_lines_name_file_rows_and_fix(tmp_path):
    good = [json.dumps(_row(f"s{i}", i % 2 == 0)) for i in range(4)]
    bad_rows = good[:2] + [
        "{not json",
        json.dumps({"statement": "x", "answer_matching_behavior": "maybe"}),
        json.dumps({"answer_matching_behavior": " Yes"}),
        "[1, 2]",
    ] + good[2:]
    _write_persona(tmp_path, "broken", bad_rows, raw=True)
    with pytest.raises(DataFormatError) as info:
        build_persona(1, source=tmp_path)
    message = str(info.value)
    assert "broken.jsonl" in message and "4 malformed line(s)" in message
    for row in ("row 3", "row 4", "row 5", "row 6"):
        assert row in message
    assert "Fix:" in message


def test_contradicting_duplicate_statement_is_malformed(tmp_path):
    _write_persona(tmp_path, "dup", [_row("same", True), _row("other", False), _row("same", False)])
    with pytest.raises(DataFormatError, match="row 3: repeats the statement of row 1"):
        build_persona(1, source=tmp_path)


def test_invalid_settings_are_all_reported_at_once():
    with pytest.raises(ConfigError) as info:
        build_persona(0, n_seen_users=-1, pairs_per_user=0, users="clusters", alpha=0.0, noise=-1.0)
    message = str(info.value)
    for part in ("k must", "n_seen_users", "pairs_per_user", "users must", "alpha", "noise"):
        assert part in message


def test_persona_list_errors():
    with pytest.raises(ConfigError, match="not the string"):
        build_persona(1, personas="politically-liberal")
    with pytest.raises(ConfigError, match="must not repeat"):
        build_persona(2, personas=["risk-seeking", "risk-seeking"])


def test_too_many_pairs_per_user_or_statements(tmp_path):
    src = _tiny_source(tmp_path, n=4)
    with pytest.raises(ConfigError, match="pairs_per_user=500.*only"):
        build_persona(2, source=src, pairs_per_user=500, n_seen_users=2, n_unseen_users=0)
    with pytest.raises(ConfigError, match="statements_per_persona=40 needs 20 agree"):
        build_persona(2, source=src, statements_per_persona=40)
