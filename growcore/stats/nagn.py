"""NAGN's statistic, collected for free during the normal backward pass (Wang, Mille, Hidane).

``NAGN_l = sqrt( E_{(x, y) in D} [ ||dL/dz_l||_2^2 / T_l ] )`` with ``z_l`` the layer's
pre-activation output and ``T_l`` its number of elements per example (section 3).
:class:`NAGNObserver` accumulates it from hooks; :func:`nagn_direct` is the slow reference.
"""

from __future__ import annotations

import math
from collections import deque

import torch
from torch import nn

from growcore.models.sites import width_sites


# ---------------------------------------------------------------- the statistic itself
def nagn_from_sums(square_sums, counts) -> torch.Tensor:
    """NAGN per layer from accumulated ``sum_i ||dL_i/dz_{l,i}||^2 / T_l`` and example counts.

    Parameters
    ----------
    square_sums : sequence of float, one per layer
        Sum over examples of the squared gradient norm divided by ``T_l``.
    counts : sequence of int, one per layer
        Number of examples in each sum.

    Returns
    -------
    Tensor [L], float64: ``NAGN_l = sqrt(square_sums_l / counts_l)`` (section 3).
    """
    sums = torch.as_tensor(square_sums, dtype=torch.float64)
    n = torch.as_tensor(counts, dtype=torch.float64)
    if (n <= 0).any():
        raise ValueError("every layer needs at least one example: run a backward pass first")
    return (sums / n).sqrt()


# ---------------------------------------------------------------- collecting it for free
def default_layers(model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are the pre-activations ``z_l``, forward order, output last.

    For a model with width sites (every model of :mod:`growcore.models`, a model defining
    ``width_sites()``, an ``nn.Sequential`` by inspection): each site's BatchNorm if it has
    one, else its producer, then the consumer of the last site (the output layer). The BatchNorm
    output is what the activation reads; the paper treats normalisation as "implicit
    operations between indices" without saying on which side of it ``z_l`` lies. We take the
    activation's input because it does not depend on the scale of the convolution's weights,
    which BatchNorm cancels (see :func:`producer_layers` for the other reading). Any other
    model gives all its ``Linear`` and ``Conv2d`` modules in registration order.
    """
    try:
        sites = width_sites(model)
    except TypeError:  # a model that lists no sites
        sites = []
    if not sites:
        return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    names = [site.norm or site.producer for site in sites] + [sites[-1].consumer]
    return [model.get_submodule(name) for name in names]


def producer_layers(model: nn.Module) -> list[nn.Module]:
    """Like :func:`default_layers` but before BatchNorm: ``z_l = W_l h_{l-1} + b_l`` literally."""
    sites = width_sites(model)
    return [model.get_submodule(name)
            for name in [site.producer for site in sites] + [sites[-1].consumer]]


class NAGNObserver:
    """Squared activation-gradient norms collected during the normal backward pass.

    Attach it to a model (the training loop's ``observers=[...]`` re-attaches it after each
    growth); every backward pass then adds, per watched layer, ``sum_i ||dL_i/dz_i||^2 /
    T_l`` over the batch. The loss of the loop is the batch *mean*, so the per-example
    gradient is the batch size times the gradient the hook sees. With batch normalisation
    in training mode the examples of a batch are coupled and this per-example gradient is
    the standard one of the batch loss. The sums of the last ``window`` batches are kept.

    Parameters
    ----------
    window : int
        Number of recent training batches the statistic averages over (the data subset D).
    layers : callable ``model -> list[nn.Module]``
        Which modules' outputs are the pre-activations ``z_l`` (default :func:`default_layers`).
    """

    def __init__(self, window: int = 100, layers=default_layers):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window, self.layers = window, layers
        self.batches: deque = deque(maxlen=window)  # each: (per-layer sums, n examples)
        self._handles: list = []
        self._current: dict[int, float] = {}
        self._n_layers = 0

    def attach(self, model: nn.Module) -> None:
        self.detach()
        self.batches.clear()  # statistics of the old architecture do not describe the new one
        layers = self.layers(model)
        self._n_layers = len(layers)
        self._handles = [layer.register_forward_hook(self._forward_hook(i))
                         for i, layer in enumerate(layers)]

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _forward_hook(self, index: int):
        def hook(module, inputs, output):
            if torch.is_grad_enabled() and output.requires_grad:
                output.register_hook(self._gradient_hook(index, output.shape))
        return hook

    def _gradient_hook(self, index: int, shape: torch.Size):
        batch, per_example = shape[0], math.prod(shape[1:])

        def hook(grad: torch.Tensor) -> None:
            # kept as a tensor: no device synchronisation in the training loop
            self._current[index] = grad.detach().pow(2).sum() * (batch ** 2 / per_example)
            if len(self._current) == self._n_layers:  # the first layer's hook runs last
                sums = [self._current[i] for i in range(self._n_layers)]
                self.batches.append((sums, batch))
                self._current = {}
        return hook

    def nagn(self) -> torch.Tensor:
        """The NAGN profile [L] over the kept batches (``nagn_from_sums``)."""
        if not self.batches:
            raise ValueError("no backward pass has been observed since the last attach")
        sums = torch.stack([torch.stack(b[0]) for b in self.batches]).double().sum(dim=0)
        count = sum(b[1] for b in self.batches)
        return nagn_from_sums(sums.cpu(), [count] * self._n_layers)

    def describe(self) -> dict:
        return {"observer": "NAGN", "window_batches": self.window}


def nagn_direct(model: nn.Module, X: torch.Tensor, y: torch.Tensor,
                layers: list[nn.Module]) -> torch.Tensor:
    """NAGN by definition, one example at a time (slow; the reference for tests).

    Each example's own loss is differentiated with respect to each layer's output, so no
    batch coupling enters; for a model without batch normalisation in training mode this
    equals what :class:`NAGNObserver` collects.
    """
    sums = torch.zeros(len(layers), dtype=torch.float64)
    outputs: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for m in layers]
    try:
        for i in range(len(X)):
            outputs.clear()
            loss = nn.functional.cross_entropy(model(X[i:i + 1]), y[i:i + 1])
            grads = torch.autograd.grad(loss, outputs)
            sums += torch.tensor([g.double().pow(2).sum() / g[0].numel() for g in grads])
    finally:
        for handle in handles:
            handle.remove()
    return (sums / len(X)).sqrt()
