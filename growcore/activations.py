"""Activations, including ReLU with a chosen derivative at 0.

PyTorch's ReLU uses ``relu'(0) = 0``. That convention matters exactly where growth puts
units: an identity layer after a ReLU layer (SensLI eq. 2.6) receives pre-activations that
are exactly 0 for every inactive unit, and GradMax's zero-initialised incoming weights give
new neurons a pre-activation of exactly 0. ``relu'(0) = 1`` is the GradMax paper's choice
("relu1"); ``relu'(0) = 1/2`` is what symmetric finite differences see.
"""

from __future__ import annotations

import torch


class _ReLUWithSlopeAtZero(torch.autograd.Function):
    # forward and setup_context apart, so that torch.func.vmap batches it (seed-stacked models)
    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, slope_at_zero: float) -> torch.Tensor:
        return torch.relu(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, slope_at_zero = inputs
        ctx.save_for_backward(x)
        ctx.slope_at_zero = slope_at_zero

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        if ctx.slope_at_zero == 1.0:  # one pass, not five: seed-batched runs are memory bound
            return grad.masked_fill(x < 0, 0.0), None
        slope = (x > 0).to(grad.dtype) + ctx.slope_at_zero * (x == 0).to(grad.dtype)
        return grad * slope, None


def relu_with_slope_at_zero(x: torch.Tensor, slope_at_zero: float) -> torch.Tensor:
    """ReLU whose backward pass uses ``relu'(0) = slope_at_zero``."""
    return _ReLUWithSlopeAtZero.apply(x, slope_at_zero)


ACTIVATIONS = {
    "relu": torch.relu,                                            # relu'(0) = 0 (PyTorch)
    "relu_half": lambda x: relu_with_slope_at_zero(x, 0.5),        # relu'(0) = 1/2
    "relu1": lambda x: relu_with_slope_at_zero(x, 1.0),            # relu'(0) = 1 (GradMax)
    "tanh": torch.tanh,
}
RELUS = ("relu", "relu_half", "relu1")


class ReLUWithSlopeAtZero(torch.nn.Module):
    """``nn.Module`` form of :func:`relu_with_slope_at_zero`, for model builders that take an
    activation factory (e.g. ``functools.partial(ReLUWithSlopeAtZero, 1.0)`` for GradMax)."""

    def __init__(self, slope_at_zero: float = 1.0):
        super().__init__()
        self.slope_at_zero = slope_at_zero

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu_with_slope_at_zero(x, self.slope_at_zero)

    def extra_repr(self) -> str:
        return f"slope_at_zero={self.slope_at_zero}"


# Modules whose output x satisfies f(x) = x, so that an identity layer followed by the same
# activation reproduces it (SensLI eq. 2.6, the Net2Net identity): every ReLU form and ReLU6
# (its output lies in [0, 6], where ReLU6 is the identity).
IDEMPOTENT_MODULES = (torch.nn.ReLU, torch.nn.ReLU6, ReLUWithSlopeAtZero)


def is_idempotent(module: torch.nn.Module) -> bool:
    """Whether ``module`` is an activation with ``f(f(x)) = f(x)`` (a ReLU form or ReLU6)."""
    return isinstance(module, IDEMPOTENT_MODULES)
