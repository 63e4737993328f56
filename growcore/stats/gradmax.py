"""GradMax's statistic (Evci et al. 2022): the matrix ``G`` whose singular vectors give the
new units' outgoing weights, and the norms new units are scaled to.

With the new incoming weights ``W_l^new = 0`` and an activation with ``f(0) = 0``,
``f'(0) = 1``, the gradient of the new incoming weights is linear in the new outgoing weights
(eq. (9)), ``dL/dW_l^new = W_{l+1}^{new T} G`` with ``G = E_D[dL/dz_{l+1} h_{l-1}^T]``.

For convolutions (Appendix B) ``G`` is the matrix of size
``(o_{l+1} h_{l+1} w_{l+1}) x (i_l h_l w_l)`` that maps one new unit's outgoing filters to the
gradient of its incoming filter. :func:`gradient_matrix` builds it from image patches
(im2col) of the producer's input, taken again over the consumer's kernel, which is exact at
padded borders and across strides too; :func:`weight_gradient_matrix` builds the same matrix
as the weight gradient of a convolution (no im2col of the patches: faster, equal to float
rounding); :func:`auxiliary_kernel_matrix` builds it the paper's way, from the gradient of an
auxiliary kernel of size ``k_l + k_{l+1} - 1`` (exact for unpadded convolutions).

What lies between producer and consumer is read in one of two ways (``statistics``):

* ``"passthrough"`` (the default) assumes that a new channel passes unchanged: exact for the
  activation with ``f'(0) = 1``, average pooling and BatchNorm in eval mode with the new
  channel's statistics (mean 0, variance 1, up to its epsilon); max pooling is treated as
  average pooling and depthwise convolutions as the identity. A BatchNorm in train mode
  instead centres the new channel's gradient over the batch and scales it by ``1/sqrt(eps)``
  (paper Appendix C), which is why section 4.2 uses small outgoing weights.
* ``"virtual"`` differentiates through *virtual new units*: the pass runs on a copy of the
  model whose producers output ``D`` extra channels of value 0 (a new unit's pre-activation
  for ``W_l^new = 0``), carried by the true layers in between (BatchNorm in the model's mode
  with the new channels' parameters, activation, pooling, depthwise filters) and dropped at
  the consumer. The Jacobian ``J`` of that path at 0, applied to the producer patches ``P``
  (channel ``d`` of ``J P`` is what the incoming weight ``e_d`` puts at the consumer's input,
  to first order), replaces the pass-through, so that ``G = E[dL/dz_{l+1} (J P)^T]`` is the
  exact eq. (9) for any per-channel layers in between, including the tie rule of max pooling
  at 0 and the batch coupling of BatchNorm in train mode. Exact means: the gradient of the
  grown network at ``W_l^new = 0``, i.e. its first backward pass. There every new channel is
  0, so max pooling routes the gradient by its tie rule (PyTorch: the first position of each
  window) and ``relu1`` by its convention ``f'(0) = 1``; once the first step has made
  ``W_l^new`` non-zero, both select by the new channel's own values instead.

The top-k left singular vectors of ``G`` (eq. (11)) come from :func:`singular_directions`:
the full SVD, the eigendecomposition of the smaller Gram matrix, or a randomised block Krylov
iteration.

Used by the GradMax initialisers (:mod:`growcore.how.width`) and by the where-criterion of the
largest singular value (:mod:`growcore.where.gradmax`).
"""

from __future__ import annotations

import copy
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
from growcore.ops.widen import _grow_depthwise, _grow_norm, unit_sizes, width
from growcore.stats.probe import FULL_CHUNK, unchanged_buffers

CONV_MATRICES = ("exact", "auxiliary", "weight_gradient")
STATISTICS = ("passthrough", "virtual")
SOLVERS = ("svd", "gram", "lowrank", "krylov")
CHUNK = 16  # examples per chunk when contracting convolution patches (memory bound)
WEIGHT_GRADIENT_CHUNK = 128  # examples per chunk of weight_gradient_matrix (memory bound)
PRODUCT_POSITIONS = 4  # weight_gradient_matrix: one matrix product at grids this small (bench)
LOWRANK_OVERSAMPLING = 8  # random start directions beyond k (block size q = k + 8)
LOWRANK_DEPTH = 8  # Krylov blocks between convergence checks
LOWRANK_RESIDUAL = 100  # converged: ||G v_j - s_j u_j|| <= 100 eps s_1 for the top k
LOWRANK_SEED = 0  # the start is a fixed draw: the solver is a deterministic function of G
KRYLOV_CHECK = 2  # "krylov": Krylov blocks between checks of the objective
KRYLOV_TOLERANCE = 1e-5  # "krylov": stop once a check adds less than this to the objective


@dataclass
class SiteData:
    """One batch's statistics at one site (from :func:`collect`).

    ``h``: the producer's input; ``dz``: ``[N, o, L]`` gradients of the loss at the consumer's
    outputs (L positions); ``grid``: the producer's output grid ``(H, W)`` (``()`` for a
    Linear producer); ``consumer_grid``: the consumer's input grid; ``weight``: the factor that
    makes the sum over batches an expectation over the data set (the loss is a batch mean);
    ``through``: with ``statistics="virtual"``, ``J P`` of the module docstring, ``[N, D,
    *consumer_grid]`` (``[N, D, spatial]`` for a Linear consumer), else None.
    """

    h: torch.Tensor
    dz: torch.Tensor
    grid: tuple[int, ...]
    consumer_grid: tuple[int, ...]
    weight: float
    through: torch.Tensor | None = None


def collect(model: nn.Module, sites: Sequence, split: Split, loss: str,
            batch_size: int | None = None, generator: torch.Generator | None = None,
            statistics: str = "passthrough") -> dict[object, list[SiteData]]:
    """Record the producer inputs and the consumer-output gradients at ``sites``.

    ``batch_size=None`` uses the whole training set (in chunks of :data:`FULL_CHUNK`, weighted
    so that the statistics are the full-data expectation); an int uses one random minibatch of
    that size (the paper's "large minibatch", section 3). The model's parameters get no
    gradients and the model is not changed (BatchNorm running statistics are restored); a
    BatchNorm in train mode normalises with the batch statistics, as in a training step.
    ``statistics="virtual"`` runs the pass on a copy with virtual new units and also records
    ``J P`` (:attr:`SiteData.through`, module docstring); the copy's memory per site is ``D``
    channels on the producer's grid.
    """
    if statistics not in STATISTICS:
        raise ValueError(f"statistics must be one of {STATISTICS}, got {statistics!r}")
    n = len(split.y_train)
    if batch_size is None:
        batches = list(split.chunks(FULL_CHUNK))
    else:
        index = torch.randperm(n, generator=generator)[:batch_size].to(split.y_train.device)
        batches = [(split.X_train[index], split.y_train[index])]
    total = sum(len(y) for _, y in batches)
    data: dict[object, list[SiteData]] = {site: [] for site in sites}
    if statistics == "virtual":
        virtual = _virtual_copy(model, sites)
        for X, y in batches:
            _collect_virtual_batch(model, virtual, sites, X, y, loss, len(y) / total, data)
        return data
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


def _virtual_copy(model: nn.Module, sites: Sequence) -> nn.Module:
    """A copy of ``model`` whose sites' BatchNorms and depthwise convolutions carry ``D``
    more channels each, made as :func:`growcore.ops.widen.widen` makes new units' (scale 1,
    shift 0, running mean 0 and variance 1; identity depthwise filters)."""
    virtual = copy.deepcopy(model)
    for site in sites:
        D = unit_sizes(model, site)[0]
        layers = [(None, site.norm), *site.depthwise]
        for conv, norm in layers:
            if conv is not None:
                _grow_depthwise(virtual, conv, D)
            if norm is not None:
                _grow_norm(virtual, norm, D)
    return virtual


def _virtual_hooks(model: nn.Module, virtual: nn.Module, sites: Sequence, seen: dict) -> list:
    """Hooks on ``virtual``: each producer appends ``D`` virtual channels of zeros (a leaf,
    ``seen["leaf", site]``) to its output; each consumer drops them from its input
    (``seen["virtual", site]``) and reads only the model's channels, so the forward pass and
    the loss are the model's; ``seen`` also gets producer inputs and consumer outputs."""
    producers = {site.producer: site for site in sites}
    consumers = {site.consumer: site for site in sites}
    if len(consumers) != len(sites):
        raise ValueError("virtual statistics need one site per consumer")

    def forward(name):
        def hook(module, args, output):
            if name in consumers:
                seen["output", consumers[name]] = output
            if name not in producers:
                return None
            site = producers[name]
            D = unit_sizes(model, site)[0]
            leaf = output.new_zeros(len(output), D, *output.shape[2:]).requires_grad_(True)
            seen["input", site], seen["leaf", site] = args[0].detach(), leaf
            return torch.cat([output, leaf], dim=1)
        return hook

    def strip(site):
        def hook(module, args):
            x = args[0]
            keep = module.in_channels if isinstance(module, nn.Conv2d) else module.in_features
            seen["virtual", site] = x[:, keep:]
            return (x[:, :keep], *args[1:])
        return hook

    handles = [virtual.get_submodule(name).register_forward_hook(forward(name))
               for name in {**producers, **consumers}]
    return handles + [virtual.get_submodule(site.consumer).register_forward_pre_hook(strip(site))
                      for site in sites]


def _carry(leaf: torch.Tensor, virtual_input: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """``J P``: the Jacobian at 0 of the path from the virtual channels ``leaf`` to the
    consumer's ``virtual_input``, applied to the producer patches ``P`` as channels.

    The backward pass gives ``u -> J^T u`` (linear in ``u``); differentiating ``<J^T u, P>``
    in ``u`` gives ``J P`` with the same derivatives, ties and batch coupling as the
    backward pass of the grown network (a double backward, not a finite difference).
    """
    u = torch.zeros_like(virtual_input, requires_grad=True)
    (adjoint,) = torch.autograd.grad(virtual_input, leaf, u, create_graph=True)
    (carried,) = torch.autograd.grad(adjoint, u, P.reshape(leaf.shape))
    return carried.detach()


def _collect_virtual_batch(model, virtual, sites, X, y, loss: str, weight: float,
                           data: dict) -> None:
    """One batch's statistics at ``sites`` through virtual new units, appended to ``data``."""
    seen: dict[tuple, torch.Tensor] = {}
    hooks = _virtual_hooks(model, virtual, sites, seen)
    try:
        value = LOSSES[loss](as_seed_batch(virtual(X)), y).sum()
    finally:
        for hook in hooks:
            hook.remove()
    grads = torch.autograd.grad(value, [seen["output", site] for site in sites],
                                retain_graph=True)
    for site, dz in zip(sites, grads):
        h, leaf, x = seen["input", site], seen["leaf", site], seen["virtual", site]
        grid = tuple(leaf.shape[2:])
        P = _producer_patches(model.get_submodule(site.producer), h, grid)
        through = _carry(leaf, x, P).reshape(len(X), leaf.shape[1], *(x.shape[2:] or (-1,)))
        data[site].append(SiteData(h, dz.detach().reshape(len(X), dz.shape[1], -1), grid,
                                   tuple(x.shape[2:]), weight, through))


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


def unit_grid(model: nn.Module, site, batch: SiteData, start: int = 0,
              stop: int | None = None) -> torch.Tensor:
    """``[N, D, ...]``: what a new unit with incoming weights ``e_d`` puts at the consumer's
    input (channel ``d``), per example: ``J P`` with virtual statistics, else the producer
    patches resized to the consumer's grid (the pass-through of the module docstring)."""
    if batch.through is not None:
        return batch.through[start:stop]
    producer, consumer = model.get_submodule(site.producer), model.get_submodule(site.consumer)
    P = _producer_patches(producer, batch.h[start:stop], batch.grid)
    return _to_consumer_grid(P, consumer, batch.consumer_grid, site.spatial)


def unit_inputs(model: nn.Module, site, batch: SiteData, start: int = 0,
                stop: int | None = None) -> torch.Tensor:
    """``[N, D * R, L]``: what a new unit's (incoming x outgoing) weights multiply, per example.

    Entry ``(d, r), q`` is the producer input ``d`` that reaches consumer output position ``q``
    through the new unit at kernel offset ``r``.
    """
    consumer = model.get_submodule(site.consumer)
    return _consumer_patches(unit_grid(model, site, batch, start, stop), consumer)


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


def weight_gradient_matrix(model: nn.Module, site, data: list[SiteData]) -> torch.Tensor:
    """The matrix of :func:`gradient_matrix` for a Conv2d consumer, as a weight gradient.

    ``G[(o, r), d]`` is the gradient, at kernel offset ``r``, of the weight ``(o, d)`` of a
    convolution with the consumer's kernel, stride, padding and dilation that reads the
    unit grid (:func:`unit_grid`, ``D`` channels) and has output gradient ``dz``: eq. (20) by
    the convolution backward kernel instead of patches of patches. Equal to
    :func:`gradient_matrix` to float rounding, with either ``statistics`` (on CUDA, float32
    convolutions use TF32 where ``torch.backends.cudnn.allow_tf32`` is on, PyTorch's default:
    then to about 1e-3).

    Where the consumer's output grid has at most :data:`PRODUCT_POSITIONS` positions (VGG11's
    last stage at 32 px: 2 x 2, with ``D = o R = 1152``), the same sum is one matrix product
    (:func:`_offset_gradients`), a few times faster there than the convolution kernel.
    """
    consumer = model.get_submodule(site.consumer)
    D, o, R = unit_sizes(model, site)
    G = 0
    for batch in data:
        shape = (o, *_output_grid(consumer, batch.consumer_grid))
        for start in range(0, len(batch.h), WEIGHT_GRADIENT_CHUNK):
            stop = start + WEIGHT_GRADIENT_CHUNK
            dz = batch.dz[start:stop].reshape(-1, *shape)
            units = unit_grid(model, site, batch, start, stop)
            if math.prod(shape[1:]) <= PRODUCT_POSITIONS:
                A = _offset_gradients(consumer, dz, tuple(units.shape[2:]))
                G = G + batch.weight * torch.einsum("nap,ndp->ad", A, units.flatten(2))
                continue
            G = G + batch.weight * torch.nn.grad.conv2d_weight(
                units, (o, D, *consumer.kernel_size), dz, consumer.stride, consumer.padding,
                consumer.dilation).reshape(o, D, R).transpose(1, 2).reshape(o * R, D)
    return G


def _offset_gradients(conv: nn.Conv2d, dz: torch.Tensor, grid: tuple[int, int]
                      ) -> torch.Tensor:
    """``[N, o R, P]``: the output gradient ``dz`` ``[N, o, *out]`` of ``conv`` placed, for each
    kernel offset ``r``, at the input position that offset reads (``P`` positions of the input
    ``grid``; reads of the padding drop out), so that ``G[(o, r), d] = sum_(n, p)
    A[n, (o, r), p] U[n, d, p]``: a transposed convolution of each output channel with the
    ``R`` one-hot kernels."""
    N, o = dz.shape[:2]
    R = math.prod(conv.kernel_size)
    one_hot = torch.eye(R, dtype=dz.dtype, device=dz.device).view(1, R, *conv.kernel_size)
    size = [(n - 1) * s - 2 * p + d * (k - 1) + 1 for n, k, s, p, d in
            zip(dz.shape[2:], conv.kernel_size, conv.stride, conv.padding, conv.dilation)]
    A = F.conv_transpose2d(dz.reshape(N * o, 1, *dz.shape[2:]), one_hot, stride=conv.stride,
                           padding=conv.padding, dilation=conv.dilation,
                           output_padding=tuple(g - n for g, n in zip(grid, size)))
    return A.view(N, o * R, -1)


def _output_grid(conv: nn.Conv2d, grid: tuple[int, int]) -> tuple[int, ...]:
    """The output grid of ``conv`` on an input ``grid``."""
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in
                 zip(grid, conv.kernel_size, conv.stride, conv.padding, conv.dilation))


def singular_directions(G: torch.Tensor, k: int, solver: str = "svd"
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Left singular vectors ``U`` (columns, by decreasing singular value) and singular values
    ``S`` of ``G``; ``U[:, :k]`` solves eq. (11).

    Parameters
    ----------
    G : torch.Tensor
        ``[m, n]``, e.g. the gradient matrix of a site.
    k : int
        Directions needed (``"lowrank"`` finds ``k`` + :data:`LOWRANK_OVERSAMPLING`).
    solver : {"svd", "gram", "lowrank", "krylov"}
        ``"svd"``: ``torch.linalg.svd``, all ``min(m, n)`` directions, LAPACK's signs.
        ``"gram"``: eigendecomposition of the smaller Gram matrix, ``G G^T`` (then ``U`` are
        its eigenvectors) or ``G^T G`` (eigenvectors ``V``, then ``U = G V / S`` for the
        singular values above ``sqrt(eps) s_1``, those the Gram matrix resolves).
        ``"lowrank"``: randomised block Krylov iteration (Musco and Musco 2015): Rayleigh-Ritz
        on the span of ``(G G^T)^i G Omega``, ``i = 0 ... LOWRANK_DEPTH``, from ``q = k +
        LOWRANK_OVERSAMPLING`` random directions ``Omega``; only the top ``q`` directions.
        The space grows by ``LOWRANK_DEPTH`` blocks until the top ``k`` residuals are at
        float rounding (:data:`LOWRANK_RESIDUAL`) or it holds ``min(m, n)`` columns (then it
        is exact); its error falls with the depth at a rate set by the square root of the
        gap ``s_k / s_(q+1) - 1`` (a Chebyshev bound; power iterations: the gap itself), so
        even the nearly flat spectra of VGG11's sites at initialisation converge (bench).
        ``"krylov"``: the same iteration stopped on the objective of eq. (11) instead of the
        vectors: checked every :data:`KRYLOV_CHECK` blocks, it stops once the Ky Fan sum
        ``s_1^2 + ... + s_k^2`` of the Ritz values (a lower bound of the optimum that only
        grows with the space) rose by less than :data:`KRYLOV_TOLERANCE` of itself. Block
        Krylov's gap-free bound (Musco and Musco 2015: each Ritz value within ``(1 + e)`` of
        ``s_(k+1)^2`` after ``O(log n / sqrt(e))`` blocks) holds for flat spectra too, where
        the directions are not defined but the objective is; the bench prints the fraction
        of the SVD's objective it reaches on VGG11's sites. A space that reaches
        ``min(m, n)`` columns (its last block cut to fit) holds the whole range: then it is
        the SVD to float rounding.
        ``"gram"``, ``"lowrank"`` and ``"krylov"`` orient each column so that its entry of largest
        magnitude is positive: their units equal the SVD's up to one sign per unit (where
        the singular values are distinct; within a repeated value only the subspace is
        defined), which leaves ``||G^T W_{l+1}^new||`` of eq. (11) unchanged.

    Returns
    -------
    U : torch.Tensor
        ``[m, r]``, orthonormal columns.
    S : torch.Tensor
        ``[r]``, decreasing.
    """
    if solver == "svd":
        U, S, _ = torch.linalg.svd(G, full_matrices=False)
        return U, S
    if solver == "gram":
        return _gram_directions(G)
    if solver == "lowrank":
        return _lowrank_directions(G, k)
    if solver == "krylov":
        return _krylov_directions(G, k)
    raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")


def _gram_directions(G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``"gram"`` solver of :func:`singular_directions`."""
    wide = G.shape[0] <= G.shape[1]
    eigenvalues, vectors = torch.linalg.eigh(G @ G.T if wide else G.T @ G)
    S, vectors = eigenvalues.flip(0).clamp_min(0).sqrt(), vectors.flip(1)
    if wide:
        return _oriented(vectors), S
    # below sqrt(eps) s_1 a squared singular value drowns in the Gram matrix's rounding
    resolved = S > math.sqrt(torch.finfo(G.dtype).eps) * S[0]
    return _oriented(G @ vectors[:, resolved] / S[resolved]), S[resolved]


def _start_block(G: torch.Tensor, k: int) -> torch.Tensor:
    """The first block of the Krylov solvers: ``G Omega`` orthonormalised, ``Omega`` the
    fixed draw of ``q = k + LOWRANK_OVERSAMPLING`` random directions (at most ``min(m, n)``)."""
    q = min(k + LOWRANK_OVERSAMPLING, *G.shape)
    generator = torch.Generator().manual_seed(LOWRANK_SEED)
    start = torch.randn(G.shape[1], q, generator=generator, dtype=G.dtype).to(G.device)
    return torch.linalg.qr(G @ start).Q


def _lowrank_directions(G: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``"lowrank"`` solver of :func:`singular_directions`: Rayleigh-Ritz on a block
    Krylov space of ``G G^T``, each block orthonormalised (QR) before the next product and
    the whole space at a check, grown by :data:`LOWRANK_DEPTH` blocks until the top ``k``
    Ritz triplets converge (:data:`LOWRANK_RESIDUAL`) or it holds ``min(m, n)`` columns."""
    blocks = [_start_block(G, k)]
    q = blocks[0].shape[1]
    while True:
        depth, full = len(blocks) - 1, len(blocks) * q >= min(G.shape)
        if full or (depth > 0 and depth % LOWRANK_DEPTH == 0):
            U, S, Vh = _ritz(G, torch.cat(blocks, dim=1), q)
            if full or _converged(G, U[:, :k], S[:k], Vh[:k]):
                return _oriented(U), S
        blocks.append(torch.linalg.qr(G @ (G.T @ blocks[-1])).Q)


def _krylov_directions(G: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``"krylov"`` solver of :func:`singular_directions`: the block Krylov space of
    ``"lowrank"``, kept orthonormal as it grows (block Gram-Schmidt, twice) with the products
    ``G^T Q`` the next block needs, so that a check of the objective (every
    :data:`KRYLOV_CHECK` blocks, :data:`KRYLOV_TOLERANCE`) costs only the small Gram matrix
    ``(G^T Q)^T (G^T Q)``; stopped there, or once the space holds ``min(m, n)`` columns."""
    block = _start_block(G, k)
    q, rank = block.shape[1], min(G.shape)
    basis, products, reached = block, G.T @ block, 0.0  # products = G^T basis
    while True:
        full = basis.shape[1] >= rank
        depth = basis.shape[1] // q - 1
        if full or (depth > 0 and depth % KRYLOV_CHECK == 0):
            value = float(torch.linalg.eigvalsh(products.T @ products).flip(0)[:k].sum())
            if full or value - reached <= KRYLOV_TOLERANCE * value:
                U, S, _ = torch.linalg.svd(products.T, full_matrices=False)
                return _oriented(basis @ U[:, :q]), S[:q]
            reached = value
        new = G @ products[:, -q:]
        for _ in range(2):  # twice is enough in float arithmetic ("twice is enough")
            new = new - basis @ (basis.T @ new)
        new = torch.linalg.qr(new[:, :rank - basis.shape[1]]).Q  # the last block: what fits
        basis = torch.cat([basis, new], dim=1)
        products = torch.cat([products, G.T @ new], dim=1)


def _ritz(G: torch.Tensor, space: torch.Tensor, q: int) -> tuple[torch.Tensor, ...]:
    """The top ``q`` singular triplets of ``G`` projected on the span of ``space``."""
    basis = torch.linalg.qr(space).Q
    U, S, Vh = torch.linalg.svd(basis.T @ G, full_matrices=False)
    return basis @ U[:, :q], S[:q], Vh[:q]


def _converged(G: torch.Tensor, U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor) -> bool:
    """Whether every Ritz triplet has ``||G v - s u|| <= LOWRANK_RESIDUAL eps s_1`` (then
    ``sin`` of its angle to the true direction is at most that over the gap to the next)."""
    residual = (G @ Vh.T - U * S).norm(dim=0)
    return bool((residual <= LOWRANK_RESIDUAL * torch.finfo(G.dtype).eps * S[0]).all())


def _oriented(U: torch.Tensor) -> torch.Tensor:
    """``U`` with each column's sign chosen so that its entry of largest magnitude is > 0."""
    peak = U.gather(0, U.abs().argmax(dim=0, keepdim=True))
    return U * torch.where(peak < 0, -1.0, 1.0).to(U.dtype)


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


AUXILIARY_RULES = ("corrected", "public")


def strided_auxiliary_matrix(model: nn.Module, site, data: list[SiteData],
                             rule: str = "corrected") -> torch.Tensor:
    """The auxiliary-kernel matrix of eq. (20) (Appendix B) for a producer with stride
    ``s1 > 1`` (consumer stride ``s2``), two unpadded convolutions with nothing in between.

    One new unit with incoming filter ``w`` (``k1``) and outgoing filter ``v`` (``k2``) adds
    to the consumer's output at ``y`` the sum over ``a, u`` of ``v[a] w[u] x[s1 s2 y + s1 a
    + u]``: a convolution of the producer's input with a kernel of size ``k1 + s1 (k2 - 1)``
    and stride ``s1 s2``, whose tap ``m`` collects ``s1 a + u = m``.

    ``rule="corrected"``: that kernel and taps ``s1 a + u``; equal to :func:`gradient_matrix`
    to float rounding. ``rule="public"``: the public code's construction (GradMax's
    ``growers.py``): kernel ``k1 + k2 - 1`` and taps ``a + u`` (exact for ``s1 = 1``), with
    its combined stride ``s1 s2`` (for one stride > 1) and the consumer's output grid (the
    code adds the auxiliary output to the consumer's output): wrong wherever ``s1 > 1``.
    """
    if rule not in AUXILIARY_RULES:
        raise ValueError(f"rule must be one of {AUXILIARY_RULES}, got {rule!r}")
    producer, consumer = model.get_submodule(site.producer), model.get_submodule(site.consumer)
    convs = (producer, consumer)
    if (not all(isinstance(m, nn.Conv2d) for m in convs)
            or any(m.padding != (0, 0) or m.dilation != (1, 1) for m in convs)
            or tuple(data[0].grid) != tuple(data[0].consumer_grid)):
        raise ValueError(f"site {site}: two unpadded, undilated Conv2d layers with nothing "
                         "that changes the grid between them are needed")
    (k1h, k1w), (k2h, k2w) = producer.kernel_size, consumer.kernel_size
    s1, s2 = producer.stride, consumer.stride
    tap = s1 if rule == "corrected" else (1, 1)
    size = (k1h + tap[0] * (k2h - 1), k1w + tap[1] * (k2w - 1))
    stride = (s1[0] * s2[0], s1[1] * s2[1])
    c, o = producer.in_channels, consumer.out_channels
    G_aux = 0
    for batch in data:
        out_grid = _output_grid(consumer, batch.consumer_grid)
        patches = F.unfold(batch.h, size, stride=stride)
        rows, cols = ((n - k) // st + 1 for n, k, st in zip(batch.h.shape[2:], size, stride))
        patches = patches.view(len(batch.h), -1, rows, cols)[:, :, :out_grid[0], :out_grid[1]]
        G_aux = G_aux + batch.weight * torch.einsum("noq,nmq->om", batch.dz,
                                                    patches.flatten(2))
    G_aux = G_aux.view(o, c, *size)
    a, b, u, v = (torch.arange(n) for n in (k2h, k2w, k1h, k1w))
    rows = (tap[0] * a.view(-1, 1, 1, 1) + u.view(1, 1, -1, 1)).expand(k2h, k2w, k1h, k1w)
    cols = (tap[1] * b.view(1, -1, 1, 1) + v.view(1, 1, 1, -1)).expand(k2h, k2w, k1h, k1w)
    G = G_aux[:, :, rows, cols]  # [o, c, kh2, kw2, kh1, kw1]
    return G.permute(0, 2, 3, 1, 4, 5).reshape(o * k2h * k2w, c * k1h * k1w)


def matrix_flops(model: nn.Module, site, data: list[SiteData], auxiliary: bool = False) -> int:
    """Floating-point operations (two per multiply-add) of forming ``site``'s matrix: eq.
    (20)'s contraction ``sum_(n, q) dz_(o, q) Q_((d, r), q)`` over ``data``, ``2 o R D N L``
    (``L`` the consumer's output positions). ``auxiliary``: where the paper's auxiliary
    kernel applies (:func:`auxiliary_applies`), its gradient's instead, ``2 o c (k_l + k_(l+1)
    - 1)^2 N L`` (fewer: its taps are shared by the ``R D`` pairs). A lower bound of what any
    way of forming the matrix from the same statistics costs."""
    D, o, R = unit_sizes(model, site)
    positions = sum(batch.dz.shape[0] * batch.dz.shape[2] for batch in data)
    if auxiliary and auxiliary_applies(model, site, data):
        producer, consumer = model.get_submodule(site.producer), model.get_submodule(site.consumer)
        taps = math.prod(a + b - 1 for a, b in zip(producer.kernel_size, consumer.kernel_size))
        return 2 * o * producer.in_channels * taps * positions
    return 2 * o * R * D * positions


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
        ``"exact"`` (:func:`gradient_matrix`), ``"auxiliary"`` (the paper's auxiliary
        kernel, :func:`auxiliary_kernel_matrix`, where it applies) for Conv2d -> Conv2d sites,
        or ``"weight_gradient"`` (the exact matrix by :func:`weight_gradient_matrix`) for
        every Conv2d consumer.
    generator : torch.Generator
        Source of the minibatch draws.
    statistics : str
        ``"passthrough"`` (default) or ``"virtual"``: what lies between producer and consumer
        (module docstring, :func:`collect`). The auxiliary kernel assumes the pass-through.
    """

    def __init__(self, batch_size: int | None, conv_matrix: str, generator: torch.Generator,
                 statistics: str = "passthrough"):
        if conv_matrix not in CONV_MATRICES:
            raise ValueError(f"conv_matrix must be one of {CONV_MATRICES}, got {conv_matrix!r}")
        if statistics not in STATISTICS:
            raise ValueError(f"statistics must be one of {STATISTICS}, got {statistics!r}")
        if conv_matrix == "auxiliary" and statistics == "virtual":
            raise ValueError("the auxiliary kernel assumes that a new channel passes unchanged "
                             "(statistics='passthrough'); use conv_matrix='exact' or "
                             "'weight_gradient' with statistics='virtual'")
        self.batch_size, self.conv_matrix, self.generator = batch_size, conv_matrix, generator
        self.statistics = statistics
        self._cached: tuple = (lambda: None, None, {})  # (model, versions and loss, data)

    def __call__(self, model: nn.Module, site, split: Split, loss: str, probe=None
                 ) -> torch.Tensor:
        """The matrix of ``site`` under the training loss ``loss``.

        With a growth step's ``probe`` (:class:`growcore.stats.Probe`), the statistics of one
        pass are shared with every other part of the step that asks for the same batch size:
        GradMax's singular value choosing where and GradMax filling the units read one pass.
        """
        if probe is not None:
            key = ("gradmax statistics", id(model), loss, self.batch_size, self.statistics)
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
        if conv and self.conv_matrix == "weight_gradient":
            return weight_gradient_matrix(model, site, data)
        return gradient_matrix(model, site, data)

    def _collect(self, model: nn.Module, site, split: Split, loss: str) -> dict:
        """One pass: the statistics of every width site of the model (and of ``site``)."""
        try:
            sites = width_sites(model)
        except TypeError:  # a model that lists no sites: this one alone
            sites = []
        sites = sites if site in sites else [site]
        return collect(model, sites, split, loss, self.batch_size, self.generator,
                       self.statistics)
