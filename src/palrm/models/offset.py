"""Personal offsets: what is individual about a user beyond PAL's K-mixture (`model.offset`).

PAL places user u's ideal point on the convex hull of K shared anchors, a_u = sum_k w_uk anchor_k
(anchor_k = f(p_k) for PAL-A, g_k(phi(t)) for PAL-B). Real users are not K points on a simplex, so
the offset model adds a personal vector delta_u with a Gaussian prior that pulls it to zero:

    offset="latent":  a_u = sum_k w_uk anchor_k + delta_u,   delta_u in R^d
                      s_u(t, x) = -||f(phi(x)) - a_u(t)||^2
    offset="input":   s_u(t, x) = -||f(phi(x)) - sum_k w_uk anchor_k||^2 + <delta_u, h(x)>,
                      h(x) = [phi(x), ||phi(x)||^2] in R^(D+1)   (a linear head per user on the
                      frozen features, able to express any ideal point in the embedding space)
    prior:            delta_u ~ N(0, sigma^2 I_r)                 (r = d or D + 1)

For either kind the preference logit is PAL's logit plus a term linear in delta_u:

    z_ui = z^PAL_ui(w_u) + <delta_u, x_ui>,   x_ui = 2 (f(c_i) - f(r_i))   (latent)
                                              x_ui = h(c_i) - h(r_i)        (input)

so given w_u, delta_u is the MAP estimate of a Bayesian logistic regression with offsets
b_ui = z^PAL_ui(w_u):

    delta_u = argmin_delta  sum_i softplus(-(b_ui + <delta, x_ui>)) + ||delta||^2 / (2 sigma^2),

a strictly convex problem in r numbers per user (`map_offsets`: L-BFGS in float64 on all users at
once; the objective is a sum over users, so they do not interact). The shared network and the
mixture weights are trained exactly as in PAL (the offsets are a buffer, zero during training);
the offsets are fitted afterwards, for known users on their training pairs and for new users on
their shots after their K weights. sigma^2 is chosen on the validation pairs of known users
(`model.offset_var = 0`, the default) from `OFFSET_VARS` scaled by 1 / E||x||^2, and stored.

Reduction to PAL: offset="none", sigma^2 -> 0 and delta_u = 0 all give PAL's logits exactly
(tested); n = 0 shots gives delta_u = 0 (the mixture alone).
"""

from __future__ import annotations

import torch

OFFSET_VARS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)  # sigma^2 grid, in units of 1 / mean ||x||^2


def offset_dim(kind: str, d: int, input_dim: int) -> int:
    """r: d for latent offsets, D + 1 for input-space heads."""
    return {"latent": d, "input": input_dim + 1}[kind]


def input_features(x: torch.Tensor) -> torch.Tensor:
    """h(x) = [phi(x), ||phi(x)||^2]: (B, D) -> (B, D + 1)."""
    return torch.cat([x, (x * x).sum(-1, keepdim=True)], -1)


def map_offsets(
    base: torch.Tensor,
    x: torch.Tensor,
    user: torch.Tensor,
    n_users: int,
    var: float,
    max_iter: int = 100,
) -> torch.Tensor:
    """MAP offsets (n_users, r) under the prior N(0, var I).

    base: (n,) PAL logits b_ui; x: (n, r) offset features x_ui; user: (n,) rows in 0..n_users-1.
    Minimises sum_u (1/n_u) [sum_i softplus(-(b_ui + <delta_u, x_ui>)) + ||delta_u||^2 / (2 var)]
    (dividing by n_u changes no minimiser and balances the users). Users without pairs get 0.
    """
    r = x.shape[1]
    delta = torch.zeros(n_users, r, dtype=torch.float64)
    if len(user) == 0 or var <= 0:
        return delta
    b, xd = base.detach().double().cpu(), x.detach().double().cpu()
    user = user.cpu()
    counts = torch.bincount(user, minlength=n_users).clamp(min=1).double()  # (U,)
    inv = (1.0 / counts)[user]  # (n,)
    delta.requires_grad_(True)
    opt = torch.optim.LBFGS([delta], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        z = b + (delta[user] * xd).sum(-1)  # (n,)
        loss = (torch.nn.functional.softplus(-z) * inv).sum() + ((delta**2).sum(-1) / (2 * var * counts)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return delta.detach()
