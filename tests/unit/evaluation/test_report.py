"""palrm.evaluation.report on a planted three-group text set (hashing encoder)."""

import json
import re

import numpy as np
import pytest

from palrm.data import load_pairs
from palrm.evaluation.report import (
    build_report,
    divide_pairs,
    read_selection,
    render_html,
    selection_metrics,
    selection_rows,
)
from tests.unit.evaluation.report_data import fit_three_group, three_group_frame


@pytest.fixture(scope="module")
def fitted():
    return fit_three_group()


@pytest.fixture(scope="module")
def btl():
    return fit_three_group(kind="btl", epochs=3)[0]


@pytest.fixture(scope="module")
def report(fitted):
    model, data = fitted
    return build_report(model, data, n_boot=300)


def page_data(page: str) -> dict:
    raw = re.search(r'<script type="application/json" id="palrm-report-data">(.*?)</script>', page, re.S).group(1)
    return json.loads(raw)


def test_divide_pairs_by_user_and_split_column():
    data = load_pairs(three_group_frame())
    known = [f"user{u}" for u in range(18)]
    parts = divide_pairs(data, known)
    assert set(parts.seen_test.split) == {"test"} and set(parts.seen_test.users_present()) == set(known)
    assert set(parts.btl_train.split) == {"train"} and set(parts.btl_val.split) == {"validation"}
    assert set(parts.new_pool.users_present()) == {f"new{u}" for u in range(6)}
    assert len(parts.new_pool) == 6 * 20 and len(parts.new_test) == 6 * 20 and set(parts.new_test.split) == {"test"}
    assert parts.notes == []


def test_divide_pairs_without_split_column_splits_and_warns():
    frame = three_group_frame().drop(columns=["split"])
    parts = divide_pairs(load_pairs(frame), [f"user{u}" for u in range(18)], max_shots=10)
    assert len(parts.seen_test) == 18 * 8  # 20% of 40 pairs per user
    assert {len(parts.new_pool.for_users([u])) for u in parts.new_pool.users_present()} == {10}
    assert any("no split column" in n for n in parts.notes)


def test_report_compares_with_a_btl_trained_on_the_train_rows(report):
    assert "trained for this report on 504 train pairs" in report["btl_origin"]
    seen = report["seen"]
    assert seen["n_users"] == 18 and seen["n_pairs"] == 18 * 8
    # planted groups: PAL separates them, one shared reward cannot (each topic is liked by a third)
    assert seen["model"]["estimate"] > 0.9 and seen["btl"]["estimate"] < 0.75
    assert seen["model - btl"]["low"] > 0
    assert report["verdict"].startswith("Personalization pays")


def test_few_shot_curve_starts_at_the_population_and_does_not_touch_the_model(fitted, report):
    model, data = fitted
    curve = report["new_users"]
    assert list(curve) == ["0", "1", "2", "5", "10", "20"]
    assert all(c["n_users"] == 6 and c["n_pairs"] == 120 for c in curve.values())
    # n = 0 is the population's reward: the three groups disagree, so it is near chance
    assert curve["0"]["model"]["estimate"] < 0.7 < curve["20"]["model"]["estimate"]
    # BTL does not adapt: the same at every n
    assert len({c["btl"]["estimate"] for c in curve.values()}) == 1
    assert len(model.users_) == 18 and not any(u.startswith("new") for u in model.users_)


def test_few_shot_points_equal_adapting_each_n_separately(fitted, report):
    model, data = fitted
    import copy

    from palrm.data import take_shots

    parts = divide_pairs(data, model.users_)
    for n in (2, 10):
        m = copy.deepcopy(model).adapt(take_shots(parts.new_pool, n))
        assert m.evaluate(parts.new_test)["accuracy"] == pytest.approx(report["new_users"][str(n)]["model"]["estimate"])


def test_learned_groups_ari_and_prototype_rankings(report):
    g = report["groups"]
    assert g["k"] == 3 and np.asarray(g["weights"]).shape == (18, 3)
    assert np.allclose(np.asarray(g["weights"]).sum(1), 1, atol=1e-5)
    ari = g["ari"]
    assert ari["n_users"] == 18 and ari["true_groups"] == [u % 3 for u in range(18)]
    assert -0.5 <= ari["value"] <= 1
    for p in g["prototypes"]:
        rewards = [x["reward"] for x in p["highest"]] + [x["reward"] for x in p["lowest"]][::-1]
        assert rewards == sorted(rewards, reverse=True)
        assert len(p["highest"]) == 5 and all(x["prompt"] == "Which pet?" for x in p["highest"])


def test_html_is_self_contained_and_holds_every_section(report):
    page = render_html(report)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert page.count('src="data:image/png;base64,') == 3  # few-shot, per-user, simplex
    for heading in ("vs BTL", "Accuracy vs K", "few-shot curve", "per-user accuracy", "Learned groups"):
        assert heading in page
    assert "Skipped: no selection.json" in page
    assert page_data(page)["seen"]["model"]["estimate"] == report["seen"]["model"]["estimate"]


def test_texts_are_escaped(report):
    import copy

    result = copy.deepcopy(report)
    result["groups"]["prototypes"][0]["highest"][0]["response"] = "<script>alert(1)</script> cats"
    result["data"]["source"] = "<b>file</b>.jsonl"
    page = render_html(result)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page and "&lt;b&gt;file" in page
    assert page_data(page)["groups"]["prototypes"][0]["highest"][0]["response"].startswith("<script>")


def candidate(name, kind, k, acc, held1, held20):
    """A row in the shape palrm's model selection writes (evaluation/selection.py)."""
    return {"name": name, "kind": kind, "k": k, "offset": "none",
            "known": {"log_loss": 1 - acc, "accuracy": acc, "n_pairs": 50},
            "heldout": {"0": {"accuracy": 0.6, "log_loss": 0.7, "n_pairs": 40}, "1": {"accuracy": held1, "log_loss": 0.6, "n_pairs": 40},
                        "20": {"accuracy": held20, "log_loss": 0.5, "n_pairs": 40}},
            "heldout_mean_log_loss": 0.55, "score": 1 - acc, "epochs": 12}


SELECTION = {
    "candidates": [candidate("btl", "btl", 1, 0.61, 0.61, 0.61)]
    + [candidate(f"pal-b K={k}", "pal-b", k, 0.7 + 0.05 * k, 0.62 + 0.01 * k, 0.65 + 0.02 * k) for k in (1, 2, 3, 4)]
    + [candidate(f"pal-b K={k} + latent offset", "pal-b", k, 0.72 + 0.05 * k, 0.6, 0.7) for k in (1, 2)],
    "winner": "pal-b K=3",
    "why": "lowest validation score 0.1500",
    "shots": [1, 20],
}


def test_selection_json_from_the_run_directory(tmp_path, fitted, btl):
    model, data = fitted
    (tmp_path / "model").mkdir()
    (tmp_path / "selection.json").write_text(json.dumps(SELECTION))
    selection, path = read_selection(tmp_path / "model")
    assert path == str(tmp_path / "selection.json")
    rows = selection_rows(selection)
    assert [r["k"] for r in rows] == [None, 1, 2, 3, 4, 1, 2]  # BTL: no K
    assert [r["family"] for r in rows] == ["btl"] + ["pal-b"] * 4 + ["pal-b + latent offset"] * 2
    assert [r["name"] for r in rows if r["winner"]] == ["pal-b K=3"]
    assert rows[2]["metrics"]["known.accuracy"] == pytest.approx(0.8)
    plotted, tabled = selection_metrics(rows)
    assert plotted == ["known.accuracy", "heldout.1.accuracy", "heldout.20.accuracy"]
    assert tabled[:3] == ["known.log_loss", "known.accuracy", "heldout_mean_log_loss"] and "known.n_pairs" not in tabled
    page = render_html(build_report(model, data, btl=btl, selection=selection, selection_path=path, n_boot=50))
    assert "Skipped" not in page and "lowest validation score 0.1500" in page and "pal-b K=3 ★" in page
    assert page.count("data:image/png") == 4


def test_selection_rows_of_another_shape():
    rows = selection_rows({"candidates": {"a": {"K": 2, "val": {"acc": 0.7}}, "b": {"params": {"k": 3}, "val": {"acc": 0.8}}},
                           "winner": {"name": "b"}})
    assert [(r["name"], r["k"], r["winner"]) for r in rows] == [("a", 2, False), ("b", 3, True)]
    assert selection_metrics(rows)[0] == ["val.acc"]


def test_read_selection_absent(tmp_path):
    assert read_selection(tmp_path) == (None, None)


def test_k2_model_gets_histograms_and_a_btl_model_reports_itself(fitted, btl):
    _, data = fitted
    k2, _ = fit_three_group(k=2, epochs=3)
    r = build_report(k2, data, btl=btl, n_boot=50)
    assert r["btl_origin"] == "a saved BTL model" and "model - btl" in r["seen"]
    assert "weights" in r["figures"] and r["groups"]["k"] == 2
    r = build_report(btl, data, n_boot=50)
    assert r["btl_origin"].startswith("the model itself is BTL") and "groups" not in r
    assert r["verdict"].startswith("The model is BTL")
    assert "btl" not in r["seen"] and len({c["model"]["estimate"] for c in r["new_users"].values()}) == 1


def test_report_on_precomputed_embeddings(synthetic):
    """Image-style data (vectors, no texts): scores go through reward_embeddings; new users without a split column."""
    from palrm import PALRewardModel
    from palrm.data import split_pairs

    seen = synthetic.pairs.for_users(synthetic.seen_users).compact_users()
    parts = split_pairs(seen, val_frac=0.1, test_frac=0.2, seed=0)
    model = PALRewardModel(kind="pal-a", k=3, epochs=10, hidden=[16], d=4, progress=False).fit(parts.train, parts.validation)
    r = build_report(model, synthetic.pairs, n_boot=50, ns=(0, 5))
    assert r["seen"]["n_users"] == len(synthetic.seen_users) and r["new_users"]["5"]["n_users"] == len(synthetic.unseen_users)
    assert any("no split column" in n for n in r["notes"])
    assert r["new_users"]["5"]["model"]["estimate"] > r["new_users"]["0"]["model"]["estimate"]
    top = r["groups"]["prototypes"][0]["highest"][0]
    assert top["response"] in synthetic.pairs.texts and top["prompt"] == ""  # embedding row ids; no prompts
    assert "ari" in r["groups"]
