"""Every fit path stores the reward normalisation statistics (and the aggregates' reference statistics).

The expected statistics are computed here independently of core/fit.py: the rewards the fitted model
gives each training pair's chosen and rejected response for the pair's user, through the public
scoring API (`reward_batch` for text models, `reward_embeddings` for a memmap model).
"""

from __future__ import annotations

import numpy as np
import pytest

from palrm import PALRewardModel, core
from palrm.config import PALConfig
from palrm.core.fit import MAX_REWARD_STATS_PAIRS, TRAINING_RESPONSES
from palrm.data import load_pairs
from palrm.normalization import RewardNormalizer
from tests.conftest import text_pairs_frame
from tests.unit.scale.tiny_models import tiny_bert


@pytest.fixture(scope="module")
def frame():
    return text_pairs_frame(n_users=6, pairs_per_user=12, seed=3)


def _expected_from_texts(model: PALRewardModel, frame) -> RewardNormalizer:
    users = list(frame.user_id)
    prompts = list(frame.prompt)
    chosen = model.reward_batch(prompts, list(frame.chosen), user_ids=users)
    rejected = model.reward_batch(prompts, list(frame.rejected), user_ids=users)
    return RewardNormalizer.measure(np.concatenate([chosen, rejected]))


def _check(model: PALRewardModel, expected: RewardNormalizer, n_pairs: int, tmp_path, rtol: float = 1e-5,
           prior_chosen_by: str = "known users") -> None:
    strength = model.config_.adapt.prior_strength  # adapt.prior_strength=auto is a number on every path
    assert isinstance(strength, float) and model.prior_choice_["strength"] == strength
    assert model.prior_choice_["chosen_by"] == prior_chosen_by, model.prior_choice_
    stats = model.reward_stats_
    assert stats is not None, "this fit path stored no reward statistics"
    assert stats.reference == TRAINING_RESPONSES and stats.n == 2 * n_pairs
    assert stats.mean == pytest.approx(expected.mean, rel=rtol, abs=1e-5)
    assert stats.std == pytest.approx(expected.std, rel=rtol, abs=1e-5)
    assert model.fitted_.reference_stats is not None
    assert PALRewardModel.load(model.save(tmp_path / "saved")).reward_stats_ == stats  # saved with the model


def _frozen_config(**scale) -> PALConfig:
    return PALConfig.from_dict({
        "model": {"kind": "pal-b", "k": 2, "d": 8, "hidden": [16]},
        "train": {"epochs": 3, "batch_size": 16, "lr": 3e-3, "progress": False, "patience": 0},
        "encoder": {"spec": "hashing:32", "use_cache": False}, "scale": scale})


def test_in_memory_fit(frame, tmp_path):
    model = PALRewardModel(_frozen_config()).fit(frame)
    _check(model, _expected_from_texts(model, frame), len(frame), tmp_path)


def test_streaming_fit(frame, tmp_path):
    cfg = _frozen_config(grad_accum_steps=2)
    assert core.needs_streaming_fit(cfg)
    model = PALRewardModel(cfg).fit(frame)
    _check(model, _expected_from_texts(model, frame), len(frame), tmp_path)


def test_streaming_fit_with_checkpoints(frame, tmp_path):
    model = PALRewardModel(_frozen_config()).fit(frame, checkpoint_dir=tmp_path / "run")
    _check(model, _expected_from_texts(model, frame), len(frame), tmp_path)


def test_finetune_fit_measures_with_the_finetuned_backbone(frame, tmp_path):
    bert = tiny_bert(tmp_path / "bert")
    cfg = PALConfig.from_dict({
        "model": {"kind": "pal-b", "k": 2, "d": 8, "hidden": [16]},
        "train": {"epochs": 2, "batch_size": 16, "lr": 3e-3, "progress": False, "patience": 0},
        "encoder": {"spec": f"hf:{bert}:mean", "use_cache": False},
        "finetune": {"enabled": True, "backbone_lr": 1e-3, "warmup_steps": 2}})
    model = PALRewardModel(cfg).fit(frame)
    # rewards through the trained backbone (padded batches differ from the fit's: float rounding only)
    _check(model, _expected_from_texts(model, frame), len(frame), tmp_path, rtol=1e-4, prior_chosen_by="fallback")


def _memmap_dir(directory):
    from palrm.data.memmap import MemmapPairWriter

    rng = np.random.default_rng(0)
    n, users, texts, dim = 600, 10, 50, 8
    w = MemmapPairWriter(directory, n_pairs=n, n_users=users, n_texts=texts, dim=dim)
    emb = rng.normal(size=(texts, dim)).astype(np.float32)
    w.write_embeddings(0, emb)
    u = rng.integers(0, users, n)
    a, b = rng.integers(0, texts, n), rng.integers(0, texts, n)
    better = np.where(u % 2 == 0, emb[a, 0] > emb[b, 0], emb[a, 1] > emb[b, 1])
    prompt = np.where(np.arange(n) % 3 == 0, -1, rng.integers(0, texts, n))  # some pairs without a prompt
    w.write_pairs(0, user=u, prompt=prompt, chosen=np.where(better, a, b), rejected=np.where(better, b, a))
    w.close()
    return directory, emb, u, prompt, np.where(better, a, b), np.where(better, b, a)


def test_memmap_fit(tmp_path):
    directory, emb, u, prompt, chosen, rejected = _memmap_dir(tmp_path / "pairs")
    cfg = PALConfig.from_dict({"model": {"kind": "pal-b", "k": 2, "d": 8, "hidden": [16]},
                               "train": {"epochs": 2, "batch_size": 64, "progress": False, "lr": 3e-3}})
    model = PALRewardModel(cfg).fit_memmap(directory)
    rewards = []
    for column in (chosen, rejected):
        for i in range(len(u)):
            p = None if prompt[i] < 0 else emb[prompt[i]]
            rewards += model.reward_embeddings(str(u[i]), p, emb[column[i]][None])
    _check(model, RewardNormalizer.measure(rewards), len(u), tmp_path, prior_chosen_by="fallback")


def test_a_bounded_sample_of_pairs_when_there_are_many(frame):
    model = PALRewardModel(_frozen_config()).fit(frame)
    data = load_pairs(frame)
    full = core.measure_reward_stats(model.fitted_, data)
    sample = core.measure_reward_stats(model.fitted_, data, max_pairs=20)
    assert full.n == 2 * len(frame) and 2 <= sample.n <= 40 and sample.mean != full.mean
    assert core.measure_reward_stats(model.fitted_, data, max_pairs=20) == sample  # seeded
    assert MAX_REWARD_STATS_PAIRS >= 10_000
