"""Calibration of P(chosen preferred): expected calibration error, reliability table, temperature.

Every pair is stored with the preferred response first, so the raw label is always 1. Calibration is
measured on the folded (top-label) form: confidence q = max(p, 1 - p) in [0.5, 1] and correct = [p > 0.5]
(a tie p = 0.5 counts as half right). With B equal-width confidence bins over [0.5, 1]:

    ECE = sum_b (n_b / n) * |mean correct in b - mean q in b|

Temperature scaling divides every logit by T > 0, T = argmin_T mean softplus(-z / T) over
*validation* pairs (one parameter; it never changes which response is preferred, only how sure).
"""

from __future__ import annotations

import numpy as np


def _fold(prob_chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(prob_chosen, dtype=np.float64).reshape(-1)
    return np.maximum(p, 1 - p), np.where(p > 0.5, 1.0, np.where(p < 0.5, 0.0, 0.5))


def reliability_table(prob_chosen: np.ndarray, n_bins: int = 10) -> list[dict]:
    """Per confidence bin over [0.5, 1]: {"lo", "hi", "count", "confidence", "accuracy"} (empty bins kept, NaN means)."""
    conf, correct = _fold(prob_chosen)
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        m = which == b
        rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": int(m.sum()),
                     "confidence": float(conf[m].mean()) if m.any() else float("nan"),
                     "accuracy": float(correct[m].mean()) if m.any() else float("nan")})
    return rows


def expected_calibration_error(prob_chosen: np.ndarray, n_bins: int = 10) -> float:
    """ECE of the folded probabilities (0 = perfectly calibrated); NaN for no pairs."""
    rows = reliability_table(prob_chosen, n_bins)
    n = sum(r["count"] for r in rows)
    if n == 0:
        return float("nan")
    return float(sum(r["count"] / n * abs(r["accuracy"] - r["confidence"]) for r in rows if r["count"]))


def fit_temperature(val_logits: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """T minimising the validation log-loss of sigmoid(z / T) (bounded 1-d search on log T)."""
    from scipy.optimize import minimize_scalar

    z = np.asarray(val_logits, dtype=np.float64).reshape(-1)
    z = z[np.isfinite(z)]
    if len(z) == 0:
        return 1.0
    res = minimize_scalar(lambda lt: float(np.logaddexp(0.0, -z / np.exp(lt)).mean()),
                          bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -np.asarray(z, dtype=np.float64)))
