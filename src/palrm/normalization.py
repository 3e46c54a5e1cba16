"""Reward normalisation: one affine map r -> (r - mean) / std, measured once on a reference set.

Raw PAL rewards are negative squared distances (about -120 for the quickstart model, with
differences of 1-3 between responses), which is an awkward scale for an RL trainer. As OpenRLHF's
reward server does (``--normalize_reward``), palrm can return

    r_norm(u, x, y) = (r(u, x, y) - mean) / std

with ``mean`` and ``std`` measured on a reference set: by default the training responses, i.e. the
rewards r(u_i, x_i, y) of every training pair's user for its chosen and its rejected response
(2 x n_pairs numbers). The statistics are stored with the model (``config.json``,
``reward_normalization``) and copied into every export, so the library, the CLI, the TRL reward
function, the exported model and the HTTP service apply the same map. Differences scale by 1 / std,
so preference probabilities from normalised rewards need the raw rewards (or a temperature std).
Raw rewards stay the default everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from palrm.errors import ConfigError, ModelFileError

__all__ = ["RewardNormalizer", "NO_STATS_HINT", "MIN_STD"]

MIN_STD = 1e-6  # a reference set whose rewards are all equal gets std 1 (the map is then a shift)
NO_STATS_HINT = ("this model has no reward statistics (older models lack them): measure them on a "
                 "reference set with model.measure_reward_stats(pairs) and save the model again")


@dataclass(frozen=True)
class RewardNormalizer:
    """The mean and standard deviation of rewards on a reference set, and the map that uses them."""

    mean: float
    std: float
    n: int
    reference: str = "training responses"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0 and self.n >= 1):
            raise ConfigError(f"reward statistics need a finite mean, a positive std and n >= 1; got mean={self.mean}, "
                              f"std={self.std}, n={self.n}")

    @classmethod
    def measure(cls, rewards: Any, reference: str = "training responses") -> RewardNormalizer:
        """Statistics of `rewards` (any array-like of floats): population mean and std (ddof=0)."""
        r = np.asarray(rewards, dtype=np.float64).reshape(-1)
        if r.size == 0:
            raise ConfigError(f"cannot measure reward statistics on an empty reference set ({reference})")
        if not np.isfinite(r).all():
            raise ConfigError(f"the reference set ({reference}) gives non-finite rewards")
        std = float(r.std())
        return cls(mean=float(r.mean()), std=std if std > MIN_STD else 1.0, n=int(r.size), reference=reference)

    def apply(self, rewards: Any) -> np.ndarray:
        """(r - mean) / std, float32, same shape as `rewards`."""
        return ((np.asarray(rewards, dtype=np.float64) - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "n": self.n, "reference": self.reference}

    @classmethod
    def from_dict(cls, data: Any, where: str = "config.json") -> RewardNormalizer | None:
        """None for None (a model without statistics); ModelFileError for a damaged entry."""
        if data is None:
            return None
        try:
            return cls(mean=float(data["mean"]), std=float(data["std"]), n=int(data["n"]),
                       reference=str(data.get("reference", "training responses")))
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise ModelFileError(f"{where}: reward_normalization is damaged ({exc}); re-save the model") from None
