"""adapt.prior_strength="auto": chosen on the model's own users after a fixed-K fit (issue 9)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from palrm import PALRewardModel
from palrm.config import FALLBACK_PRIOR_STRENGTH, PALConfig
from palrm.errors import ConfigError
from palrm.evaluation import selection
from palrm.evaluation.selection import (
    STRENGTHS,
    Candidate,
    choose_prior_on_known_users,
    describe_prior_choice,
    known_user_folds,
    select_model,
)
from palrm.training import indexed

FAST = dict(kind="pal-a", k=3, d=8, hidden=[16], epochs=12, progress=False, seed=0, adapt_steps=100)


@pytest.fixture(scope="module")
def auto_model(synthetic_splits):
    splits, _, _ = synthetic_splits
    return PALRewardModel(**FAST).fit(splits.train, splits.validation)


def _indexed(splits):
    data = splits.train
    table = torch.from_numpy(np.concatenate([data.embeddings, np.zeros((1, data.embeddings.shape[1]), np.float32)]))
    n = len(data.texts)
    tr = indexed(data.user, data.prompt, data.chosen, data.rejected, n)
    va = indexed(splits.validation.user, splits.validation.prompt, splits.validation.chosen, splits.validation.rejected, n)
    return table, tr, va


def test_auto_is_the_default_and_resolves_to_the_argmin_of_the_recorded_losses(auto_model, tmp_path):
    assert PALConfig().adapt.prior_strength == "auto"
    record = auto_model.prior_choice_
    strength = auto_model.config_.adapt.prior_strength
    assert isinstance(strength, float) and record["strength"] == strength
    assert record["chosen_by"] == "known users" and record["scored_on"] == "validation pairs"
    assert auto_model.config_.adapt.prior == record["prior"] == "gaussian"  # the configured kind is kept
    losses = record["losses"]
    assert [r["strength"] for r in losses] == [0.0, *STRENGTHS]  # 0 = maximum likelihood ("none")
    assert strength == min(losses, key=lambda r: r["log_loss"])["strength"]
    assert len({r["log_loss"] for r in losses}) > 1  # the strength matters on these users
    assert record["users"] == len(auto_model.users_)  # every known user has validation pairs here
    assert "chosen on 60 known users' validation pairs" in describe_prior_choice(record)
    # saved as a number (with the record) and loaded back
    auto_model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["config"]["adapt"]["prior_strength"] == strength
    assert meta["prior_choice"] == record
    loaded = PALRewardModel.load(tmp_path / "m")
    assert loaded.config_.adapt.prior_strength == strength and loaded.prior_choice_ == record


def test_a_users_prior_never_contains_its_own_logits(auto_model, synthetic_splits, monkeypatch):
    splits, _, _ = synthetic_splits
    table, tr, va = _indexed(splits)
    net, cfg = auto_model.net_, auto_model.config_.updated({"adapt.prior_strength": "auto"})
    n = net.num_users
    folds, _ = known_user_folds(tr, va, n, cfg.train.seed)
    assert len(folds) == 2
    onboarded = [set(users.tolist()) for _, _, users in folds]
    for (_, population, users), other in zip(folds, onboarded[::-1]):
        assert not set(population.tolist()) & set(users.tolist())
        assert other <= set(population.tolist())  # the other half's users are this half's population
    assert onboarded[0] | onboarded[1] == set(range(n))
    seen = []
    real_fit_prior = selection.fit_prior

    def spy(kind, logits):
        seen.append(logits.clone())
        return real_fit_prior(kind, logits)

    monkeypatch.setattr(selection, "fit_prior", spy)
    choose_prior_on_known_users(net, cfg, table, tr, va)
    all_logits = net.user_logits.weight.detach()
    assert len(seen) == 2 * (1 + len(STRENGTHS))  # one prior per fold and choice
    for i, logits in enumerate(seen):
        users = sorted(folds[i % 2][2].tolist())
        assert len(logits) == n - len(users)
        own = all_logits[users]  # (n_b, K): none of these rows may be in the prior's data
        assert not (torch.cdist(own, logits) == 0).any()


def test_explicit_strength_is_kept_untouched(synthetic_splits, monkeypatch):
    splits, _, _ = synthetic_splits
    monkeypatch.setattr(selection, "choose_prior", lambda *a, **k: pytest.fail("an explicit strength must not be chosen"))
    model = PALRewardModel(**FAST, prior_strength=0.7).fit(splits.train, splits.validation)
    assert model.config_.adapt.prior_strength == 0.7
    assert model.prior_choice_ == {"prior": "gaussian", "strength": 0.7, "chosen_by": "configured"}


def test_selection_uses_an_explicit_strength_as_configured(synthetic_splits):
    splits, _, _ = synthetic_splits
    table, tr, va = _indexed(splits)
    cfg = PALConfig().updated({"model.d": 8, "model.hidden": [16], "train.epochs": 4, "train.progress": False,
                               "adapt.steps": 50, "adapt.prior": "mixture", "adapt.prior_strength": 0.3})
    report = select_model(cfg, table, tr, va, len(splits.train.user_ids), candidates=[Candidate("pal-a", 2)],
                          shots=(2,), weight_decays=[0.01], dropouts=[0.0])
    assert report["overrides"]["adapt.prior"] == "mixture" and report["overrides"]["adapt.prior_strength"] == 0.3


def test_bad_strengths_are_rejected_clearly():
    for bad in ("strong", "AUTO", [1.0], True):
        with pytest.raises(ConfigError, match="adapt.prior_strength") as err:
            PALConfig().updated({"adapt.prior_strength": bad})
        assert "auto" in str(err.value)
    with pytest.raises(ConfigError, match=">= 0"):
        PALConfig().updated({"adapt.prior_strength": -0.5})
    # a saved model's number (int or float) loads as a float
    assert PALConfig.from_dict({"adapt": {"prior_strength": 2}}).adapt.prior_strength == 2.0


def test_a_fitted_model_keeps_its_chosen_strength_across_set_params(auto_model, synthetic_splits):
    chosen = auto_model.config_.adapt.prior_strength
    try:
        auto_model.set_params(**{"adapt.prior": "mixture"})
        assert auto_model.config_.adapt.prior == "mixture" and auto_model.config_.adapt.prior_strength == chosen
        auto_model.set_params(prior_strength=0.25)
        assert auto_model.config_.adapt.prior_strength == 0.25
        auto_model.set_params(prior_strength="auto")  # = the strength chosen when fitting
        assert auto_model.config_.adapt.prior_strength == chosen
    finally:
        auto_model.set_params(**{"adapt.prior": "gaussian", "adapt.prior_strength": chosen})


def test_fits_that_cannot_choose_store_the_fallback_and_say_why(synthetic_splits):
    splits, _, _ = synthetic_splits
    btl = PALRewardModel(kind="btl", epochs=2, progress=False).fit(splits.train, splits.validation)
    assert btl.config_.adapt.prior_strength == FALLBACK_PRIOR_STRENGTH
    assert btl.prior_choice_["chosen_by"] == "fallback" and "BTL" in btl.prior_choice_["reason"]
    mle = PALRewardModel(**{**FAST, "epochs": 2}, prior="none").fit(splits.train, splits.validation)
    assert mle.config_.adapt.prior_strength == FALLBACK_PRIOR_STRENGTH and "maximum likelihood" in mle.prior_choice_["reason"]
