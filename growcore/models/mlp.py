"""Multilayer perceptrons of the GradMax teacher-student task (GradMax section 4.1).

``MLP([m_i, m_h, m_o])`` is the paper's ``m_i : m_h : m_o`` network, ``z_l = W_l h_{l-1}``,
``h_l = f(z_l)`` (GradMax eqs. (5)-(6)), without biases as in eq. (5) and with a linear output
layer. It follows the width-growth contract of :mod:`growcore.models.sites`: every hidden layer
is a :class:`WidthSite` (``layers.{i}`` produces, ``layers.{i+1}`` consumes).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from growcore.activations import ACTIVATIONS
from growcore.models.sites import DepthSite, WidthSite


class MLP(nn.Module):
    """Fully connected network ``widths[0] -> ... -> widths[-1]``.

    Parameters
    ----------
    widths : list of int
        Units per layer, input first, e.g. ``[20, 5, 10]`` for the paper's 20:5:10 student.
    activation : str
        A name from :data:`growcore.activations.ACTIVATIONS`. GradMax needs ``"relu1"``
        (``f(0) = 0``, ``f'(0) = 1``): with PyTorch's ``relu'(0) = 0`` the gradient never reaches
        zero-initialised incoming weights (eq. (7) has the factor ``f'(z^new) = f'(0)``).
    bias : bool
        Biases on every layer (the paper's eq. (5) has none).
    """

    def __init__(self, widths: list[int], activation: str = "relu1", bias: bool = False):
        super().__init__()
        if len(widths) < 3 or min(widths) < 1:
            raise ValueError(f"an MLP needs >= 3 positive widths (input, hidden, output); "
                             f"got {widths}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, "
                             f"got {activation!r}")
        self.activation = activation
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=bias)
                                    for a, b in itertools.pairwise(widths))

    @property
    def widths(self) -> list[int]:
        """Current widths, input first."""
        return [self.layers[0].in_features] + [layer.out_features for layer in self.layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = ACTIVATIONS[self.activation]
        for layer in self.layers[:-1]:
            x = f(layer(x))
        return self.layers[-1](x)

    def width_sites(self) -> list[WidthSite]:
        """One site per hidden layer, in forward order."""
        return [WidthSite(f"layers.{i}", None, f"layers.{i + 1}")
                for i in range(len(self.layers) - 1)]

    def depth_sites(self) -> list[DepthSite]:
        """After every hidden layer: a new ``Linear`` at index ``i + 1`` of ``layers`` reads
        ``f(z_i)`` and is followed by ``f`` (the forward pass applies ``f`` after every layer
        but the last), so the identity keeps the function when ``f`` is idempotent."""
        return [DepthSite("layers", i + 1, "plain", self.layers[i].out_features,
                          activation=self.activation) for i in range(len(self.layers) - 1)]

    def growth_sites(self) -> list:
        """Width sites, then depth sites."""
        return [*self.width_sites(), *self.depth_sites()]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_example(self) -> int:
        """Forward multiply-adds times 2 (activations and biases not counted)."""
        return sum(2 * layer.weight.numel() for layer in self.layers)


def teacher(widths: list[int], generator: torch.Generator, activation: str = "relu") -> MLP:
    """The teacher network: weights uniform in [-1, 1] (GradMax section 4.1)."""
    net = MLP(widths, activation=activation)
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(-1.0, 1.0, generator=generator)
    return net.requires_grad_(False)
