"""Seeds of an ordinary ``nn.Module`` trained as one tensor program.

``StackedSeeds(nets, seeds)`` holds S networks of one architecture (e.g. S students
:class:`growcore.models.mlp.MLP`, one per seed) with every parameter stacked along a leading
*seed* dimension, and evaluates all of them at once with ``torch.func`` (``vmap`` over
``functional_call``). Inputs shared by all seeds (``[N, ...]``) or given per seed
(``[S, N, ...]``) give outputs ``[S, N, ...]``, as SensLI's seed-batched nets
(:mod:`growcore.models.seed_batched`) do, so that the training loop, the per-seed losses and
the driver treat both alike. Each seed's slice is computed on its own: a batched run
reproduces the runs one seed at a time, to float rounding (a batched matrix product may sum
in another order).

Width growth works seed by seed (:func:`growcore.ops.widen_seeds`, through
:class:`growcore.plan.GrowthPlan`): :meth:`StackedSeeds.seed_module` gives seed ``i``'s
network as the ordinary module it stacks, whose width sites have the names of the stacked
model's, and :meth:`StackedSeeds.from_seed_modules` stacks grown ones again. Not supported:
depth growth, modules with buffers (BatchNorm's running statistics would be updated inside
``vmap``) and random operations in the forward pass (dropout).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from growcore.models.seed_batched import SeedBatchedNet
from growcore.models.sites import WidthSite, width_sites

# leaf modules whose weight fixes the number of dimensions of one batch of inputs
EXAMPLE_DIMS = {nn.Linear: 2, nn.Conv1d: 3, nn.Conv2d: 4}


class StackedSeeds(SeedBatchedNet):
    """S seeds of one ``nn.Module`` architecture as one model (module docstring).

    Parameters
    ----------
    nets : sequence of nn.Module
        One network per seed, all of the same architecture (same parameter names and
        shapes), without buffers. Their parameters are copied.
    seeds : sequence of int, optional
        The seed of each network (default ``0 .. S-1``).
    example_dims : int, optional
        Dimensions of one batch of inputs of one network (2 for ``[N, d]``, 4 for
        ``[N, C, H, W]``); inputs with one more are per seed. Default: read from the first
        Linear or Conv layer.
    """

    kind = "stacked"
    layer_groups = ()

    def __init__(self, nets: Sequence[nn.Module], seeds: Sequence[int] | None = None,
                 example_dims: int | None = None):
        nn.Module.__init__(self)  # SeedBatchedNet's layer groups do not apply
        nets = list(nets)
        if not nets:
            raise ValueError("StackedSeeds needs at least one network")
        self.seeds = list(range(len(nets))) if seeds is None else [int(s) for s in seeds]
        if len(self.seeds) != len(nets):
            raise ValueError(f"{len(nets)} networks but {len(self.seeds)} seeds")
        _check_alike(nets)
        # the architecture without values: seed i's module is a copy of it with its weights
        self.__dict__["skeleton"] = copy.deepcopy(nets[0]).to("meta")
        self.example_dims = example_dims or _example_dims(nets[0])
        self.net = copy.deepcopy(self.skeleton)  # holds the stacked parameters [S, ...]
        for name, _ in nets[0].named_parameters():
            stacked = torch.stack([dict(n.named_parameters())[name].detach() for n in nets])
            _set_parameter(self.net, name, nn.Parameter(stacked.clone()))

    # -- the seed-batched interface ----------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs of every seed: ``x`` ``[N, ...]`` (shared by the seeds) or ``[S, N, ...]``
        (per seed) -> ``[S, N, ...]``."""
        if x.dim() not in (self.example_dims, self.example_dims + 1):
            raise ValueError(f"inputs of {self.example_dims} dimensions (shared by the seeds) "
                             f"or {self.example_dims + 1} (per seed) expected, got {x.shape}")
        if x.dim() == self.example_dims + 1 and len(x) != self.n_seeds:
            raise ValueError(f"per-seed inputs for {len(x)} seeds, the model has {self.n_seeds}")
        per_seed = 0 if x.dim() == self.example_dims + 1 else None
        params = dict(self.net.named_parameters())
        return torch.func.vmap(self._one, in_dims=(0, per_seed))(params, x)

    def _one(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.skeleton, params, (x,))

    def train(self, mode: bool = True) -> StackedSeeds:
        self.skeleton.train(mode)  # the forward pass runs the skeleton's modules
        return super().train(mode)

    def seed_module(self, i: int) -> nn.Module:
        """Seed ``i``'s network, an ordinary module with its own copy of the weights."""
        net = copy.deepcopy(self.skeleton)
        state = {name: p[i].detach().clone() for name, p in self.net.named_parameters()}
        net.load_state_dict(state, assign=True)
        return net.requires_grad_(True)

    def from_seed_modules(self, nets: Sequence[nn.Module]) -> StackedSeeds:
        """The stacked model of one network per seed (e.g. :meth:`seed_module`'s, grown)."""
        return type(self)(nets, self.seeds, self.example_dims)

    def growth_sites(self) -> list[WidthSite]:
        """The width sites of the stacked architecture (those of :meth:`seed_module`)."""
        return width_sites(self.skeleton)

    def width_sites(self) -> list[WidthSite]:
        return self.growth_sites()

    def spec(self) -> dict:
        """The architecture: the stacked class and the width of every width site."""
        def units(site) -> int:  # the producer's units (models/ does not import ops/)
            producer = self.skeleton.get_submodule(site.producer)
            return getattr(producer, "out_channels", None) or producer.out_features

        return {"class": type(self.skeleton).__name__, "seed_batched": True,
                "widths": {site.name: units(site) for site in self.width_sites()}}

    def flops_per_example(self) -> int:
        """Forward FLOPs of one seed's network for one example (its own count if it has one,
        else 2 per weight)."""
        if hasattr(self.skeleton, "flops_per_example"):
            return int(self.skeleton.flops_per_example())
        return 2 * self.num_parameters()


def _check_alike(nets: list[nn.Module]) -> None:
    shapes = [{name: tuple(p.shape) for name, p in n.named_parameters()} for n in nets]
    if any(s != shapes[0] for s in shapes):
        raise ValueError("StackedSeeds needs networks of one architecture (the same parameter "
                         "names and shapes); seeds that grew apart run as separate groups")
    if any(True for n in nets for _ in n.buffers()):
        raise ValueError("StackedSeeds does not stack modules with buffers (e.g. BatchNorm's "
                         "running statistics): train their seeds one at a time")


def _example_dims(net: nn.Module) -> int:
    for module in net.modules():
        for kind, dims in EXAMPLE_DIMS.items():
            if isinstance(module, kind):
                return dims
    raise ValueError(f"cannot tell the input dimensions of {type(net).__name__}: give "
                     "example_dims")


def _set_parameter(module: nn.Module, name: str, value: nn.Parameter) -> None:
    path, _, attr = name.rpartition(".")
    owner = module.get_submodule(path) if path else module
    delattr(owner, attr)
    owner.register_parameter(attr, value)
