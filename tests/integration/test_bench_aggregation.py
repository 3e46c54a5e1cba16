"""The aggregation suite end to end (smoke profile): summary.json carries the issue's keys, the plot
and the docs block are written. No figure is asserted here: the smoke models train for 3 epochs."""

from __future__ import annotations

import json

import pytest

POPULATIONS = ("synthetic_10to1", "synthetic_3to1", "persona_10to1", "persona_3to1")
AGGREGATES = ("btl", "mean", "maxmin", "alpha:1")


@pytest.mark.slow
def test_aggregation_suite_smoke_writes_the_issue_keys(tmp_path):
    from palrm.bench.aggregation import run_aggregation
    from palrm.bench.report import update_docs

    out = tmp_path / "results" / "aggregation"
    run_aggregation(out, profile="smoke", seed=0, say=lambda m: None)
    summary = json.loads((out / "summary.json").read_text())
    for pop in POPULATIONS:
        for agg in AGGREGATES:
            for metric in ("group_win_rate", "group_reward"):
                for group in ("majority", "minority"):
                    value = summary[pop][agg][metric][group]
                    assert isinstance(value, float), (pop, agg, metric, group)
                    if metric == "group_win_rate":
                        assert 0.0 <= value <= 1.0
        assert set(summary[pop]["by_n"]) == {"4"}  # smoke: N = 4 and the summary's N = 16
    assert set(summary["checks"]) >= {"synthetic_10to1_target_met", "synthetic_10to1_minority_gain_over"}
    assert summary["cost"]["overhead_vs_one_user"].keys() >= {"maxmin", "mean"}
    assert (out / "aggregation.png").stat().st_size > 1000
    doc = tmp_path / "docs" / "benchmarks.md"
    doc.parent.mkdir()
    doc.write_text("# Benchmarks\n")
    update_docs(doc, tmp_path / "results", ["aggregation"])
    text = doc.read_text()
    assert "<!-- palrm-bench:aggregation:start -->" in text and "synthetic_10to1" in text
    assert (doc.parent / "img" / "bench" / "aggregation.png").is_file()
