"""A posterior over a user's K weights (Laplace approximation) and the information a query carries.

Parametrisation. softmax is shift-invariant, so a user is identified by the centred logits
c = theta - mean_k theta_k, which live in the (K-1)-dimensional subspace orthogonal to 1. We write
c = B eta with B (K, K-1) a fixed orthonormal basis of that subspace (Helmert), and put the
posterior on eta in R^(K-1), where it is proper.

Negative log posterior of one user with answered pairs i = 1..n (shared network frozen):

    U(eta) = sum_i softplus(-z_i(w)) + lambda * R(B eta),      w = softmax(B eta)

z_i is PAL's preference logit of pair i and R the negative log density of the prior on the centred
logits, fitted to the known users when the model is trained (`fit_population_prior`): a Gaussian by
type-II maximum likelihood, then a Gaussian mixture over the users' posterior means (components by
BIC), so that a population made of distinct groups keeps them apart. (`adapt.LogitPrior`, a diagonal
Gaussian, is accepted too; lambda scales the prior's precision, 1 by default.) The posterior always
carries a proper prior: with a flat one a user with a handful of separable answers has no finite mode.

Laplace approximation: for a Gaussian prior, eta ~ N(eta*, H^-1), eta* = argmin U (damped Newton from
the adapted logits), H = Hessian of U at eta*; in logits c ~ N(B eta*, B H^-1 B^T). For a mixture
prior sum_m pi_m N(mu_m, S_m) the posterior is the mixture of the per-component Laplace
approximations, each weighted by its Laplace evidence
    rho_m ~ pi_m exp(-U_m(eta_m*)) det(H_m)^-1/2 det(S_m)^-1/2,
which is how one or two decisive answers put a new user into its group.

Gradient and Hessian for the euclidean link, where z = c0 + <C, w> is affine in w
(`adapt.affine_logit_terms`). With p_i = sigmoid(z_i), e_i = C_i - <w, C_i>, J = diag(w) - w w^T
(so J C_i = w * e_i):

    dU/dc   = g = sum_i (p_i - 1) w * e_i
    d2U/dc2 = sum_i p_i (1 - p_i) (w * e_i)(w * e_i)^T  +  diag(g) - w g^T - g w^T
    (the second term is sum_i (p_i - 1) d2<C_i, w>/dc2, summed in closed form)

then grad_eta = B^T g, H_eta = B^T (d2U/dc2) B. Other links (cosine) use autograd on U(eta).

Predictions and information use S posterior samples eta_s = eta* + L eps_s (L L^T = H^-1, eps_s fixed
standard-normal draws, so every result is deterministic), w_s = softmax(B eta_s):

    P(chosen | answers) = mean_s sigmoid(z(w_s))                        (posterior predictive)
    EIG(pair) = I(y; w) = H[mean_s p_s] - mean_s H[p_s]                 (BALD: the mutual information
                                                                         between the answer and the weights)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from palrm.errors import ConfigError
from palrm.models.base import PairFeatures, RewardNet
from palrm.models.offset import input_features
from palrm.training.adapt import LogitPrior, affine_logit_terms, distinct_pair_features
from palrm.training.pairs import IndexedPairs

N_SAMPLES = 256  # posterior draws for predictive probabilities and reward spreads
N_SAMPLES_EIG = 128  # posterior draws for the information gain of each pool pair (the interactive path)
_SEED = 0


def centred_basis(k: int) -> np.ndarray:
    """(K, K-1) orthonormal basis of the centred subspace {c : sum_k c_k = 0} (Helmert contrasts)."""
    b = np.zeros((k, k - 1))
    for j in range(1, k):
        b[:j, j - 1] = 1.0 / math.sqrt(j * (j + 1))
        b[j, j - 1] = -j / math.sqrt(j * (j + 1))
    return b


def standard_draws(n: int, dim: int, seed: int = _SEED) -> np.ndarray:
    """(n, dim) fixed standard-normal draws (antithetic: the second half mirrors the first)."""
    half = np.random.default_rng(seed).standard_normal(((n + 1) // 2, dim))
    return np.concatenate([half, -half], 0)[:n]


def _softmax(c: np.ndarray) -> np.ndarray:
    e = np.exp(c - c.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return -(p * np.log(p) + (1 - p) * np.log1p(-p))


# ------------------------------------------------------------------------------------------- posterior
@dataclass(frozen=True)
class UserPosterior:
    """Posterior of one user's centred logits: one Gaussian N(mean_logits, cov_logits), or a mixture
    sum_m rho_m N(mean_m, cov_m) (`components`) when the prior is a Gaussian mixture.

    mean_logits: (K,) the mode (one Gaussian) or the mixture's mean; cov_logits: (K, K) covariance
    (rank K-1, rows sum to 0); n_pairs: how many answered pairs it conditions on; components:
    ((rho, mean (K,), cov (K, K)), ...) or () for one Gaussian.
    """

    mean_logits: np.ndarray
    cov_logits: np.ndarray
    n_pairs: int
    components: tuple = ()

    @classmethod
    def mixture(cls, parts: list[tuple[float, np.ndarray, np.ndarray]], n_pairs: int) -> "UserPosterior":
        """From components (log weight, mean, cov): normalised weights, negligible ones dropped, moments."""
        logw = np.array([p[0] for p in parts])
        rho = np.exp(logw - logw.max())
        rho /= rho.sum()
        keep = [(float(r), m, c) for r, (_, m, c) in zip(rho, parts) if r > 1e-6]
        if len(keep) == 1:
            return cls(keep[0][1], keep[0][2], n_pairs)
        total = sum(r for r, _, _ in keep)
        keep = [(r / total, m, c) for r, m, c in keep]
        mean = sum(r * m for r, m, _ in keep)
        cov = sum(r * (c + np.outer(m - mean, m - mean)) for r, m, c in keep)
        return cls(mean, cov, n_pairs, tuple(keep))

    @property
    def k(self) -> int:
        return int(self.mean_logits.shape[0])

    def _parts(self) -> tuple:
        return self.components or ((1.0, self.mean_logits, self.cov_logits),)

    @staticmethod
    def _chol_eta(cov_logits: np.ndarray) -> np.ndarray:
        b = centred_basis(cov_logits.shape[0])
        cov = b.T @ cov_logits @ b  # (K-1, K-1)
        vals, vecs = np.linalg.eigh(0.5 * (cov + cov.T))
        return vecs * np.sqrt(np.clip(vals, 0.0, None))  # L with L L^T = cov (robust to rounding)

    def sample_logits(self, n: int = N_SAMPLES, seed: int = _SEED) -> np.ndarray:
        """(n, K) centred logits drawn from the posterior (fixed draws, components allotted by their
        weights with largest remainders: deterministic)."""
        if self.k == 1:
            return np.zeros((n, 1))
        eps = standard_draws(n, self.k - 1, seed)  # (n, K-1)
        b = centred_basis(self.k)
        parts = self._parts()
        rho = np.array([r for r, _, _ in parts])
        counts = np.floor(rho * n).astype(int)
        counts[np.argsort(-(rho * n - counts))[: n - counts.sum()]] += 1
        out, start = np.empty((n, self.k)), 0
        for (_, mean, cov), c in zip(parts, counts):
            out[start:start + c] = mean + eps[start:start + c] @ self._chol_eta(cov).T @ b.T
            start += c
        return out

    def sample_weights(self, n: int = N_SAMPLES, seed: int = _SEED) -> np.ndarray:
        """(n, K) mixture weights on the simplex drawn from the posterior."""
        return _softmax(self.sample_logits(n, seed))

    @property
    def weights_mode(self) -> np.ndarray:
        """(K,) softmax of the mode (of the heaviest component for a mixture)."""
        return _softmax(max(self._parts(), key=lambda p: p[0])[1])

    @property
    def weights_mean(self) -> np.ndarray:
        """(K,) posterior mean of the weights E[softmax(c)] (Monte Carlo over fixed draws)."""
        return self.sample_weights().mean(0)

    @property
    def weights_std(self) -> np.ndarray:
        """(K,) posterior standard deviation of each weight."""
        return self.sample_weights().std(0)

    @property
    def uncertainty(self) -> float:
        """Scalar summary: sqrt(sum_k Var[w_k]), the total standard deviation of the weights
        (0 = certain; at most sqrt(1 - 1/K), weights spread over the corners of the simplex)."""
        return float(np.sqrt((self.weights_std**2).sum()))

    def log_density(self, logits: np.ndarray) -> np.ndarray:
        """Log density (up to a constant) of centred logits (..., K) in the K-1 free coordinates."""
        b = centred_basis(self.k)
        eta = np.asarray(logits, dtype=np.float64) @ b
        terms = []
        for rho, mean, cov in self._parts():
            ce = b.T @ cov @ b
            d = eta - b.T @ mean
            terms.append(np.log(rho) - 0.5 * np.einsum("...i,ij,...j->...", d, np.linalg.inv(ce), d)
                         - 0.5 * np.linalg.slogdet(ce)[1])
        return np.logaddexp.reduce(np.stack(terms), 0)

    def region_contains(self, weights: np.ndarray, level: float = 0.9) -> bool:
        """Whether `weights` (K,) lie in the posterior's highest-density region of mass `level` (in the
        centred logits: the Mahalanobis ellipsoid, chi-square with K-1 degrees of freedom, for one
        Gaussian; the density threshold of 1,024 draws for a mixture)."""
        w = np.clip(np.asarray(weights, dtype=np.float64), 1e-12, None)
        c = np.log(w) - np.log(w).mean()
        if not self.components:
            from scipy.stats import chi2

            b = centred_basis(self.k)
            d = b.T @ (c - self.mean_logits)
            return bool(d @ np.linalg.solve(b.T @ self.cov_logits @ b, d) <= chi2.ppf(level, self.k - 1))
        threshold = np.quantile(self.log_density(self.sample_logits(1024, seed=_SEED + 1)), 1 - level)
        return bool(self.log_density(c) >= threshold)

    def to_dict(self) -> dict:
        out = {"mean_logits": self.mean_logits.tolist(), "cov_logits": self.cov_logits.tolist(), "n_pairs": self.n_pairs}
        if self.components:
            out["components"] = [{"weight": r, "mean_logits": m.tolist(), "cov_logits": c.tolist()} for r, m, c in self.components]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "UserPosterior":
        comps = tuple((float(c["weight"]), np.asarray(c["mean_logits"], dtype=np.float64), np.asarray(c["cov_logits"], dtype=np.float64))
                      for c in d.get("components", []))
        return cls(np.asarray(d["mean_logits"], dtype=np.float64), np.asarray(d["cov_logits"], dtype=np.float64),
                   int(d["n_pairs"]), comps)


@dataclass(frozen=True)
class PopulationPrior:
    """A Gaussian mixture over the known users' centred logits: weights (M,), means (M, K), covs (M, K, K)
    (rank K-1). One component is a Gaussian prior; several keep distinct groups of users apart."""

    weights: np.ndarray
    means: np.ndarray
    covs: np.ndarray

    @property
    def k(self) -> int:
        return int(self.means.shape[1])

    @classmethod
    def from_gaussian(cls, prior: LogitPrior) -> "PopulationPrior":
        """The diagonal Gaussian of `adapt.LogitPrior` restricted to centred logits (precision B^T P B in eta)."""
        k = int(prior.mean.shape[0])
        if k == 1:
            return cls(np.ones(1), np.zeros((1, 1)), np.zeros((1, 1, 1)))
        b, p = centred_basis(k), np.diag(1.0 / prior.var.double().cpu().numpy())
        a_inv = np.linalg.inv(b.T @ p @ b)  # (K-1, K-1)
        eta = a_inv @ b.T @ p @ prior.mean.double().cpu().numpy()
        return cls(np.ones(1), (b @ eta)[None], (b @ a_inv @ b.T)[None])

    @classmethod
    def fit(cls, posteriors: list[UserPosterior], max_components: int = 6, seed: int = 0) -> "PopulationPrior":
        """Gaussian mixture over the known users' posterior means (EM, full covariances, the number of
        components by BIC, at most one per 10 users), each component's covariance widened by the mean
        posterior covariance (law of total variance: the users' true logits spread more than their
        posterior means)."""
        from sklearn.mixture import GaussianMixture

        k = posteriors[0].k
        b = centred_basis(k)
        means = np.stack([b.T @ p.mean_logits for p in posteriors])  # (U, K-1)
        extra = np.mean([b.T @ p.cov_logits @ b for p in posteriors], 0)
        best = None
        for m in range(1, max(1, min(max_components, len(posteriors) // 10)) + 1):
            g = GaussianMixture(m, covariance_type="full", reg_covar=1e-3, random_state=seed, n_init=2).fit(means)
            bic = g.bic(means)
            if best is None or bic < best[0]:
                best = (bic, g)
        g = best[1]
        covs = np.stack([b @ (c + extra) @ b.T for c in g.covariances_])
        return cls(g.weights_.copy(), g.means_ @ b.T, covs)

    def to_dict(self) -> dict:
        return {"weights": self.weights.tolist(), "means": self.means.tolist(), "covs": self.covs.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "PopulationPrior":
        return cls(*(np.asarray(d[key], dtype=np.float64) for key in ("weights", "means", "covs")))


def _as_population(prior: LogitPrior | PopulationPrior) -> PopulationPrior:
    return prior if isinstance(prior, PopulationPrior) else PopulationPrior.from_gaussian(prior)


def prior_posterior(prior: LogitPrior | PopulationPrior) -> UserPosterior:
    """The posterior of a user with no answers: the prior itself (on centred logits)."""
    pop = _as_population(prior)
    return UserPosterior.mixture([(float(np.log(w)), m, c) for w, m, c in zip(pop.weights, pop.means, pop.covs)], 0)


# ------------------------------------------------------------------------------------------- pair terms
@dataclass
class PairTerms:
    """What the preference logit z(w) of n pairs needs, computed once (shared network frozen).

    Euclidean link: c0 (n,), coef (n, K) with z = c0 + coef @ w (float64). Other links: the network
    and the pairs' `PairFeatures` (z from `net.logits_from_features`).
    """

    c0: np.ndarray | None = None
    coef: np.ndarray | None = None
    net: RewardNet | None = None
    feats: PairFeatures | None = None

    @classmethod
    @torch.no_grad()
    def from_pairs(cls, net: RewardNet, table: torch.Tensor, pairs: IndexedPairs) -> "PairTerms":
        """Terms of `pairs` (rows into `table`, the embedding table whose last row is "no prompt")."""
        was_training = net.training
        net.eval()
        try:
            feats = distinct_pair_features(net, table, pairs)
            affine = affine_logit_terms(net, feats)
        finally:
            net.train(was_training)
        if affine is not None:
            return cls(c0=affine[0].double().cpu().numpy(), coef=affine[1].double().cpu().numpy())
        return cls(net=net, feats=feats)

    def __len__(self) -> int:
        return len(self.c0) if self.c0 is not None else int(self.feats.chosen.shape[0])

    @property
    def affine(self) -> bool:
        return self.c0 is not None

    def select(self, index: np.ndarray) -> "PairTerms":
        index = np.asarray(index, dtype=np.int64)
        if self.affine:
            return PairTerms(c0=self.c0[index], coef=self.coef[index])
        f, t = self.feats, torch.as_tensor(index, device=self.feats.chosen.device)
        anchors = f.anchors if f.anchors.shape[0] == 1 else f.anchors[t]
        return PairTerms(net=self.net, feats=PairFeatures(f.chosen[t], f.rejected[t], anchors))

    def flipped(self, flip: np.ndarray) -> "PairTerms":
        """Terms with the pairs where `flip` (n,) bool is set turned around (z -> -z)."""
        if self.affine:
            s = np.where(flip, -1.0, 1.0)
            return PairTerms(c0=self.c0 * s, coef=self.coef * s[:, None])
        f, m = self.feats, torch.as_tensor(flip, device=self.feats.chosen.device)[:, None]
        return PairTerms(net=self.net, feats=PairFeatures(torch.where(m, f.rejected, f.chosen),
                                                          torch.where(m, f.chosen, f.rejected), f.anchors))

    def logits(self, weights: np.ndarray) -> np.ndarray:
        """Preference logits (S, n) of every pair under each of S weight vectors (S, K)."""
        weights = np.atleast_2d(weights)
        if self.affine:
            return self.c0[None, :] + weights @ self.coef.T
        out = []
        with torch.no_grad():
            self.net.eval()
            for w in torch.as_tensor(weights, dtype=self.feats.chosen.dtype, device=self.feats.chosen.device):
                out.append(self.net.logits_from_features(self.feats, w.expand(len(self), -1)).double().cpu().numpy())
        return np.stack(out)


# ------------------------------------------------------------------------------------------- Laplace
def _per_user(user: np.ndarray, x: np.ndarray, n_users: int) -> np.ndarray:
    return np.bincount(user, x, n_users).astype(np.float64)


def _objective_affine_batch(eta, b, c0, coef, user, n_users, prior_mean, prior_prec, strength):
    """U(eta), its gradient and Hessian in closed form for U affine-link users at once (z = c0 + C w):
    eta (U, K-1) -> values (U,), gradients (U, K-1), Hessians (U, K-1, K-1).
    Per-user sums are bincounts over the pairs (K^2 of them for the Hessian: memory O(n), not O(n K^2))."""
    k = coef.shape[1]
    c = eta @ b.T  # (U, K)
    w = _softmax(c)
    wu = w[user]  # (n, K)
    cw = (coef * wu).sum(1)  # (n,) <C_i, w>
    z = c0 + cw
    p = _sigmoid(z)
    value = _per_user(user, np.logaddexp(0.0, -z), n_users)
    we = wu * (coef - cw[:, None])  # (n, K) = J C_i
    g = np.stack([_per_user(user, (p - 1.0) * we[:, j], n_users) for j in range(k)], 1)  # (U, K)
    a = p * (1 - p)
    h = np.empty((n_users, k, k))
    for i in range(k):
        for j in range(i, k):
            h[:, i, j] = h[:, j, i] = _per_user(user, a * we[:, i] * we[:, j], n_users)
    h[:, np.arange(k), np.arange(k)] += g
    h -= w[:, :, None] * g[:, None, :] + g[:, :, None] * w[:, None, :]
    d = c - prior_mean  # prior_mean (K,) or one per user (U, K); prior_prec (K, K) or (U, K, K)
    if prior_prec.ndim == 2:
        value += strength * 0.5 * np.einsum("uk,kl,ul->u", d, prior_prec, d)
        g = g + strength * d @ prior_prec
    else:
        value += strength * 0.5 * np.einsum("uk,ukl,ul->u", d, prior_prec, d)
        g = g + strength * np.einsum("ukl,ul->uk", prior_prec, d)
    h = h + strength * prior_prec
    return value, g @ b, np.einsum("kj,ukl,lm->ujm", b, h, b)


def _objective_autograd_batch(eta, b, terms: PairTerms, user, n_users, prior_mean, prior_prec, strength):
    """`_objective_affine_batch` for links where z is not affine in w (autograd): eta (U, K-1) ->
    values (U,), gradients (U, K-1), Hessians (U, K-1, K-1). Users are independent, so the Hessian is
    block-diagonal: one backward pass gives every gradient, K-1 more give every Hessian column."""
    dtype = terms.feats.chosen.dtype
    dev = terms.feats.chosen.device
    e = torch.as_tensor(eta, dtype=torch.float64).requires_grad_(True)
    c = e @ torch.as_tensor(b).T  # (U, K)
    w = torch.softmax(c, -1)
    local = torch.as_tensor(user, dtype=torch.long)
    terms.net.eval()
    z = terms.net.logits_from_features(terms.feats, w[local].to(dtype=dtype, device=dev)).double().cpu()  # (n,)
    value = torch.zeros(n_users, dtype=torch.float64).index_add(0, local, torch.nn.functional.softplus(-z))
    d = c - torch.as_tensor(prior_mean)
    prec = torch.as_tensor(prior_prec)
    quad = torch.einsum("uk,kl,ul->u" if prec.ndim == 2 else "uk,ukl,ul->u", d, prec, d)
    value = value + strength * 0.5 * quad
    (grad,) = torch.autograd.grad(value.sum(), e, create_graph=True)  # (U, K-1)
    cols = [torch.autograd.grad(grad[:, j].sum(), e, retain_graph=True)[0] for j in range(e.shape[1])]
    hess = torch.stack(cols, 2)  # (U, K-1, K-1), symmetric per user
    return value.detach().numpy(), grad.detach().numpy(), hess.detach().numpy()


def _newton_batch(terms: PairTerms, user, n_users, b, prior_mean, prior_prec, strength, start, max_iter, tol):
    """Damped Newton on U(eta) for every user at once (any link; closed form for affine links):
    per-user damping and Armijo steps; each evaluation covers only the pairs of the users still
    iterating. Stops a user when its Newton
    decrement -<g, step> / 2 falls under `tol`. Returns eta (U, K-1), U(eta) (U,), the Hessian's
    eigenvalues (U, K-1) and eigenvectors (U, K-1, K-1)."""
    k1 = b.shape[1]
    if not terms.affine:  # z comes from the network in float32: a smaller decrement is rounding noise
        tol = max(tol, 1e-8)
    order = np.argsort(user, kind="stable")
    bounds = np.searchsorted(user[order], np.arange(n_users + 1))

    def f(e: np.ndarray, users: np.ndarray):
        """Objective of `users` (sorted) at their rows of e (len(users), K-1)."""
        if len(users) == n_users:
            pairs, local = slice(None), user
        else:
            pairs = np.concatenate([order[bounds[u]:bounds[u + 1]] for u in users]) if len(users) else np.zeros(0, dtype=np.int64)
            local = np.repeat(np.arange(len(users)), bounds[users + 1] - bounds[users])
        per_user = prior_prec.ndim == 3 and len(users) != n_users
        mean, prec = (prior_mean[users], prior_prec[users]) if per_user else (prior_mean, prior_prec)
        if terms.affine:
            return _objective_affine_batch(e, b, terms.c0[pairs], terms.coef[pairs], local, len(users), mean, prec, strength)
        sub = terms if isinstance(pairs, slice) else terms.select(pairs)
        return _objective_autograd_batch(e, b, sub, local, len(users), mean, prec, strength)

    everyone = np.arange(n_users)
    eta = (start - start.mean(1, keepdims=True)) @ b
    value, grad, hess = f(eta, everyone)
    damping = np.zeros(n_users)
    active = np.ones(n_users, dtype=bool)
    eye = np.eye(k1)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        step = np.zeros((len(idx), k1))
        todo = np.ones(len(idx), dtype=bool)
        for _ in range(60):  # damping until every step is a descent direction
            sub = idx[todo]
            try:
                step[todo] = np.linalg.solve(hess[sub] + damping[sub, None, None] * eye, -grad[sub][..., None])[..., 0]
                bad = ~np.isfinite(step[todo]).all(1) | ((grad[sub] * step[todo]).sum(1) > 0)
            except np.linalg.LinAlgError:
                bad = np.ones(len(sub), dtype=bool)
            if not bad.any():
                break
            damping[sub[bad]] = np.maximum(2 * damping[sub[bad]], 1e-3)
            todo[np.flatnonzero(todo)[~bad]] = False
        slope = (grad[idx] * step).sum(1)
        done = -slope / 2 < tol  # Newton decrement: converged
        active[idx[done]] = False
        idx, step, slope = idx[~done], step[~done], slope[~done]
        t = np.ones(len(idx))
        accepted = np.zeros(len(idx), dtype=bool)
        for _ in range(30):  # backtracking line search (Armijo)
            pending = np.flatnonzero(~accepted)
            if not len(pending):
                break
            users = idx[pending]
            cand = eta[users] + t[pending, None] * step[pending]
            v_new, g_new, h_new = f(cand, users)
            ok = v_new <= value[users] + 1e-4 * t[pending] * slope[pending]
            sel = users[ok]
            eta[sel], value[sel], grad[sel], hess[sel] = cand[ok], v_new[ok], g_new[ok], h_new[ok]
            accepted[pending[ok]] = True
            t[pending[~ok]] *= 0.5
        damping[idx[accepted]] /= 4
        damping[idx[~accepted]] = np.maximum(2 * damping[idx[~accepted]], 1e-3)
        active[idx[~accepted]] = False  # no decrease along a descent direction even at t = 2^-30: at the mode up to rounding
    vals, vecs = np.linalg.eigh(0.5 * (hess + np.swapaxes(hess, 1, 2)))
    vals = np.maximum(vals, 1e-6 * np.maximum(1.0, vals.max(1, keepdims=True)))  # a mode's Hessian is PSD; guard rounding
    return eta, value, vals, vecs


def laplace_users(terms: PairTerms, user: np.ndarray, n_users: int, prior: LogitPrior | PopulationPrior,
                  strength: float = 1.0, init: np.ndarray | None = None, max_iter: int = 50,
                  tol: float = 1e-12) -> list[UserPosterior]:
    """Laplace posteriors of users 0..n_users-1 from the terms of the pairs they answered (chosen = their
    choice; `user` (n,) gives each pair's user).

    One Gaussian prior: damped Newton on U(eta) from `init` (U, K) logits (default the prior mean), the
    Hessian at the mode. A Gaussian-mixture prior sum_m pi_m N(mu_m, S_m): one Laplace approximation per
    component (Newton from mu_m), weighted by its evidence
        rho_m ~ pi_m exp(-U_m(eta_m*)) det(H_m)^-1/2 det(S_m / lambda)^-1/2,
    so a few answers select the group the user belongs to. All users in one batched Newton per
    component: closed-form derivatives for affine (Euclidean) links, autograd for the others.
    """
    pop = _as_population(prior)
    k = pop.k
    user = np.asarray(user, dtype=np.int64)
    counts = np.bincount(user, minlength=n_users)
    if k == 1:
        return [UserPosterior(np.zeros(1), np.zeros((1, 1)), int(c)) for c in counts]
    b = centred_basis(k)
    m = len(pop.weights)
    cov_eta = np.einsum("kj,mkl,li->mji", b, pop.covs, b)  # (M, K-1, K-1)
    precs = np.einsum("kj,mji,li->mkl", b, np.linalg.inv(cov_eta), b)  # (M, K, K) precisions of the centred logits
    log_norm = np.log(pop.weights) - 0.5 * np.linalg.slogdet(cov_eta / strength)[1]  # (M,)
    if init is not None and m == 1:
        start = np.asarray(init, dtype=np.float64)[None]  # (1, U, K)
    else:
        start = np.repeat(pop.means[:, None, :], n_users, 1)  # (M, U, K): each component from its mean
    if terms.affine and len(terms) * m <= 5_000_000:  # every (component, user) in ONE batched Newton
        rep_terms = PairTerms(c0=np.tile(terms.c0, m), coef=np.tile(terms.coef, (m, 1)))
        rep_user = np.concatenate([user + j * n_users for j in range(m)])
        eta, value, vals, vecs = _newton_batch(rep_terms, rep_user, m * n_users, b, np.repeat(pop.means, n_users, 0),
                                               np.repeat(precs, n_users, 0), strength, start.reshape(-1, k), max_iter, tol)
    else:
        out = [_newton_batch(terms, user, n_users, b, pop.means[j], precs[j], strength, start[j], max_iter, tol)
               for j in range(m)]
        eta, value, vals, vecs = (np.concatenate([o[i] for o in out]) for i in range(4))
    log_evidence = np.repeat(log_norm, n_users) - value - 0.5 * np.log(vals).sum(1)  # (M * U,)
    cov_c = np.einsum("kj,ujl,ml->ukm", b, (vecs / vals[:, None, :]) @ np.swapaxes(vecs, 1, 2), b)
    parts: list[list] = [[] for _ in range(n_users)]
    for row in range(m * n_users):
        parts[row % n_users].append((float(log_evidence[row]), b @ eta[row], cov_c[row]))
    return [UserPosterior.mixture(pu, int(c)) for pu, c in zip(parts, counts)]


def laplace_user(terms: PairTerms, prior: LogitPrior | PopulationPrior, strength: float = 1.0,
                 init: np.ndarray | None = None, max_iter: int = 50, tol: float = 1e-12) -> UserPosterior:
    """`laplace_users` for one user answering every pair of `terms`; init (K,) or None."""
    return laplace_users(terms, np.zeros(len(terms), dtype=np.int64), 1, prior, strength,
                         None if init is None else np.asarray(init, dtype=np.float64)[None], max_iter, tol)[0]


def fit_population_prior(terms: PairTerms, user: np.ndarray, n_users: int, logits: np.ndarray, iters: int = 5,
                         max_components: int = 6, min_var: float = 1e-2, max_users: int = 2000) -> tuple[PopulationPrior, list[UserPosterior]]:
    """The prior over centred logits, fitted to the known users (their pairs `terms`, `user`).

    1. A Gaussian by type-II maximum likelihood (EM): from the moments of the trained logits (U, K),
       alternate Laplace posteriors of every known user (E-step) and the moment update (M-step)
           mu = mean_u m_u,    s_k = mean_u [(m_uk - mu_k)^2 + (Sigma_u)_kk],
       so the prior describes the spread of the users' weights, not of their noisy estimates.
    2. A Gaussian mixture over the resulting posterior means (`PopulationPrior.fit`, components by
       BIC): populations made of distinct groups keep them apart.
    The prior is fitted on at most `max_users` users (evenly spaced); every user gets its posterior.
    Returns the prior and the known users' posteriors under it.
    """
    full_terms, full_user, full_n, full_logits = terms, user, n_users, logits
    if n_users > max_users:  # the prior from an evenly spaced subset of users; posteriors for everybody
        chosen = np.unique(np.linspace(0, n_users - 1, max_users).astype(np.int64))
        remap = np.full(n_users, -1)
        remap[chosen] = np.arange(len(chosen))
        keep = remap[user] >= 0
        terms, user, n_users, logits = terms.select(np.flatnonzero(keep)), remap[user[keep]], len(chosen), logits[chosen]
    prior = LogitPrior.fit(torch.as_tensor(logits, dtype=torch.float64), min_var=min_var)
    posts = laplace_users(terms, user, n_users, prior, 1.0, logits)
    for _ in range(iters):
        means = np.stack([p.mean_logits for p in posts])  # (U, K)
        var_diag = np.stack([np.diag(p.cov_logits) for p in posts])  # (U, K)
        mu = means.mean(0)
        var = np.maximum(((means - mu) ** 2).mean(0) + var_diag.mean(0), min_var)
        prior = LogitPrior(mean=torch.as_tensor(mu), var=torch.as_tensor(var))
        posts = laplace_users(terms, user, n_users, prior, 1.0, logits)
    pop = PopulationPrior.from_gaussian(prior)
    if logits.shape[1] > 1 and n_users >= 20 and max_components > 1:
        pop = PopulationPrior.fit(posts, max_components=max_components)
    return pop, laplace_users(full_terms, full_user, full_n, pop, 1.0, full_logits)


# ------------------------------------------------------------------------------------------- predictions
def predictive_probability(post: UserPosterior, terms: PairTerms, n_samples: int = N_SAMPLES) -> np.ndarray:
    """(n,) posterior predictive P(chosen preferred) = mean over posterior draws of sigmoid(z)."""
    return _sigmoid(terms.logits(post.sample_weights(n_samples))).mean(0)


def expected_information_gain(post: UserPosterior, terms: PairTerms, n_samples: int = N_SAMPLES_EIG) -> np.ndarray:
    """(n,) mutual information (nats) between the user's answer to each pair and the user's weights.

    I(y; w) = H[E_w p(y | w)] - E_w H[p(y | w)], estimated over fixed posterior draws (BALD). Zero for
    a pair every plausible user answers the same way (or a coin flip for all of them); large for a
    pair whose answer depends on where the user sits. Orientation-free: I is the same for (a, b) and (b, a).
    The entropy of sigmoid(z) is computed as softplus(z) - z sigmoid(z) (one exp and one log1p per
    draw and pair, float32).
    """
    z = terms.logits(post.sample_weights(n_samples)).astype(np.float32)  # (S, n)
    e = np.exp(-np.abs(z))
    p = np.where(z >= 0, 1.0, e) / (1.0 + e)  # sigmoid(z)
    mean_entropy = (np.maximum(z, 0) + np.log1p(e) - z * p).mean(0)  # E_w H[p]
    return np.maximum(_binary_entropy(p.mean(0).astype(np.float64)) - mean_entropy, 0.0)


def select_queries(post: UserPosterior, terms: PairTerms, n: int = 1, n_samples: int = N_SAMPLES_EIG) -> tuple[np.ndarray, np.ndarray]:
    """Indices (n,) of the pool pairs with the highest expected information gain, and their gains.

    Ties keep pool order (stable). For n > 1 the n best single-query gains are returned (the pairs are
    asked one at a time; the posterior is updated between answers by the caller).
    """
    gain = expected_information_gain(post, terms, n_samples)
    order = np.argsort(-gain, kind="stable")[:n]
    return order, gain[order]


def reward_samples(post: UserPosterior, net: RewardNet, prompt: torch.Tensor, responses: torch.Tensor,
                   n_samples: int = N_SAMPLES, offset: torch.Tensor | None = None) -> np.ndarray:
    """(S, R) rewards s_w(t, x) of R responses under S posterior draws of the weights.

    prompt: (R, D) or (1, D) prompt embeddings; responses: (R, D). f and the anchors run once; only the
    ideal points and the link are evaluated per draw. offset: the user's personal offset delta_u (r,)
    of an offset model (models/offset.py), held at its MAP value under every draw of the weights:
    latent offsets move each draw's ideal point, input offsets add <delta_u, h(x)> to every draw.
    A network without a mixture (BTL, with personal heads or not) has one weight: all draws agree.
    """
    w = torch.as_tensor(post.sample_weights(n_samples), dtype=responses.dtype, device=responses.device)  # (S, K)
    r = responses.shape[0]
    with torch.no_grad():
        net.eval()
        if not net.mixture:  # BTL (+ personal heads): K = 1, every draw is the same reward
            w1 = w[:1].expand(r, -1)  # (R, 1)
            if offset is not None:
                w1 = torch.cat([w1, offset.to(w1).expand(r, -1)], -1)  # (R, 1 + r)
            scores = net.score(w1, prompt.expand(r, -1), responses)  # (R,)
            return scores.expand(len(w), -1).double().cpu().numpy()  # (S, R)
        fx = net.embed_response(responses)  # (R, d)
        anchors = net.anchors(prompt).expand(r, -1, -1)  # (R, K, d)
        ideal = torch.einsum("sk,rkd->srd", w, anchors)  # (S, R, d)
        if offset is not None and net.offset_kind == "latent":
            ideal = ideal + offset.to(ideal)  # (S, R, d): a_u = sum_k w_k anchor_k + delta_u
        scores = net.link(fx.expand(len(w), -1, -1).reshape(-1, fx.shape[-1]), ideal.reshape(-1, fx.shape[-1]))
        scores = scores.reshape(len(w), r)  # (S, R)
        if offset is not None and net.offset_kind == "input":
            scores = scores + (input_features(responses) @ offset.to(responses))[None]  # (S, R) + (1, R)
    return scores.double().cpu().numpy()


def parse_risk(risk: str | None) -> float | None:
    """The quantile a `risk` argument asks for: None or "mean" -> None (the posterior mean);
    "quantile:q" with 0 < q < 1 -> q; anything else: ConfigError naming the accepted forms."""
    if risk is None or risk == "mean":
        return None
    if isinstance(risk, str) and risk.startswith("quantile:"):
        try:
            q = float(risk.split(":", 1)[1])
        except ValueError:
            q = -1.0
        if 0 < q < 1:
            return q
    raise ConfigError(f"risk={risk!r}: expected 'mean' or 'quantile:Q' with 0 < Q < 1, e.g. 'quantile:0.1'")
