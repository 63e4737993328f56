"""The change itself for depth growth: insert layers or blocks, function preserved.

* :func:`insert_layers`: layers into a seed-batched FNN or ResNet after hidden layers ``k``
  (SensLI section 2.3), each seed at its own positions;
* :func:`insert_modules`: modules into the ``Sequential`` or ``ModuleList`` containers of any
  ``nn.Module`` at its depth sites: blocks appended to the stages of a staged network
  (FRAGrow), identity layers (SensLI's virtual layers on any model).

Both return a :class:`growcore.ops.base.Growth`; new parameters start with zero optimiser
state.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from growcore.activations import RELUS
from growcore.models.seed_batched import Layer, SeedBatchedNet, stack_seeds
from growcore.models.sites import DepthSite, Proposal
from growcore.models.staged import block_kind, is_staged
from growcore.models.vgg import ConvBlock
from growcore.ops.base import Growth


@dataclass
class LayerInsertion(Growth):
    """Growth of a seed-batched model by inserted layers.

    ``sources[name][s]`` is the old parameter that new parameter ``name`` copies for seed
    ``s``, or None where it is new. ``inserted[s]`` lists, for seed s, the indices in the
    model's insertion group of the new layers, in the order of ascending positions.
    """

    model: SeedBatchedNet
    sources: dict[str, list[str | None]]
    inserted: list[list[int]]

    def transport(self, old: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        params = dict(self.model.named_parameters())
        out = {}
        for name, sources in self.sources.items():
            zero = torch.zeros_like(params[name][0])
            out[name] = torch.stack([old[src][s] if src is not None else zero
                                     for s, src in enumerate(sources)])
        return out

    def status(self, name: str) -> str:
        new = [src is None for src in self.sources[name]]
        return "new" if all(new) else "old" if not any(new) else "mixed"

    def source_of(self, name: str) -> str | None:
        return next((s for s in self.sources[name] if s is not None), None)


def identity_layer(model: SeedBatchedNet, k: int, resnet_W1_scale: float = 0.8) -> Layer:
    """The tensors of an identity layer inserted after hidden layer ``k`` (one seed).

    * FNN, SensLI eq. (2.6): ``W = I``, ``b = 0`` -- the identity after a ReLU layer, because
      ``ReLU(x) = x`` for ``x >= 0`` (the Net2Net construction).
    * ResNet, eq. (2.4): ``W2 = 0`` makes the block the identity for any ``W1, b``; the paper
      uses ``W1 = 0.8 I`` and ``b = 0`` (section 3) so that ``sigma(W1 x)`` is not
      systematically zero and the gradient (2.5c) with respect to ``W2`` is informative.
    """
    h = model.width_at(k)
    like = next(model.parameters())
    eye = torch.eye(h, dtype=like.dtype, device=like.device)
    zeros = torch.zeros(h, dtype=like.dtype, device=like.device)
    if model.kind == "fnn":
        if model.activation not in RELUS:
            raise ValueError("the identity FNN layer (SensLI eq. 2.6) needs a ReLU activation "
                             f"{RELUS}; the model uses {model.activation!r}")
        return {"W": eye, "b": zeros}
    if model.kind == "resnet":
        return {"W1": resnet_W1_scale * eye, "b": zeros, "W2": torch.zeros_like(eye)}
    raise ValueError(f"identity layers exist for models 'fnn' and 'resnet', got {model.kind!r}")


def at_positions(model: SeedBatchedNet, positions) -> list[Proposal]:
    """Proposals for SensLI's positions ``k`` ("insert after hidden layer k").

    ``positions``: one ``k`` per seed, or one list of ``k`` per seed (the fully extended
    network of section 2.4 inserts at all positions at once).
    """
    per_seed = _positions_per_seed(model, positions)
    sites = {site.position: site for site in model.growth_sites() if site.kind == "depth"}
    return [Proposal(sites[k], 1, seed=s) for s, ks in enumerate(per_seed) for k in ks]


def insert_layers(model: SeedBatchedNet, proposals: Sequence[Proposal], how,
                  stats=None) -> LayerInsertion:
    """Insert layers into a seed-batched FNN or ResNet at depth sites (SensLI section 2.3).

    Parameters
    ----------
    model : SeedBatchedNet
        The network (unchanged by the call).
    proposals : list of Proposal
        Depth sites of the model (``site.position = k``: after hidden layer k), each for one
        seed (``proposal.seed``) or for every seed (``None``); :func:`at_positions` makes them
        from positions. Seeds may insert at different positions as long as the grown shapes
        agree (otherwise :class:`growcore.models.seed_batched.SeedShapeMismatch`).
    how : callable ``(model, proposal, stats) -> Layer``
        Initialiser of the new layer's tensors (one seed's), e.g.
        :class:`growcore.how.IdentityLayer` (eq. 2.4/2.6), which keeps the function.
    stats : optional
        What data-driven initialisers read (:class:`growcore.stats.Probe`).

    Returns
    -------
    LayerInsertion
    """
    per_seed: list[list[Proposal]] = [[] for _ in range(model.n_seeds)]
    for proposal in proposals:
        for s in range(model.n_seeds) if proposal.seed is None else [proposal.seed]:
            per_seed[s].append(Proposal(proposal.site, proposal.amount, seed=s))
    _positions_per_seed(model, [[p.site.position for p in ps] for ps in per_seed])
    group = model.insertion_group
    groups = model.groups()
    new_layers, sources, inserted = [], [], []
    for s, ps in enumerate(per_seed):
        layers = [{n: t[s] for n, t in layer.items()} for layer in groups[group]]
        origin: list[int | None] = list(range(len(layers)))
        for proposal in sorted(ps, key=lambda p: -p.site.position):
            index = model.insertion_index(proposal.site.position)
            layers.insert(index, how(model, proposal, stats))
            origin.insert(index, None)
        ks = sorted(p.site.position for p in ps)
        new_layers.append(layers)
        sources.append(origin)
        inserted.append([model.insertion_index(k) + i for i, k in enumerate(ks)])
    groups[group] = stack_seeds(new_layers)
    grown = model.like(groups)
    return LayerInsertion(grown, _name_sources(grown, group, sources), inserted)


def _positions_per_seed(model: SeedBatchedNet, positions) -> list[list[int]]:
    if len(positions) != model.n_seeds:
        raise ValueError(f"positions must give one entry per seed ({model.n_seeds}), "
                         f"got {len(positions)}")
    per_seed = [[int(k)] if isinstance(k, (int, torch.Tensor)) or hasattr(k, "__index__")
                else [int(j) for j in k] for k in positions]
    valid = model.insertion_positions()
    for ks in per_seed:
        bad = [k for k in ks if k not in valid]
        if bad:
            raise ValueError(f"insertion position(s) {bad} invalid for this {model.kind}; "
                             f"valid positions k (insert after hidden layer k): {valid}")
        if len(set(ks)) != len(ks):
            raise ValueError(f"insertion positions must be distinct, got {ks}")
    return per_seed


def _name_sources(grown: SeedBatchedNet, group: str, origins: list[list[int | None]]):
    sources: dict[str, list[str | None]] = {}
    for name, _ in grown.named_parameters():
        head, *rest = name.split(".")
        if head != group:
            sources[name] = [name] * grown.n_seeds
            continue
        index, tensor = int(rest[0]), rest[1]
        sources[name] = [None if o[index] is None else f"{group}.{o[index]}.{tensor}"
                         for o in origins]
    return sources


class ModuleInsertion(Growth):
    """Growth of an ``nn.Module`` by modules inserted into its containers.

    ``sources[name]`` is the old parameter that parameter ``name`` of the grown model was
    (inserting shifts the names of the entries after it), or None for a new parameter;
    ``inserted`` lists the module paths of the new modules in the grown model, one per
    proposal, in proposal order.
    """

    def __init__(self, model: nn.Module, sources: dict[str, str | None], inserted: list[str]):
        self.model, self.sources, self.inserted = model, sources, inserted

    def transport(self, old: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: torch.zeros_like(param) if self.sources[name] is None
                else old[self.sources[name]] for name, param in self.model.named_parameters()}

    def status(self, name: str) -> str:
        return "new" if self.sources[name] is None else "old"

    def source_of(self, name: str) -> str | None:
        return self.sources[name]


def insert_modules(model: nn.Module, proposals: Sequence[Proposal], how,
                   stats=None) -> ModuleInsertion:
    """Insert a module at every depth site of ``proposals``: the operator for ``nn.Module``.

    Proposals are applied in order; a site's ``index`` refers to the container of the
    original model, and several insertions at one index go in proposal order (the second of
    two blocks appended to a stage follows the first). The initialiser sees the model grown so
    far, so a block built after "the preceding block" is built after the newest one.

    Parameters
    ----------
    model : nn.Module
        Left unchanged: the grown model is a deep copy.
    proposals : list of Proposal
        Depth sites (:class:`growcore.models.sites.DepthSite`) of ``model``.
    how : callable ``(model, proposal, stats) -> nn.Module``
        E.g. :class:`growcore.how.IdentityLayer` or :class:`growcore.how.BlockInit`;
        ``proposal.site.index`` is valid in the model it is given.
    stats : optional
        What data-driven initialisers read.
    """
    grown = copy.deepcopy(model)
    origins: dict[str, list[int | None]] = {}
    placed: list[tuple[str, int]] = []  # (container, index in the grown container)
    for proposal in proposals:
        site = proposal.site
        container = grown.get_submodule(site.container) if site.container else grown
        if not isinstance(container, (nn.Sequential, nn.ModuleList)):
            raise TypeError(f"depth site {site.name}: {site.container or 'the model'} is a "
                            f"{type(container).__name__}, not an nn.Sequential or ModuleList")
        origin = origins.setdefault(site.container, list(range(len(container))))
        n_old = len(origin) - origin.count(None)
        if not 1 <= site.index <= n_old:
            raise ValueError(f"depth site {site.name}: index must lie in 1..{n_old} (after an "
                             f"entry of {site.container or 'the model'})")
        # after every entry that came from an old index below site.index, and after earlier
        # insertions at the same place
        index = next((i for i, o in enumerate(origin) if o is not None and o >= site.index),
                     len(origin))
        local = dataclasses.replace(site, index=index)
        module = how(grown, Proposal(local, proposal.amount, proposal.seed), stats)
        _insert(grown, site.container, index, module)
        origin.insert(index, None)
        placed = [(c, i + 1 if c == site.container and i >= index else i) for c, i in placed]
        placed.append((site.container, index))
    inserted = [f"{c}.{i}" if c else str(i) for c, i in placed]
    return ModuleInsertion(grown, _module_sources(grown, origins), inserted)


def _insert(model: nn.Module, path: str, index: int, module: nn.Module) -> None:
    container = model.get_submodule(path) if path else model
    entries = list(container)
    entries.insert(index, module)
    if not path:  # the model itself is the container: refill it in place
        for name in list(container._modules):
            del container._modules[name]
        for i, entry in enumerate(entries):
            container.add_module(str(i), entry)
        return
    rebuilt = (nn.ModuleList(entries) if isinstance(container, nn.ModuleList)
               else nn.Sequential(*entries))
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, rebuilt)


def _module_sources(grown: nn.Module, origins: dict[str, list[int | None]]
                    ) -> dict[str, str | None]:
    sources: dict[str, str | None] = {}
    for name, _ in grown.named_parameters():
        sources[name] = name
        for container, origin in origins.items():
            prefix = f"{container}." if container else ""
            if not name.startswith(prefix):
                continue
            head, _, rest = name[len(prefix):].partition(".")
            if not head.isdigit():
                continue
            old = origin[int(head)]
            sources[name] = None if old is None else f"{prefix}{old}.{rest}"
    return sources


def identity_module(model: nn.Module, site: DepthSite, resnet_W1_scale: float = 0.8
                    ) -> tuple[nn.Module, list[str]]:
    """A module that is the identity where it is inserted, and the names of its parameters
    whose gradient is SensLI's merit (the multiplier of the constraint "stay the identity").

    * plain site (after an idempotent activation): a Linear with ``W = I`` (Net2Net, SensLI
      eq. 2.6) or a Conv2d with the Dirac kernel, ``b = 0``, followed by the same activation
      when the container is an ``nn.Sequential`` (a ``ModuleList`` model applies it itself);
      in a staged model, a :class:`growcore.models.vgg.ConvBlock` without BatchNorm. Merit:
      the new weight.
    * residual site (end of a stage of residual blocks): a fresh block of the stage's kind
      whose residual branch ends at zero (eq. 2.4's ``W2 = 0``). Merit: that last layer.

    ``resnet_W1_scale`` is used by the seed-batched ResNet only (:func:`identity_layer`).
    """
    container = model.get_submodule(site.container) if site.container else model
    template = container[site.index - 1]
    like = next(model.parameters())
    if site.style == "residual":
        block = block_kind(template).fresh(template)
        end = block_kind(block).branch_end(block)
        with torch.no_grad():
            for param in end.parameters(recurse=False):
                param.zero_()
        names = [n for n, m in block.named_modules() if m is end]
        return block, [f"{names[0]}.{p}" for p, _ in end.named_parameters(recurse=False)]
    if not site.idempotent:
        raise ValueError(f"depth site {site.name}: an identity layer after {site.activation!r} "
                         "does not keep the function (it needs a ReLU form or ReLU6)")
    if site.conv:
        layer = nn.Conv2d(site.width, site.width, 3, padding=1, bias=True)
        with torch.no_grad():
            nn.init.dirac_(layer.weight)
            layer.bias.zero_()
    else:
        layer = nn.Linear(site.width, site.width, bias=getattr(template, "bias", 1) is not None)
        with torch.no_grad():
            layer.weight.copy_(torch.eye(site.width))
            if layer.bias is not None:
                layer.bias.zero_()
    layer = layer.to(like.device, like.dtype)
    if isinstance(container, nn.ModuleList):
        return layer, ["weight"]
    activation = _activation_before(template)
    if is_staged(model) and site.conv:
        block = ConvBlock(site.width, site.width, batch_norm=False,
                          activation=lambda: copy.deepcopy(activation))
        block.conv = layer
        return block, ["conv.weight"]
    return nn.Sequential(layer, copy.deepcopy(activation)), ["0.weight"]


def _activation_before(module: nn.Module) -> nn.Module:
    if hasattr(module, "growth_activation"):
        return module.growth_activation()
    return module


