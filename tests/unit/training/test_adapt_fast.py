"""The closed-form adaptation path must match the plain autograd + torch.optim.Adam loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from palrm.config import AdaptConfig, ModelConfig
from palrm.losses import per_pair_nll
from palrm.models import build_net
from palrm.training import (
    LogitPrior,
    MixturePrior,
    adapt_user_logits,
    fit_prior,
    indexed,
)
from palrm.training.adapt import _centre


def _reference(net, table, pairs, n_users, cfg, init, prior):
    """The original autograd loop (kept here as the specification)."""
    net.eval()
    with torch.no_grad():
        feats = net.pair_features(table[pairs.prompt], table[pairs.chosen], table[pairs.rejected])
    counts = torch.bincount(pairs.user, minlength=n_users).clamp(min=1).float()
    theta = init.clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=cfg.lr)
    for _ in range(cfg.steps):
        w = torch.softmax(theta, -1)[pairs.user]
        nll = per_pair_nll(net.logits_from_features(feats, w))
        loss = (torch.zeros(n_users).index_add_(0, pairs.user, nll) / counts).sum()
        if prior is not None and cfg.prior != "none":
            loss = loss + (cfg.prior_strength * prior.penalty(_centre(theta)) / counts).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return theta.detach()


def _setup(kind, n_users, per_user, seed=0):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    d_in, k = 8, 3
    table = torch.cat([torch.randn(30, d_in), torch.zeros(1, d_in)])
    net = build_net(ModelConfig(kind=kind, k=k, d=4, hidden=[16]), d_in, 50)
    n = n_users * per_user
    prompt = rng.integers(0, 5, n) if kind == "pal-b" else np.full(n, -1)
    pairs = indexed(np.repeat(np.arange(n_users), per_user), prompt, rng.integers(5, 30, n), rng.integers(5, 30, n), 30)
    return net, table, pairs


@pytest.mark.parametrize("kind", ["pal-a", "pal-b"])
@pytest.mark.parametrize("prior_kind", ["none", "gaussian", "mixture"])
@pytest.mark.parametrize("n_users", [1, 4])
def test_fast_path_matches_autograd_adam(kind, prior_kind, n_users):
    net, table, pairs = _setup(kind, n_users, per_user=7)
    seen_logits = torch.randn(40, 3) * 2
    prior = fit_prior(prior_kind, seen_logits)
    cfg = AdaptConfig(steps=60, lr=0.1, prior=prior_kind, prior_strength=0.7)
    init = torch.full((n_users, 3), 0.2)
    fast = adapt_user_logits(net, table, pairs, n_users, cfg, init, prior)
    ref = _reference(net, table, pairs, n_users, cfg, init, prior)
    assert torch.allclose(fast, ref, atol=1e-4), (fast - ref).abs().max()


def test_priors_pull_towards_known_users():
    logits = torch.tensor([[3.0, 0.0, 0.0]] * 10 + [[0.0, 3.0, 0.0]] * 10)
    gauss, mix = LogitPrior.fit(logits), MixturePrior.fit(logits)
    at_mode = _centre(torch.tensor([[3.0, 0.0, 0.0]]))
    far = _centre(torch.tensor([[0.0, 0.0, 3.0]]))
    assert mix.penalty(at_mode) < mix.penalty(far)
    assert gauss.penalty(at_mode) < gauss.penalty(far)
    # the kernel density keeps both modes; the Gaussian prefers their mean
    between = _centre(torch.tensor([[1.5, 1.5, 0.0]]))
    assert mix.penalty(at_mode) < mix.penalty(between)
    assert gauss.penalty(between) < gauss.penalty(at_mode)
    assert fit_prior("none", logits) is None


def test_facade_adapts_with_every_prior_and_leaves_shared_weights_alone(synthetic_splits):
    from palrm import PALRewardModel

    splits, shots, test = synthetic_splits
    model = PALRewardModel(kind="pal-a", k=3, epochs=3, progress=False).fit(splits.train, splits.validation)
    shared = {k: v.clone() for k, v in model.net_.state_dict().items() if not k.startswith("user_logits")}
    accuracy = {}
    for prior in ("none", "gaussian", "mixture"):
        model.set_params(**{"adapt.prior": prior})
        curve = model.few_shot_curve(shots, test, ns=(1, 5))
        accuracy[prior] = (curve["1"]["accuracy"], curve["5"]["accuracy"])
    for prior, (one, five) in accuracy.items():  # every prior onboards: 5 shots beat chance clearly
        assert five > 0.6, (prior, accuracy)
    model.adapt(shots)
    for k, v in model.net_.state_dict().items():
        if k in shared:
            assert torch.equal(v, shared[k]), k
    with pytest.raises(Exception, match="prior"):
        PALRewardModel(kind="pal-a", **{"adapt.prior": "dirichlet"}).fit(splits.train)
