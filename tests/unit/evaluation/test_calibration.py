"""ECE, reliability table and temperature scaling on planted probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from palrm.evaluation.calibration import expected_calibration_error, fit_temperature, reliability_table, sigmoid


def _draw(true_logits, seed=0):
    """Orient pairs as a calibrated user answers: the returned logits are the chosen response's."""
    rng = np.random.default_rng(seed)
    keep = rng.random(len(true_logits)) < sigmoid(true_logits)
    return np.where(keep, true_logits, -true_logits)


def test_calibrated_probabilities_have_small_ece_and_overconfident_ones_large():
    z = _draw(np.random.default_rng(1).normal(0, 2, 20000))
    assert expected_calibration_error(sigmoid(z)) < 0.02
    assert expected_calibration_error(sigmoid(3 * z)) > 0.08


def test_temperature_recovers_the_planted_scale():
    z = _draw(np.random.default_rng(2).normal(0, 2, 20000))
    t = fit_temperature(3 * z)
    assert t == pytest.approx(3.0, rel=0.1)
    assert expected_calibration_error(sigmoid(3 * z / t)) < 0.02


def test_reliability_table_counts_and_folding():
    rows = reliability_table(np.array([0.95, 0.05, 0.55, 0.5]), n_bins=5)
    assert sum(r["count"] for r in rows) == 4
    top = rows[-1]
    assert top["count"] == 2 and top["accuracy"] == 0.5  # 0.95 right, 0.05 wrong (folded to 0.95)
    assert rows[0]["count"] == 2 and rows[0]["accuracy"] == pytest.approx(0.75)  # 0.55 right, 0.5 a tie
    assert np.isnan(expected_calibration_error(np.array([])))
