"""The Laplace posterior over a user's weights, and query selection by expected information gain."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from palrm.config import ModelConfig
from palrm.models import build_net
from palrm.training import LogitPrior, indexed
from palrm.training.posterior import (
    PairTerms,
    UserPosterior,
    centred_basis,
    expected_information_gain,
    laplace_user,
    laplace_users,
    predictive_probability,
    prior_posterior,
    reward_samples,
    select_queries,
)


def _net_and_pairs(k=2, n=40, link="euclidean", kind="pal-a", seed=0):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    d_in = 6
    table = torch.cat([torch.randn(25, d_in), torch.zeros(1, d_in)])
    net = build_net(ModelConfig(kind=kind, k=k, d=4, hidden=[8], link=link, tau_init=2.0), d_in, 3)
    with torch.no_grad():  # spread the prototypes so that the two users disagree a lot
        if kind == "pal-a":
            net.prototypes.mul_(20)
    prompt = rng.integers(0, 4, n) if kind == "pal-b" else np.full(n, -1)
    pairs = indexed(np.zeros(n, dtype=np.int64), prompt, rng.integers(4, 25, n), rng.integers(4, 25, n), 25)
    return net, table, pairs


def _labelled_terms(terms: PairTerms, true_w: np.ndarray, seed=1) -> PairTerms:
    """Orient each pair as a user with weights `true_w` would answer it (labels drawn from the model)."""
    p = 1 / (1 + np.exp(-terms.logits(true_w[None])[0]))
    flip = np.random.default_rng(seed).random(len(terms)) > p
    return terms.flipped(flip)


def _grid_posterior(terms: PairTerms, prior: LogitPrior, strength: float):
    """Brute force for K = 2: the exact posterior density of eta on a fine grid."""
    b = centred_basis(2)[:, 0]  # (2,)
    eta = np.linspace(-15, 15, 30001)
    c = eta[:, None] * b[None, :]  # (G, 2)
    w = np.exp(c) / np.exp(c).sum(1, keepdims=True)
    z = terms.logits(w)  # (G, n)
    mu, var = prior.mean.double().numpy(), prior.var.double().numpy()
    log_post = -np.logaddexp(0, -z).sum(1) - strength * 0.5 * (((c - mu) ** 2) / var).sum(1)
    dens = np.exp(log_post - log_post.max())
    dens /= dens.sum()
    mean = (dens * eta).sum()
    return eta, dens, log_post, mean, (dens * (eta - mean) ** 2).sum()


@pytest.mark.parametrize("n_pairs", [3, 40])
def test_laplace_matches_brute_force_grid_on_k2(n_pairs):
    net, table, pairs = _net_and_pairs(k=2, n=n_pairs)
    raw = PairTerms.from_pairs(net, table, pairs)
    assert raw.affine
    terms = _labelled_terms(raw, np.array([0.8, 0.2]))
    prior = LogitPrior(mean=torch.tensor([0.3, -0.3]), var=torch.tensor([2.0, 2.0]))
    post = laplace_user(terms, prior, strength=1.0)
    eta, dens, log_post, mean, var = _grid_posterior(terms, prior, 1.0)
    b = centred_basis(2)[:, 0]
    mode_eta = float(b @ post.mean_logits)
    var_eta = float(b @ post.cov_logits @ b)
    # the mode and the curvature at the mode are exact (up to the grid's resolution)
    grid_mode = eta[np.argmax(log_post)]
    assert mode_eta == pytest.approx(grid_mode, abs=2e-3)
    i = np.argmax(log_post)
    h = eta[1] - eta[0]
    curvature = -(log_post[i + 1] - 2 * log_post[i] + log_post[i - 1]) / h**2
    assert 1 / var_eta == pytest.approx(curvature, rel=1e-2)
    # and the Gaussian is close to the true posterior's mean and spread
    assert mode_eta == pytest.approx(mean, abs=0.25 * np.sqrt(var))
    assert var_eta == pytest.approx(var, rel=0.3)
    assert post.cov_logits.sum(1) == pytest.approx(np.zeros(2), abs=1e-9)  # centred


def test_more_answers_shrink_the_posterior_and_move_it_to_the_truth():
    net, table, pairs = _net_and_pairs(k=2, n=400)
    raw = PairTerms.from_pairs(net, table, pairs)
    raw = PairTerms(c0=raw.c0 * 10, coef=raw.coef * 10)  # a user who answers with less noise
    terms = _labelled_terms(raw, np.array([0.9, 0.1]))
    prior = LogitPrior(mean=torch.zeros(2), var=torch.tensor([4.0, 4.0]))
    few, many = laplace_user(terms.select(np.arange(5)), prior), laplace_user(terms, prior)
    assert many.uncertainty < few.uncertainty
    assert many.weights_mean[0] > 0.7
    assert many.region_contains(np.array([0.9, 0.1]), 0.99)
    assert not many.region_contains(np.array([0.1, 0.9]), 0.99)


def test_autograd_path_equals_closed_form_on_the_euclidean_link():
    net, table, pairs = _net_and_pairs(k=3, n=30, kind="pal-b")
    raw = PairTerms.from_pairs(net, table, pairs)
    generic = PairTerms(net=net, feats=__import__("palrm.training.adapt", fromlist=["x"]).distinct_pair_features(net, table, pairs))
    flip = np.random.default_rng(3).random(len(raw)) > 0.5
    prior = LogitPrior(mean=torch.tensor([0.5, 0.0, -0.5]), var=torch.tensor([1.0, 2.0, 3.0]))
    a = laplace_user(raw.flipped(flip), prior, 0.7)
    g = laplace_user(generic.flipped(flip), prior, 0.7)
    np.testing.assert_allclose(raw.flipped(flip).logits(np.eye(3)), generic.flipped(flip).logits(np.eye(3)), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(a.mean_logits, g.mean_logits, atol=1e-4)
    np.testing.assert_allclose(a.cov_logits, g.cov_logits, rtol=1e-3, atol=1e-5)


def test_cosine_link_posterior_is_at_a_stationary_point():
    net, table, pairs = _net_and_pairs(k=3, n=30, link="cosine")
    terms = PairTerms.from_pairs(net, table, pairs)
    assert not terms.affine
    prior = LogitPrior(mean=torch.zeros(3), var=torch.ones(3))
    post = laplace_user(terms, prior)
    # the mode: nudging the logits in any centred direction never lowers the negative log posterior
    def u(c):
        w = np.exp(c) / np.exp(c).sum()
        return np.logaddexp(0, -terms.logits(w)[0]).sum() + 0.5 * (c**2).sum()
    base = u(post.mean_logits)
    for d in centred_basis(3).T:
        assert u(post.mean_logits + 1e-2 * d) >= base - 1e-6 and u(post.mean_logits - 1e-2 * d) >= base - 1e-6


def test_no_answers_gives_the_prior():
    prior = LogitPrior(mean=torch.tensor([1.0, -1.0, 0.0]), var=torch.tensor([0.5, 0.5, 0.5]))
    empty = PairTerms(c0=np.zeros(0), coef=np.zeros((0, 3)))
    post, ref = laplace_user(empty, prior), prior_posterior(prior)
    np.testing.assert_allclose(post.mean_logits, [1.0, -1.0, 0.0], atol=1e-8)
    np.testing.assert_allclose(post.cov_logits, ref.cov_logits, atol=1e-8)
    np.testing.assert_allclose(ref.mean_logits, [1.0, -1.0, 0.0], atol=1e-8)


def test_batched_users_equal_one_at_a_time():
    net, table, pairs = _net_and_pairs(k=3, n=60)
    terms = PairTerms.from_pairs(net, table, pairs)
    user = np.random.default_rng(0).integers(0, 3, len(terms))
    prior = LogitPrior(mean=torch.zeros(3), var=torch.ones(3) * 2)
    posts = laplace_users(terms, user, 4, prior)
    assert posts[3].n_pairs == 0
    for u in range(3):
        one = laplace_user(terms.select(np.flatnonzero(user == u)), prior)
        np.testing.assert_allclose(posts[u].mean_logits, one.mean_logits)


def test_planted_informative_pair_is_chosen():
    # K = 2, a user undecided between the prototypes. Every pool pair's answer is independent of the
    # weights (equal coefficients) except pair 7, whose answer flips with the user's group.
    k, n = 2, 20
    coef = np.full((n, k), 3.0)
    coef[7] = [4.0, -4.0]
    c0 = np.linspace(-2, 2, n)
    c0[7] = 0.0
    pool = PairTerms(c0=c0, coef=coef)
    post = UserPosterior(np.zeros(2), np.array([[2.0, -2.0], [-2.0, 2.0]]), 0)
    idx, gain = select_queries(post, pool, n=3)
    assert idx[0] == 7
    assert gain[0] > 0.1 and gain[1] < 1e-4  # float32 entropies
    eig = expected_information_gain(post, pool)
    assert np.allclose(np.delete(eig, 7), 0.0, atol=1e-4)
    # orientation does not matter
    flipped = pool.flipped(np.arange(n) == 7)
    assert expected_information_gain(post, flipped)[7] == pytest.approx(eig[7])


def test_a_certain_user_gains_nothing():
    coef = np.array([[4.0, -4.0], [1.0, -1.0]])
    pool = PairTerms(c0=np.zeros(2), coef=coef)
    certain = UserPosterior(np.array([3.0, -3.0]), np.eye(2) * 1e-10, 100)
    assert expected_information_gain(certain, pool).max() < 1e-4


def test_predictive_probability_is_softened_by_uncertainty():
    pool = PairTerms(c0=np.zeros(1), coef=np.array([[6.0, -6.0]]))
    sure = UserPosterior(np.array([1.0, -1.0]), np.zeros((2, 2)), 50)
    unsure = UserPosterior(np.array([1.0, -1.0]), np.array([[4.0, -4.0], [-4.0, 4.0]]), 1)
    p_sure, p_unsure = predictive_probability(sure, pool)[0], predictive_probability(unsure, pool)[0]
    assert 0.5 < p_unsure < p_sure


def test_reward_samples_mean_and_spread():
    net, table, _ = _net_and_pairs(k=3, kind="pal-b")
    prompt, responses = table[:1].expand(4, -1), table[5:9]
    point = UserPosterior(np.array([1.0, 0.0, -1.0]), np.zeros((3, 3)), 10)
    s = reward_samples(point, net, prompt, responses)
    w = torch.tensor(point.weights_mode, dtype=torch.float32).expand(4, -1)
    with torch.no_grad():
        exact = net.score(w, prompt, responses).numpy()
    np.testing.assert_allclose(s, np.broadcast_to(exact, s.shape), rtol=1e-5, atol=1e-5)
    wide = UserPosterior(point.mean_logits, np.eye(3) - 1 / 3, 1)
    assert reward_samples(wide, net, prompt, responses).std(0).min() > 0


def test_round_trip_dict():
    post = UserPosterior(np.array([0.5, -0.5]), np.array([[1.0, -1.0], [-1.0, 1.0]]), 4)
    again = UserPosterior.from_dict(post.to_dict())
    np.testing.assert_array_equal(again.mean_logits, post.mean_logits)
    assert again.n_pairs == 4


def _mixture_prior_k2(sep=2.5, var=0.3):
    from palrm.training.posterior import PopulationPrior

    b = centred_basis(2)
    means = np.stack([b[:, 0] * sep, -b[:, 0] * sep])
    covs = np.stack([np.outer(b[:, 0], b[:, 0]) * var] * 2)
    return PopulationPrior(np.array([0.5, 0.5]), means, covs)


def test_mixture_laplace_matches_brute_force_grid_on_k2():
    net, table, pairs = _net_and_pairs(k=2, n=4)
    terms = _labelled_terms(PairTerms.from_pairs(net, table, pairs), np.array([0.96, 0.04]))  # a user of group 0
    prior = _mixture_prior_k2()
    post = laplace_user(terms, prior)
    b = centred_basis(2)[:, 0]
    eta = np.linspace(-12, 12, 24001)
    c = eta[:, None] * b[None, :]
    w = np.exp(c) / np.exp(c).sum(1, keepdims=True)
    log_lik = -np.logaddexp(0, -terms.logits(w)).sum(1)
    log_prior = np.logaddexp(*[np.log(0.5) - 0.5 * (eta - m @ b) ** 2 / (b @ cv @ b) for m, cv in zip(prior.means, prior.covs)])
    dens = np.exp(log_lik + log_prior - (log_lik + log_prior).max())
    dens /= dens.sum()
    mean, var = (dens * eta).sum(), (dens * (eta - (dens * eta).sum()) ** 2).sum()
    assert float(b @ post.mean_logits) == pytest.approx(mean, abs=0.1 * np.sqrt(var))
    assert float(b @ post.cov_logits @ b) == pytest.approx(var, rel=0.15)
    # the mass on each side of 0 (which of the two groups) matches the exact posterior
    upper = [r for r, m, _ in post.components if b @ m > 0]
    assert (sum(upper) if upper else 0.0) == pytest.approx(dens[eta > 0].sum(), abs=0.05)
    assert post.region_contains(np.array([0.96, 0.04]), 0.9)
    again = UserPosterior.from_dict(post.to_dict())
    np.testing.assert_allclose(again.sample_weights(), post.sample_weights())


def test_one_decisive_answer_selects_the_group_under_a_mixture_prior():
    prior = _mixture_prior_k2()
    start = prior_posterior(prior)
    assert len(start.components) == 2
    decisive = PairTerms(c0=np.zeros(1), coef=np.array([[8.0, -8.0]]))  # the user preferred what group 0 likes
    post = laplace_user(decisive, prior)
    assert post.weights_mean[0] > 0.8
    assert post.uncertainty < start.uncertainty
