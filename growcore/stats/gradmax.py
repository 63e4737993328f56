"""GradMax's statistic (Evci et al. 2022): the matrix ``G`` whose singular vectors give the
new units' outgoing weights, and the norms new units are scaled to.

With the new incoming weights ``W_l^new = 0`` and an activation with ``f(0) = 0``,
``f'(0) = 1``, the gradient of the new incoming weights is linear in the new outgoing weights
(eq. (9)), ``dL/dW_l^new = W_{l+1}^{new T} G`` with ``G = E_D[dL/dz_{l+1} h_{l-1}^T]``.

For convolutions (Appendix B) ``G`` is the matrix of size
``(o_{l+1} h_{l+1} w_{l+1}) x (i_l h_l w_l)`` that maps one new unit's outgoing filters to the
gradient of its incoming filter. :func:`gradient_matrix` builds it from image patches
(im2col) of the producer's input, taken again over the consumer's kernel, which is exact at
padded borders and across strides too; :func:`auxiliary_kernel_matrix` builds it the paper's
way, from the gradient of an auxiliary kernel of size ``k_l + k_{l+1} - 1`` (exact for
unpadded convolutions).

Between producer and consumer the statistic assumes that a new channel passes unchanged:
exact for the activation with ``f'(0) = 1``, average pooling and BatchNorm in eval mode with
the new channel's statistics (mean 0, variance 1, up to its epsilon); max pooling is treated
as average pooling and depthwise convolutions as the identity. A BatchNorm in train mode
instead centres the new channel's gradient over the batch and scales it by ``1/sqrt(eps)``
(paper Appendix C), which is why section 4.2 uses small outgoing weights.

Used by the GradMax initialisers (:mod:`growcore.how.width`) and by the where-criterion of the
largest singular value (:mod:`growcore.where.gradmax`).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from growcore.data import Split
from growcore.losses import LOSSES, as_seed_batch
from growcore.models.sites import width_sites
from growcore.ops.widen import unit_sizes, width
from growcore.stats.probe import FULL_CHUNK, unchanged_buffers

CONV_MATRICES = ("exact", "auxiliary")
CHUNK = 16  # examples per chunk when contracting convolution patches (memory bound)




@dataclass
class SiteData:
    """One batch's statistics at one site (from :func:`collect`).

    ``h``: the producer's input; ``dz``: ``[N, o, L]`` gradients of the loss at the consumer's
    outputs (L positions); ``grid``: the producer's output grid ``(H, W)`` (``()`` for a
    Linear producer); ``consumer_grid``: the consumer's input grid; ``weight``: the factor that
    makes the sum over batches an expectation over the data set (the loss is a batch mean).
    """

    h: torch.Tensor
    dz: torch.Tensor
    grid: tuple[int, ...]
    consumer_grid: tuple[int, ...]
    weight: float


def collect(model: nn.Module, sites: Sequence, split: Split, loss: str,
            batch_size: int | None = None,
            generator: torch.Generator | None = None) -> dict[object, list[SiteData]]:
    """Record the producer inputs and the consumer-output gradients at ``sites``.

    ``batch_size=None`` uses the whole training set (in chunks of :data:`FULL_CHUNK`, weighted
    so that the statistics are the full-data expectation); an int uses one random minibatch of
    that size (the paper's "large minibatch", section 3). The model's parameters get no
    gradients and the model is not changed (BatchNorm running statistics are restored); a
    BatchNorm in train mode normalises with the batch statistics, as in a training step.
    """
    n = len(split.y_train)
    if batch_size is None:
        batches = list(split.chunks(FULL_CHUNK))
    else:
        index = torch.randperm(n, generator=generator)[:batch_size].to(split.y_train.device)
        batches = [(split.X_train[index], split.y_train[index])]
    total = sum(len(y) for _, y in batches)
    data: dict[object, list[SiteData]] = {site: [] for site in sites}
    with unchanged_buffers(model):
        for X, y in batches:
            _collect_batch(model, sites, X, y, loss, len(y) / total, data)
    return data


def _collect_batch(model, sites, X, y, loss: str, weight: float, data: dict) -> None:
    """One batch's statistics at ``sites``, appended to ``data`` with ``weight``."""
    seen: dict[str, tuple] = {}
    names = {name for site in sites for name in (site.producer, site.consumer)}
    hooks = [model.get_submodule(name).register_forward_hook(
                 lambda m, i, o, name=name: seen.update({name: (i[0].detach(), o)}))
             for name in names]
    try:
        value = LOSSES[loss](as_seed_batch(model(X)), y).sum()
    finally:
        for hook in hooks:
            hook.remove()
    grads = torch.autograd.grad(value, [seen[site.consumer][1] for site in sites])
    for site, dz in zip(sites, grads):
        h, z = seen[site.producer]
        x_consumer = seen[site.consumer][0]
        data[site].append(SiteData(h, dz.detach().reshape(len(X), dz.shape[1], -1),
                                   tuple(z.shape[2:]), tuple(x_consumer.shape[2:]), weight))


def _producer_patches(producer: nn.Module, h: torch.Tensor, grid: tuple) -> torch.Tensor:
    """``[N, D, H, W]``: the producer's input patch at each of its output positions."""
    if isinstance(producer, nn.Conv2d):
        P = F.unfold(h, producer.kernel_size, producer.dilation, producer.padding,
                     producer.stride)
        return P.view(len(h), P.shape[1], *grid)
    return h.reshape(len(h), -1, 1, 1)


def _to_consumer_grid(P: torch.Tensor, consumer: nn.Module, consumer_grid: tuple,
                      spatial: int) -> torch.Tensor:
    """Resize the producer's output grid to the consumer's input grid by average pooling.

    Exact for average pooling (global average pooling before a classifier, or none); for max
    pooling of the all-zero new channel the derivative is a tie, and averaging is the
    symmetric choice (an approximation).
    """
    if isinstance(consumer, nn.Conv2d):
        target = consumer_grid
    elif spatial == 1:
        target = (1, 1)
    elif P.shape[2] * P.shape[3] == spatial:
        target = tuple(P.shape[2:])
    else:
        side = math.isqrt(spatial)
        if side * side != spatial:
            raise ValueError(f"cannot infer the grid of a flatten with spatial={spatial}")
        target = (side, side)
    return P if tuple(P.shape[2:]) == tuple(target) else F.adaptive_avg_pool2d(P, target)


def _consumer_patches(P: torch.Tensor, consumer: nn.Module) -> torch.Tensor:
    """``[N, D * R, L]``: for each consumer output position, the producer patches it reads."""
    if isinstance(consumer, nn.Conv2d):
        return F.unfold(P, consumer.kernel_size, consumer.dilation, consumer.padding,
                        consumer.stride)
    return P.flatten(1).unsqueeze(-1)  # channel-major flatten, one output "position"


def unit_inputs(model: nn.Module, site, batch: SiteData, start: int = 0,
                stop: int | None = None) -> torch.Tensor:
    """``[N, D * R, L]``: what a new unit's (incoming x outgoing) weights multiply, per example.

    Entry ``(d, r), q`` is the producer input ``d`` that reaches consumer output position ``q``
    through the new unit at kernel offset ``r``.
    """
    producer, consumer = model.get_submodule(site.producer), model.get_submodule(site.consumer)
    P = _producer_patches(producer, batch.h[start:stop], batch.grid)
    P = _to_consumer_grid(P, consumer, batch.consumer_grid, site.spatial)
    return _consumer_patches(P, consumer)


def gradient_matrix(model: nn.Module, site, data: list[SiteData]) -> torch.Tensor:
    """The matrix of eq. (11) (dense) or eq. (20) (convolutions), shape ``[o R, D]``.

    Row ``(o, r)`` is the outgoing weight from a new unit to consumer output ``o`` at kernel
    offset ``r``; column ``d`` is the new unit's incoming weight ``d``. For a Linear -> Linear
    site it is ``E[dL/dz_{l+1} h_{l-1}^T]`` (eq. (9)). The new unit's incoming gradient is
    ``G^T w`` for outgoing weights ``w`` (eqs. (9), (16)), exactly, borders included.
    """
    D, o, R = unit_sizes(model, site)
    G = torch.zeros(o, D * R, dtype=data[0].dz.dtype, device=data[0].dz.device)
    for batch in data:
        for start in range(0, len(batch.h), CHUNK):
            Q = unit_inputs(model, site, batch, start, start + CHUNK)
            G += batch.weight * torch.einsum("noq,nmq->om", batch.dz[start:start + CHUNK], Q)
    return G.view(o, D, R).transpose(1, 2).reshape(o * R, D)


def auxiliary_applies(model: nn.Module, site, data: list[SiteData]) -> bool:
    """Whether :func:`auxiliary_kernel_matrix` can serve ``site``: two stride-1, dilation-1
    convolutions with nothing that changes the grid (pooling) between them."""
    convs = [model.get_submodule(name) for name in (site.producer, site.consumer)]
    return (all(isinstance(m, nn.Conv2d) and m.stride == (1, 1) and m.dilation == (1, 1)
                for m in convs) and tuple(data[0].grid) == tuple(data[0].consumer_grid))


def auxiliary_kernel_matrix(model: nn.Module, site, data: list[SiteData]) -> torch.Tensor:
    """The matrix of eq. (20) the paper's way (Appendix B): an auxiliary kernel's gradient.

    A zero auxiliary convolution ``W_aux`` from the producer's input to the consumer's output,
    of kernel size ``k_l + k_{l+1} - 1`` and padding ``p_l + p_{l+1}`` (eq. (19)), has the
    gradient ``dL/dW_aux`` (eq. (14)); extracting patches gives
    ``G[(o, a, b), (c, u, v)] = dL/dW_aux[o, c, a + u, b + v]``. It equals
    :func:`gradient_matrix` when neither convolution pads (with padding the composition of two
    convolutions differs from one at the borders). Strides and dilations must be 1.
    """
    producer, consumer = model.get_submodule(site.producer), model.get_submodule(site.consumer)
    if not auxiliary_applies(model, site, data):
        raise ValueError(f"the auxiliary kernel needs two Conv2d layers with stride 1, "
                         f"dilation 1 and no pooling between them; site {site} has not: use "
                         "gradient_matrix")
    (kh1, kw1), (kh2, kw2) = producer.kernel_size, consumer.kernel_size
    size = (kh1 + kh2 - 1, kw1 + kw2 - 1)
    padding = tuple(a + b for a, b in zip(producer.padding, consumer.padding))
    c, o = producer.in_channels, consumer.out_channels
    G_aux = 0
    for batch in data:
        patches = F.unfold(batch.h, size, padding=padding)
        G_aux = G_aux + batch.weight * torch.einsum("noq,nmq->om", batch.dz, patches)
    G_aux = G_aux.view(o, c, *size)
    a, b, u, v = (torch.arange(n) for n in (kh2, kw2, kh1, kw1))
    rows = (a.view(-1, 1, 1, 1) + u.view(1, 1, -1, 1)).expand(kh2, kw2, kh1, kw1)
    cols = (b.view(1, -1, 1, 1) + v.view(1, 1, 1, -1)).expand(kh2, kw2, kh1, kw1)
    G = G_aux[:, :, rows, cols]  # [o, c, kh2, kw2, kh1, kw1]
    return G.permute(0, 2, 3, 1, 4, 5).reshape(o * kh2 * kw2, c * kh1 * kw1)


def incoming_gradient_norm(G: torch.Tensor, outgoing: torch.Tensor) -> torch.Tensor:
    """``||dL/dW_l^new||_F`` for outgoing weights ``[o, k, R]``: ``||G^T W_{l+1}^new||_F``
    (eq. (9)), the objective of eq. (11)."""
    o, k, R = outgoing.shape
    W = outgoing.permute(0, 2, 1).reshape(o * R, k)
    return (G.T @ W).norm()


def outgoing_norms(model: nn.Module, site) -> torch.Tensor:
    """Norm of each existing unit's outgoing weights ``[units]``."""
    consumer = model.get_submodule(site.consumer)
    W = consumer.weight.detach()
    units = width(model, site)
    return W.reshape(W.shape[0], units, -1).transpose(0, 1).reshape(units, -1).norm(dim=1)


def incoming_norms(model: nn.Module, site) -> torch.Tensor:
    """Norm of each existing unit's incoming weights ``[units]``."""
    return model.get_submodule(site.producer).weight.detach().flatten(1).norm(dim=1)


@dataclass
class TargetNorm:
    """The norm each new unit's weights are scaled to (GradMax section 3: "mean norm of the
    existing neurons", times ``scale``; the public code uses 0.5), or a fixed ``value``
    (paper section 4.2: ``epsilon = 1e-4`` on the outgoing side)."""

    scale: float = 0.5
    value: float | None = None

    def __call__(self, existing: torch.Tensor) -> float:
        if self.value is not None:
            return self.value
        return self.scale * float(existing.detach().mean())


def _unit_columns(U: torch.Tensor, o: int, R: int, norm: float) -> torch.Tensor:
    """Columns ``[o R, k]`` (unit length) -> outgoing weights ``[o, k, R]`` of norm ``norm``."""
    U = U / U.norm(dim=0, keepdim=True).clamp_min(1e-30)
    return (norm * U).reshape(o, R, -1).permute(0, 2, 1)


class GradientMatrices:
    """The gradient matrix of any width site of a model, from one pass over the data.

    The statistics of all of the model's sites come from one pass (one minibatch) and are
    reused while the model's parameters do not change, so that growing every site at once
    costs one forward-backward pass (paper section 4.2).

    Parameters
    ----------
    batch_size : int, optional
        None: the statistic over the whole training set; an int: over one random minibatch.
    conv_matrix : str
        ``"exact"`` (:func:`gradient_matrix`) or ``"auxiliary"`` (the paper's auxiliary
        kernel, :func:`auxiliary_kernel_matrix`, where it applies) for Conv2d -> Conv2d sites.
    generator : torch.Generator
        Source of the minibatch draws.
    """

    def __init__(self, batch_size: int | None, conv_matrix: str, generator: torch.Generator):
        if conv_matrix not in CONV_MATRICES:
            raise ValueError(f"conv_matrix must be one of {CONV_MATRICES}, got {conv_matrix!r}")
        self.batch_size, self.conv_matrix, self.generator = batch_size, conv_matrix, generator
        self._cached: tuple = (lambda: None, None, {})  # (model, versions and loss, data)

    def __call__(self, model: nn.Module, site, split: Split, loss: str, probe=None
                 ) -> torch.Tensor:
        """The matrix of ``site`` under the training loss ``loss``.

        With a growth step's ``probe`` (:class:`growcore.stats.Probe`), the statistics of one
        pass are shared with every other part of the step that asks for the same batch size:
        GradMax's singular value choosing where and GradMax filling the units read one pass.
        """
        if probe is not None:
            key = ("gradmax statistics", id(model), loss, self.batch_size)
            cached = probe.cached(key, lambda: self._collect(model, site, split, loss))
            if site not in cached:
                cached.update(self._collect(model, site, split, loss))
        else:
            versions = (tuple(p._version for p in model.parameters()), loss, id(split))
            ref, cached_versions, cached = self._cached
            if ref() is not model or cached_versions != versions or site not in cached:
                cached = self._collect(model, site, split, loss)
                self._cached = (weakref.ref(model), versions, cached)
        data = cached[site]
        conv = isinstance(model.get_submodule(site.consumer), nn.Conv2d)
        if conv and self.conv_matrix == "auxiliary" and auxiliary_applies(model, site, data):
            return auxiliary_kernel_matrix(model, site, data)
        return gradient_matrix(model, site, data)

    def _collect(self, model: nn.Module, site, split: Split, loss: str) -> dict:
        """One pass: the statistics of every width site of the model (and of ``site``)."""
        try:
            sites = width_sites(model)
        except TypeError:  # a model that lists no sites: this one alone
            sites = []
        sites = sites if site in sites else [site]
        return collect(model, sites, split, loss, self.batch_size, self.generator)
