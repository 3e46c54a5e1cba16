"""Normalised rewards through the export and the TRL reward function (the library and the service are
tested in test_serve_encoding.py): every path applies the model's one (mean, std)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from palrm import PALRewardModel
from palrm.export import ScalarRewardModel, export_scalar
from palrm.integrations.trl import reward_function
from tests.serving.helpers import train_tiny_model

PROMPT = "Which pet?"
RESPONSES = ["I love cats, answer 3", "Dogs are the best, reply 4", "Fish are calm"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return PALRewardModel.load(train_tiny_model(tmp_path_factory.mktemp("norm") / "model"))


def test_every_export_carries_the_statistics_and_normalize_sets_the_default(model, tmp_path):
    stats = model.reward_stats_
    raw = model.reward("user0", PROMPT, RESPONSES)
    norm = model.reward("user0", PROMPT, RESPONSES, normalize=True)
    plain = ScalarRewardModel.from_pretrained(export_scalar(model, tmp_path / "plain", user_id="user0"))
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["reward_normalization"] == stats.to_dict()
    np.testing.assert_allclose(plain(PROMPT, RESPONSES).numpy(), raw, rtol=1e-5, atol=1e-5)  # raw stays the default
    np.testing.assert_allclose(plain(PROMPT, RESPONSES, normalize=True).numpy(), norm, rtol=1e-5, atol=1e-5)
    normed = ScalarRewardModel.from_pretrained(export_scalar(model, tmp_path / "normed", user_id="user0", normalize=True))
    np.testing.assert_allclose(normed(PROMPT, RESPONSES).numpy(), norm, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(normed(PROMPT, RESPONSES, normalize=False).numpy(), raw, rtol=1e-5, atol=1e-5)


def test_trl_reward_function_normalizes_when_asked(model, tmp_path):
    prompts, users = [PROMPT] * 3, ["user0"] * 3
    raw = reward_function(model)(prompts, RESPONSES, user_id=users)
    norm = reward_function(model, normalize=True)(prompts, RESPONSES, user_id=users)
    np.testing.assert_allclose(raw, model.reward("user0", PROMPT, RESPONSES), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm, model.reward("user0", PROMPT, RESPONSES, normalize=True), rtol=1e-5, atol=1e-5)
    scalar = export_scalar(model, tmp_path / "s", user_id="user0")
    np.testing.assert_allclose(reward_function(scalar, normalize=True)(prompts, RESPONSES), norm, rtol=1e-5, atol=1e-5)
