"""RewardNormalizer: measured statistics, the affine map, (de)serialisation and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from palrm.errors import ConfigError, ModelFileError
from palrm.normalization import RewardNormalizer


def test_measure_and_apply_standardise_the_reference():
    rng = np.random.default_rng(0)
    ref = -120 + 2.5 * rng.standard_normal(1000)
    norm = RewardNormalizer.measure(ref)
    out = norm.apply(ref)
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert abs(float(out.mean())) < 1e-4 and float(out.std()) == pytest.approx(1.0, abs=1e-4)
    assert norm.n == 1000 and norm.mean == pytest.approx(ref.mean()) and norm.reference == "training responses"
    # differences scale by 1/std: the order of rewards never changes
    assert (np.argsort(out) == np.argsort(ref)).all()


def test_constant_reference_gets_unit_std():
    norm = RewardNormalizer.measure([3.0, 3.0, 3.0])
    assert norm.std == 1.0 and norm.apply([4.0]).tolist() == [1.0]


def test_round_trip_and_damaged_entries():
    norm = RewardNormalizer.measure([1.0, 2.0, 4.0], reference="my prompts")
    assert RewardNormalizer.from_dict(norm.to_dict()) == norm
    assert RewardNormalizer.from_dict(None) is None
    with pytest.raises(ModelFileError, match="reward_normalization is damaged"):
        RewardNormalizer.from_dict({"mean": 1.0}, where="m/config.json")
    with pytest.raises(ModelFileError, match="m/config.json"):
        RewardNormalizer.from_dict({"mean": 1.0, "std": 0.0, "n": 3}, where="m/config.json")


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [float("inf")]])
def test_bad_reference_sets(bad):
    with pytest.raises(ConfigError, match="reference set"):
        RewardNormalizer.measure(bad)
