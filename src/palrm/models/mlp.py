"""MLPs from explicit arguments (never parsed from strings), and K independent MLPs run as one batch."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}


def activation(name: str) -> Callable[[], nn.Module]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}") from None


class MLP(nn.Sequential):
    """in_dim -> hidden[0] -> ... -> out_dim, with `act()` and dropout after every hidden layer."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (),
        act: Callable[[], nn.Module] = nn.GELU,
        dropout: float = 0.0,
    ) -> None:
        layers: list[nn.Module] = []
        prev = in_dim
        for width in hidden:
            layers += [nn.Linear(prev, width), act()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = width
        layers.append(nn.Linear(prev, out_dim))
        super().__init__(*layers)


class StackedLinear(nn.Module):
    """K independent linear maps applied to one input: (B, in) -> (B, K, out), or (B, K, in) -> (B, K, out)."""

    def __init__(self, k: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default initialisation, per map
        self.weight = nn.Parameter(torch.empty(k, in_dim, out_dim).uniform_(-bound, bound))  # (K, in, out)
        self.bias = nn.Parameter(torch.empty(k, out_dim).uniform_(-bound, bound))  # (K, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return torch.einsum("bi,kio->bko", x, self.weight) + self.bias  # (B, K, out)
        return torch.einsum("bki,kio->bko", x, self.weight) + self.bias  # (B, K, out)


class StackedMLP(nn.Module):
    """K independent MLPs with the same shape, evaluated together: (B, in) -> (B, K, out).

    Equivalent to K separate `MLP`s (no weights are shared between the K maps), in one einsum per layer.
    """

    def __init__(
        self,
        k: int,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (),
        act: Callable[[], nn.Module] = nn.GELU,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        dims = [in_dim, *hidden, out_dim]
        self.layers = nn.ModuleList(StackedLinear(k, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = act()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)  # (B, K, width)
            if i < len(self.layers) - 1:
                x = self.dropout(self.act(x))
        return x  # (B, K, out)
