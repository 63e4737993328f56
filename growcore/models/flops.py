"""Forward FLOPs and parameter counts of image models.

Convention: 2 FLOPs per multiply-add of a ``Conv2d`` or ``Linear`` (the usual convention of
the growth papers' cost plots); biases, normalisation, activations and pooling are not
counted, they are a few per cent of a convolution's cost.
"""

from __future__ import annotations

import torch
from torch import nn

_FLOPS_CACHE: dict[tuple, int] = {}


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs for one example of shape ``input_shape`` (e.g. ``(3, 32, 32)``).

    Runs one forward pass of a zero batch of size 1 in evaluation mode (so BatchNorm's
    running statistics are untouched) with hooks on every ``Conv2d`` and ``Linear``: a
    convolution costs ``2 * out_elements * in_channels / groups * kh * kw``, a linear layer
    ``2 * out_elements * in_features``.
    """
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            per_output = module.in_channels // module.groups * kh * kw
        else:
            per_output = module.in_features
        total += 2 * output[0].numel() * per_output

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    modes = {m: m.training for m in model.modules()}
    parameter = next(model.parameters())
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=parameter.device, dtype=parameter.dtype))
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode
    return total


def architecture_signature(model: nn.Module) -> tuple:
    """The shapes of every conv/linear weight with its name: equal signatures, equal FLOPs."""
    return tuple((name, tuple(m.weight.shape), getattr(m, "stride", None),
                  getattr(m, "groups", None)) for name, m in model.named_modules()
                 if isinstance(m, (nn.Conv2d, nn.Linear)))


class Measured:
    """Mixin for image models: ``flops_per_example`` (cached per architecture) and counts.

    The model sets ``self.input_shape`` (``(C, H, W)`` of one example). The training loop may
    call :meth:`flops_per_example` every step: after the first call for an architecture it
    costs one pass over the module names, not a forward pass; a grown model has a new
    signature and is counted again.
    """

    input_shape: tuple[int, int, int]

    def flops_per_example(self, input_shape: tuple[int, ...] | None = None) -> int:
        """Forward FLOPs per example (see :func:`count_flops`)."""
        shape = tuple(input_shape or self.input_shape)
        key = (type(self).__name__, shape, architecture_signature(self))
        if key not in _FLOPS_CACHE:
            _FLOPS_CACHE[key] = count_flops(self, shape)
        return _FLOPS_CACHE[key]

    def num_parameters(self, trainable_only: bool = True) -> int:
        """Number of (trainable) parameters."""
        return sum(p.numel() for p in self.parameters()
                   if p.requires_grad or not trainable_only)
