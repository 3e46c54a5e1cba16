"""Perf-suite pieces run (no timing is asserted: speed lives in `palrm bench --suite perf`)."""

from __future__ import annotations

from palrm.bench.perf import scale_point


def test_scale_point_reports_time_and_memory_fields():
    row = scale_point(50, 4, batch_size=64)
    assert row["n_pairs"] == 200 and row["n_users"] == 50
    for key in ("epoch_s", "fit_s", "pairs_per_s", "rss_before_fit_mb", "peak_rss_during_fit_mb"):
        assert row[key] is not None and row[key] >= 0
