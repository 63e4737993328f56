"""HOW for width growth: initialisers of new units, for :func:`growcore.ops.widen.widen`.

Protocol ``how(model, proposal, stats) -> NewUnits``: ``proposal.amount`` new units at the width
site ``proposal.site`` (layouts in :mod:`growcore.ops.widen`); ``stats`` is the growth step's
:class:`growcore.stats.Probe` (the training data and loss), read by the data-driven ones.

* GradMax (Evci et al. 2022, eq. (11)): incoming weights zero, outgoing weights the top-k left
  singular vectors of the gradient matrix (:mod:`growcore.stats.gradmax`); GradMaxOpt, its
  projected-gradient version; Random (Berner et al. 2019) and Zero, the paper's baselines;
  FireflyOpt (a simpler Firefly of Wu et al. 2020).
* KaimingNew: the NAGN initialiser of eq. (1) (Wang, Mille, Hidane).

PyTorch's ReLU has derivative 0 at 0, which kills the gradient of zero incoming weights: the
models grown with GradMax use ``relu1`` (:mod:`growcore.activations`, ``f'(0) = 1``), as the
paper's code does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import ClassVar

import torch
from torch import nn

from growcore.activations import ACTIVATIONS
from growcore.data import Split
from growcore.losses import LOSSES, as_seed_batch
from growcore.models.sites import Proposal
from growcore.ops.widen import NewUnits, unit_sizes, widen
from growcore.stats.gradmax import (
    SOLVERS,
    STATISTICS,
    GradientMatrices,
    TargetNorm,
    _unit_columns,
    collect,
    gradient_matrix,
    incoming_norms,
    outgoing_norms,
    singular_directions,
    unit_inputs,
)
from growcore.stats.probe import Probe, data_of, loss_of


@dataclass
class GradMax:
    """GradMax (eq. (11), Appendix B): incoming weights zero, outgoing weights the top-k left
    singular vectors of the gradient matrix, each scaled to the target norm.

    Then unit ``j``'s incoming gradient has norm ``c sigma_j`` and the total is
    ``c (sigma_1^2 + ... + sigma_k^2)^(1/2)``, the maximum of eq. (11) over orthogonal units of
    norm c (Ky Fan's theorem; without orthogonality every unit would copy the top direction).
    ``G`` has at most ``min(o R, D)`` singular directions (e.g. 10 for a layer feeding a
    10-class classifier): units beyond that get random outgoing directions, as in Random.

    Parameters
    ----------
    loss : str, optional
        ``"mse"`` or ``"cross_entropy"``: the loss L of the statistic; None (default) takes
        the training loss of the growth step's probe.
    batch_size : int, optional
        None: the statistic over the whole training set; an int: over one random minibatch.
    norm : TargetNorm
        Norm of each new unit's outgoing weights (relative to the existing units' outgoing
        norms, or fixed).
    conv_matrix : str
        ``"exact"`` (:func:`gradient_matrix`) or ``"auxiliary"`` (the paper's auxiliary
        kernel, :func:`auxiliary_kernel_matrix`) for Conv2d -> Conv2d sites; where the
        auxiliary kernel does not apply (pooling between the two convolutions, strides),
        ``"auxiliary"`` uses the exact matrix. ``"weight_gradient"``: the exact matrix by a
        convolution's weight gradient (:func:`weight_gradient_matrix`, faster).
    seed : int
        Seed of the minibatch draws.
    statistics : str
        ``"passthrough"`` (default): a new channel is assumed to pass unchanged from producer
        to consumer (eq. (9) as written; max pooling read as average pooling, a train-mode
        BatchNorm ignored); ``"virtual"``: differentiated through virtual new units, so that
        ``G`` is the exact eq. (9)/(20) matrix for the layers in between
        (:mod:`growcore.stats.gradmax`).
    solver : str
        How the top-k left singular vectors of eq. (11) are found
        (:func:`growcore.stats.gradmax.singular_directions`): ``"svd"`` (default, the full
        SVD), ``"gram"`` (eigendecomposition of the smaller Gram matrix), ``"lowrank"``
        (randomised block Krylov, top ``k`` only, to float rounding) or ``"krylov"`` (the
        same, stopped once the objective of eq. (11) has converged: the fastest; where the
        spectrum is flat its units are another near-optimal set, not the SVD's). The fast
        solvers give the SVD's units up to one sign per unit where the singular values are
        separated (their largest entry is positive); :attr:`singular_values` then holds the
        values they find.
    """

    kind: ClassVar[str] = "width"

    loss: str | None = None
    batch_size: int | None = None
    norm: TargetNorm = field(default_factory=TargetNorm)
    conv_matrix: str = "exact"
    seed: int = 0
    statistics: str = "passthrough"
    solver: str = "svd"
    singular_values: dict = field(default_factory=dict, init=False, repr=False)  # last sigma

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        self.generator = torch.Generator().manual_seed(self.seed)
        self.matrices = GradientMatrices(self.batch_size, self.conv_matrix, self.generator,
                                         self.statistics)

    def matrix(self, model: nn.Module, site, split: Split, loss: str | None = None,
               probe: Probe | None = None) -> torch.Tensor:
        """The gradient matrix of ``site`` (:class:`growcore.stats.gradmax.GradientMatrices`)
        under this part's loss, else ``loss`` (the training loss); with the growth step's
        ``probe``, from the pass it shares with the other parts of the step."""
        return self.matrices(model, site, split, loss_of(None, self.loss or loss), probe)

    def __call__(self, model: nn.Module, proposal: Proposal, stats: Probe) -> NewUnits:
        site, k = proposal.site, proposal.amount
        D, o, R = unit_sizes(model, site)
        G = self.matrix(model, site, data_of(stats, self), loss_of(stats, self.loss), stats)
        U, S = singular_directions(G, k, self.solver)
        self.singular_values[site] = S.detach().cpu()
        c = self.norm(outgoing_norms(model, site))
        if k > len(S):  # G has at most min(o R, D) singular directions: the rest are random
            extra = torch.randn(len(U), k - len(S), generator=self.generator, dtype=U.dtype)
            U = torch.cat([U, extra.to(U.device)], dim=1)
        return NewUnits(G.new_zeros(k, D), _unit_columns(U[:, :k], o, R, c))

    def describe(self) -> dict:
        return {"how": "GradMax", "loss": self.loss, "batch_size": self.batch_size,
                "scale": self.norm.scale, "value": self.norm.value,
                "conv_matrix": self.conv_matrix, "seed": self.seed,
                **_changed(self, ("statistics", "solver"))}


def _changed(part, names: tuple[str, ...]) -> dict:
    """The options ``names`` of the dataclass ``part`` that differ from their defaults.

    Options added after records were written are described only when set, so that the
    records of earlier runs still describe (and rebuild) the same plan.
    """
    defaults = {f.name: f.default for f in fields(part)}
    return {name: getattr(part, name) for name in names if getattr(part, name) != defaults[name]}


@dataclass
class GradMaxOpt:
    """GradMaxOpt (section 3, section 4.1): eq. (11) by projected gradient ascent.

    From a random start, Adam steps on ``-||G^T W_{l+1}^new||_F^2``, each unit's outgoing weights
    rescaled to the target norm after every step (the paper's procedure). Without the
    orthogonality the SVD solution has, all k units drift towards the top singular vector.

    ``inverse=True`` is the variant of paper Table 2: outgoing weights zero, incoming weights
    optimised to maximise the gradient of the outgoing weights,
    ``||E[dL/dz_{l+1} f(W_l^new h_{l-1})^T]||_F`` (eq. (8)), a non-linear objective with no SVD
    solution; the incoming target norm is relative to the existing incoming norms.

    ``statistics`` (``"passthrough"`` or ``"virtual"``) is :class:`GradMax`'s; the inverse
    variant's objective is not linear in the new weights and reads the pass-through.
    """

    kind: ClassVar[str] = "width"

    loss: str | None = None
    batch_size: int | None = None
    norm: TargetNorm = field(default_factory=TargetNorm)
    steps: int = 100
    lr: float = 0.01
    inverse: bool = False
    activation: str = "relu"
    seed: int = 0
    statistics: str = "passthrough"

    def __post_init__(self):
        if self.statistics not in STATISTICS:
            raise ValueError(f"statistics must be one of {STATISTICS}, got {self.statistics!r}")
        if self.inverse and self.statistics != "passthrough":
            raise ValueError("GradMaxOpt(inverse=True) reads statistics='passthrough' only")
        self.generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, model: nn.Module, proposal: Proposal, stats: Probe) -> NewUnits:
        site, k = proposal.site, proposal.amount
        D, o, R = unit_sizes(model, site)
        split = data_of(stats, self)
        data = collect(model, [site], split, loss_of(stats, self.loss), self.batch_size,
                       self.generator, self.statistics)[site]
        if self.inverse:
            return self._inverse(model, site, k, data, D, o, R)
        G = gradient_matrix(model, site, data)
        c = self.norm(outgoing_norms(model, site))
        W = self._ascend(lambda W: (G.T @ W).pow(2).sum(), (o * R, k), c, G)
        return NewUnits(G.new_zeros(k, D), _unit_columns(W, o, R, c))

    def _inverse(self, model, site, k, data, D, o, R) -> NewUnits:
        f = ACTIVATIONS[self.activation]
        inputs = [(b, unit_inputs(model, site, b)) for b in data]
        like = data[0].dz

        def objective(W_in):  # W_in [D, k]: gradient of the new outgoing weights, eq. (8)
            grad = 0
            for batch, Q in inputs:
                N, _, L = Q.shape
                h_new = f(torch.einsum("ndrl,dk->nkrl", Q.view(N, D, R, L), W_in))
                grad = grad + batch.weight * torch.einsum("nol,nkrl->okr", batch.dz, h_new)
            return grad.pow(2).sum()

        c = self.norm(incoming_norms(model, site))
        W_in = self._ascend(objective, (D, k), c, like)
        W_in = W_in / W_in.norm(dim=0, keepdim=True).clamp_min(1e-30) * c
        return NewUnits(W_in.T.contiguous(), like.new_zeros(o, k, R))

    def _ascend(self, objective, shape, c: float, like: torch.Tensor) -> torch.Tensor:
        W = torch.randn(shape, generator=self.generator, dtype=like.dtype).to(like.device)
        W = (c * W / W.norm(dim=0, keepdim=True)).requires_grad_(True)
        opt = torch.optim.Adam([W], lr=self.lr * max(c, 1e-12))
        for _ in range(self.steps):
            opt.zero_grad()
            (-objective(W)).backward()
            opt.step()
            with torch.no_grad():
                W.mul_(c / W.norm(dim=0, keepdim=True).clamp_min(1e-30))
        return W.detach()

    def describe(self) -> dict:
        return {"how": "GradMaxOpt", "loss": self.loss, "batch_size": self.batch_size,
                "scale": self.norm.scale, "value": self.norm.value, "steps": self.steps,
                "lr": self.lr, "inverse": self.inverse, "activation": self.activation,
                "seed": self.seed, **_changed(self, ("statistics",))}


@dataclass
class Random:
    """Random growth (Berner et al. 2019, the paper's baseline): incoming weights zero and
    outgoing weights Gaussian, each unit scaled to the same target norm as GradMax; with
    ``inverse=True`` outgoing zero and incoming random (paper Table 2)."""

    kind: ClassVar[str] = "width"

    norm: TargetNorm = field(default_factory=TargetNorm)
    inverse: bool = False
    seed: int = 0

    def __post_init__(self):
        self.generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, model: nn.Module, proposal: Proposal, stats: Probe | None = None
                 ) -> NewUnits:
        site, k = proposal.site, proposal.amount
        D, o, R = unit_sizes(model, site)
        like = model.get_submodule(site.producer).weight
        if self.inverse:
            W = torch.randn(D, k, generator=self.generator, dtype=like.dtype).to(like.device)
            c = self.norm(incoming_norms(model, site))
            W = c * W / W.norm(dim=0, keepdim=True)
            return NewUnits(W.T.contiguous(), like.new_zeros(o, k, R).detach())
        W = torch.randn(o * R, k, generator=self.generator, dtype=like.dtype).to(like.device)
        c = self.norm(outgoing_norms(model, site))
        return NewUnits(like.new_zeros(k, D).detach(), _unit_columns(W, o, R, c))

    def describe(self) -> dict:
        return {"how": "Random", "scale": self.norm.scale, "value": self.norm.value,
                "inverse": self.inverse, "seed": self.seed}


@dataclass
class Zero:
    """Both sides zero: the new units never receive a gradient (with a zero bias)."""

    kind: ClassVar[str] = "width"

    def __call__(self, model: nn.Module, proposal: Proposal, stats: Probe | None = None
                 ) -> NewUnits:
        site, k = proposal.site, proposal.amount
        D, o, R = unit_sizes(model, site)
        like = model.get_submodule(site.producer).weight.detach()
        return NewUnits(like.new_zeros(k, D), like.new_zeros(o, k, R))

    def describe(self) -> dict:
        return {"how": "Zero"}


@dataclass
class FireflyOpt:
    """Firefly-Opt (paper section 4.2, a simpler Firefly of Wu et al. 2020): new units trained
    for a few steps to lower the training loss directly.

    Start: random incoming weights at the incoming target norm and random outgoing weights of
    norm ``epsilon`` per unit (paper: 1e-4; Firefly needs non-zero outgoing weights to see the
    loss). Then ``steps`` Adam steps on minibatches, on the new weights only, each side
    projected back to its norm after every step. The output changes by O(epsilon).
    """

    kind: ClassVar[str] = "width"

    loss: str | None = None
    batch_size: int | None = 128
    norm: TargetNorm = field(default_factory=TargetNorm)
    epsilon: float = 1e-4
    steps: int = 10
    lr: float = 0.01
    seed: int = 0

    def __post_init__(self):
        self.generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, model: nn.Module, proposal: Proposal, stats: Probe) -> NewUnits:
        site, k = proposal.site, proposal.amount
        split = data_of(stats, self)
        seed = int(torch.randint(2**31, (1,), generator=self.generator))
        start = Random(self.norm, inverse=True, seed=seed)(model, proposal)
        direction = Random(TargetNorm(value=self.epsilon), seed=seed + 1)(model, proposal)
        W_in = start.incoming.clone().requires_grad_(True)
        W_out = direction.outgoing.clone().requires_grad_(True)
        grown = widen(model, [proposal], lambda *args: NewUnits(W_in.detach(),
                                                                  W_out.detach())).model
        old_in = model.get_submodule(site.producer).weight.detach()
        old_out = model.get_submodule(site.consumer).weight.detach()
        c_in = float(start.incoming.norm(dim=1).mean())
        opt = torch.optim.Adam([W_in, W_out], lr=self.lr)
        for _ in range(self.steps):
            X, y = next(split.minibatches(self.batch_size, self.generator))
            params = {f"{site.producer}.weight":
                      torch.cat([old_in, W_in.view(k, *old_in.shape[1:])]),
                      f"{site.consumer}.weight":
                      torch.cat([old_out, W_out.reshape(len(old_out), -1, *old_out.shape[2:])
                                 if old_out.dim() > 2 else W_out.reshape(len(old_out), -1)],
                                dim=1)}
            out = torch.func.functional_call(grown, params, (X,))
            opt.zero_grad()
            LOSSES[loss_of(stats, self.loss)](as_seed_batch(out), y).sum().backward()
            opt.step()
            with torch.no_grad():
                W_in.mul_(c_in / W_in.norm(dim=1, keepdim=True).clamp_min(1e-30))
                W_out.mul_(self.epsilon / W_out.norm(dim=(0, 2), keepdim=True).clamp_min(1e-30))
        return NewUnits(W_in.detach(), W_out.detach())

    def describe(self) -> dict:
        return {"how": "FireflyOpt", "loss": self.loss, "batch_size": self.batch_size,
                "scale": self.norm.scale, "value": self.norm.value, "epsilon": self.epsilon,
                "steps": self.steps, "lr": self.lr, "seed": self.seed}


# ---------------------------------------------------------------- how: eq. (1)
class KaimingNew:
    """The NAGN initialiser of new units (eq. 1), a ``how`` for :func:`growcore.ops.widen.widen`.

    The incoming weights of the new units (``W^new2``) are drawn from a zero-centred normal
    with variance ``2 / n_l`` for a dense layer and ``2 / (n_l k_l^2)`` for a convolution,
    i.e. ``2 / D`` with ``D`` the fan-in of one unit (Kaiming); their biases are zero, and
    their outgoing weights (``W^new1``) are zero, so the output is unchanged while the
    gradient of the outgoing weights is not zero. ``W^new3`` (new units to new units, when
    consecutive layers grow together) is zero: ``widen`` pads the new consumer rows with
    zeros. BatchNorm channels get scale 1 and shift 0 from ``widen``.

    Parameters
    ----------
    seed : int
        Seed of the generator of the new weights (drawn on the CPU, so portable).
    """

    kind: ClassVar[str] = "width"

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, model: nn.Module, proposal: Proposal, stats: Probe | None = None
                 ) -> NewUnits:
        site, k = proposal.site, proposal.amount
        D, o, R = unit_sizes(model, site)
        like = model.get_submodule(site.producer).weight
        incoming = torch.randn(k, D, generator=self.generator, dtype=torch.float64)
        incoming = (incoming * math.sqrt(2 / D)).to(like)
        return NewUnits(incoming, like.new_zeros(o, k, R))

    def describe(self) -> dict:
        return {"how": "KaimingNew", "seed": self.seed}
