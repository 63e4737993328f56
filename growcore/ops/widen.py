r"""The change itself for width growth: k new units or channels at a site, function preserved.

A *width site* (``WidthSite(producer, norm, consumer, spatial)``, see
:mod:`growcore.models.sites`) names, by module path, the layer whose outputs grow (the
*producer*, GradMax layer l, ``W_l``), an optional BatchNorm on those outputs and the layer
that reads them (the *consumer*, layer l+1, ``W_{l+1}``). ``spatial`` is H*W when the consumer
is a Linear layer after a flatten of a Conv2d output, else 1. New units are appended (GradMax
eqs. (2)-(3)):

.. math:: W_l^+ = [W_l; W_l^{new}], \qquad W_{l+1}^+ = [W_{l+1}, W_{l+1}^{new}].

The output is unchanged when ``W_l^{new} = 0`` with ``f(0) = 0`` (GradMax) or when
``W_{l+1}^{new} = 0`` (the "inverse" of paper Table 2). Depthwise convolutions between producer
and consumer (MobileNet) get an identity filter per new channel. A new BatchNorm channel has
scale 1,
shift 0, running mean 0 and running variance 1: in eval mode it maps 0 to 0, and in train mode
a channel that is 0 for every example has batch mean 0 and normalises to 0.

The *how* protocol: an initialiser is a callable ``how(model, proposal, stats) -> NewUnits``
that returns the ``proposal.amount = k`` new units' incoming and outgoing weights in a layout
shared by Linear and Conv2d:

* ``incoming`` ``[k, D]``, with D = ``producer.weight[0].numel()`` (for a Conv2d: the
  ``c * kh * kw`` entries of one filter in its memory order);
* ``outgoing`` ``[o, k, R]``, with o the consumer's outputs and R its receptive field on one
  unit: ``kh * kw`` for a Conv2d consumer, ``spatial`` for a Linear consumer after a flatten,
  1 for a Linear consumer.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from growcore.models.sites import Proposal
from growcore.ops.base import Growth


@dataclass
class NewUnits:
    """New weights of ``k`` units at one site (layouts in the module docstring).

    ``incoming_bias`` (``[k]``) defaults to zero: a non-zero bias would change the output.
    """

    incoming: torch.Tensor
    outgoing: torch.Tensor
    incoming_bias: torch.Tensor | None = None


@dataclass
class WidthGrowth(Growth):
    """Growth of an ``nn.Module`` in width.

    ``extended[name]`` is the old shape of a widened parameter: the old tensor is its leading
    block (a layer that is the consumer of one site and the producer of the next grows along
    both dimensions). Every other parameter is unchanged.
    """

    model: nn.Module
    extended: dict[str, tuple[int, ...]]

    def transport(self, old: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        params = dict(self.model.named_parameters())
        out = {}
        for name, tensor in old.items():
            if name not in self.extended:
                out[name] = tensor
                continue
            new = torch.zeros_like(params[name])
            new[tuple(slice(0, size) for size in self.extended[name])] = tensor
            out[name] = new
        return out

    def status(self, name: str) -> str:
        return "extended" if name in self.extended else "old"

    def source_of(self, name: str) -> str | None:
        return name


def unit_sizes(model: nn.Module, site) -> tuple[int, int, int]:
    """``(D, o, R)`` of a site: incoming size per unit, consumer outputs, receptive field."""
    producer, consumer = model.get_submodule(site.producer), model.get_submodule(site.consumer)
    D = producer.weight[0].numel()
    if isinstance(consumer, nn.Conv2d):
        return D, consumer.out_channels, consumer.weight[0, 0].numel()
    return D, consumer.out_features, site.spatial


def width(model: nn.Module, site) -> int:
    """Current number of units of a site's producer."""
    producer = model.get_submodule(site.producer)
    return producer.out_channels if isinstance(producer, nn.Conv2d) else producer.out_features


def widen(model: nn.Module, proposals: Sequence[Proposal], how, stats=None) -> WidthGrowth:
    """Add units at width sites: the operator for width growth.

    Parameters
    ----------
    model : nn.Module
        Left unchanged: the grown model is a deep copy with the widened modules replaced.
    proposals : list of Proposal
        Width sites (:class:`growcore.models.sites.WidthSite`) and how many units each gains;
        proposals of 0 units are skipped.
    how : callable ``(model, proposal, stats) -> NewUnits``
        The initialiser (e.g. :class:`growcore.how.GradMax`), called on the model before any
        site grows, so several sites see the same statistics.
    stats : optional
        What data-driven initialisers read (:class:`growcore.stats.Probe`: the training data
        and the loss).

    Returns
    -------
    WidthGrowth
    """
    units = [(p.site, p.amount, how(model, p, stats)) for p in proposals if p.amount > 0]
    for site, k, new in units:
        _check_shapes(model, site, k, new)
    grown = copy.deepcopy(model)
    old_shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    changed: set[str] = set()
    # producers first, then consumers: a consumer that is also a producer has its new output
    # rows by then, and the new units' weights from other new units are zero (function kept)
    for site, k, new in units:
        changed |= _grow_producer(grown, site.producer, new)
        if site.norm is not None:
            changed |= _grow_norm(grown, site.norm, k)
        for conv, norm in site.depthwise:
            changed |= _grow_depthwise(grown, conv, k)
            if norm is not None:
                changed |= _grow_norm(grown, norm, k)
    for site, _, new in units:
        changed |= _grow_consumer(grown, site, new)
    return WidthGrowth(grown, {name: old_shapes[name] for name in changed})


def widen_seeds(model, proposals: Sequence[Proposal], how, stats=None) -> WidthGrowth:
    """Width growth of a seed-batched FNN, seed by seed.

    Seed ``i``'s network (:meth:`growcore.models.seed_batched.SeedBatchedFNN.seed_module`,
    an MLP whose width sites have the names of the batched net's) is widened by
    :func:`widen` with its proposals (those with ``seed == i``, and those without a seed)
    and the grown MLPs are stacked again. Every seed must end with the
    same widths (:class:`growcore.models.seed_batched.SeedShapeMismatch` otherwise, e.g. when
    seeds chose different sites).

    Parameters
    ----------
    how : initialiser, or a sequence of one initialiser per seed
        Called on seed ``i``'s MLP with the MLP's site (per-seed initialisers keep each
        seed's random draws its own).
    """
    from growcore.models.seed_batched import SeedShapeMismatch

    hows = list(how) if isinstance(how, Sequence) else [how] * model.n_seeds
    grown = []
    for i in range(model.n_seeds):
        mine = [Proposal(p.site, p.amount) for p in proposals if p.seed in (None, i)]
        own = stats.for_seed(i) if hasattr(stats, "for_seed") else stats  # its data
        grown.append(widen(model.seed_module(i), mine, hows[i], own).model)
    widths = {tuple(net.widths) for net in grown}
    if len(widths) > 1:
        raise SeedShapeMismatch(f"seeds grew to different widths {sorted(widths)}")
    new = model.from_seed_modules(grown)
    old = {name: tuple(p.shape) for name, p in model.named_parameters()}
    return WidthGrowth(new, {name: old[name] for name, p in new.named_parameters()
                             if tuple(p.shape) != old[name]})


def _check_shapes(model: nn.Module, site, k: int, new: NewUnits) -> None:
    D, o, R = unit_sizes(model, site)
    if tuple(new.incoming.shape) != (k, D) or tuple(new.outgoing.shape) != (o, k, R):
        raise ValueError(f"initialiser for site {site} must give incoming [{k}, {D}] and "
                         f"outgoing [{o}, {k}, {R}]; got {list(new.incoming.shape)} and "
                         f"{list(new.outgoing.shape)}")


def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


def _like(module: nn.Module, **changes) -> nn.Module:
    """A module of the same class and settings with some sizes changed."""
    weight = module.weight
    factory = {"device": weight.device, "dtype": weight.dtype}
    if isinstance(module, nn.Conv2d):
        args = {"in_channels": module.in_channels, "out_channels": module.out_channels,
                "kernel_size": module.kernel_size, "stride": module.stride,
                "padding": module.padding, "dilation": module.dilation,
                "groups": module.groups, "bias": module.bias is not None,
                "padding_mode": module.padding_mode}
        return nn.Conv2d(**{**args, **changes}, **factory)
    args = {"in_features": module.in_features, "out_features": module.out_features,
            "bias": module.bias is not None}
    return nn.Linear(**{**args, **changes}, **factory)


def _grow_producer(model: nn.Module, path: str, new: NewUnits) -> set[str]:
    old = model.get_submodule(path)
    if isinstance(old, nn.Conv2d) and old.groups != 1:
        raise ValueError(f"widening grouped convolutions ({path}) is not supported")
    k = len(new.incoming)
    key = "out_channels" if isinstance(old, nn.Conv2d) else "out_features"
    size = getattr(old, key)
    module = _like(old, **{key: size + k})
    with torch.no_grad():
        module.weight.copy_(torch.cat([old.weight, new.incoming.view(k, *old.weight.shape[1:])
                                       .to(old.weight)]))
        if old.bias is not None:
            bias = new.incoming_bias if new.incoming_bias is not None else old.bias.new_zeros(k)
            module.bias.copy_(torch.cat([old.bias, bias.to(old.bias)]))
    _replace(model, path, module)
    return {f"{path}.weight"} | ({f"{path}.bias"} if old.bias is not None else set())


def _grow_norm(model: nn.Module, path: str, k: int) -> set[str]:
    old = model.get_submodule(path)
    if not isinstance(old, nn.modules.batchnorm._BatchNorm):
        raise ValueError(f"site norm {path!r} must be a BatchNorm layer, got {type(old)}")
    module = copy.deepcopy(old)
    module.num_features = old.num_features + k
    pad = {"weight": 1.0, "bias": 0.0, "running_mean": 0.0, "running_var": 1.0}
    for name, value in pad.items():
        tensor = getattr(old, name)
        if tensor is None:
            continue
        grown = torch.cat([tensor.detach(), tensor.new_full((k,), value)])
        if isinstance(tensor, nn.Parameter):
            setattr(module, name, nn.Parameter(grown, requires_grad=tensor.requires_grad))
        else:
            setattr(module, name, grown)
    _replace(model, path, module)
    return {f"{path}.weight", f"{path}.bias"} if old.affine else set()


def _grow_depthwise(model: nn.Module, path: str, k: int) -> set[str]:
    """One identity filter (centre tap 1) per new channel of a depthwise convolution: zero
    stays zero, so the function is kept (GradMax section 4.2, MobileNet-v1)."""
    old = model.get_submodule(path)
    channels = old.in_channels + k
    module = _like(old, in_channels=channels, out_channels=channels, groups=channels)
    with torch.no_grad():
        filters = old.weight.new_zeros(k, *old.weight.shape[1:])
        filters[:, :, old.kernel_size[0] // 2, old.kernel_size[1] // 2] = 1
        module.weight.copy_(torch.cat([old.weight, filters]))
        if old.bias is not None:
            module.bias.copy_(torch.cat([old.bias, old.bias.new_zeros(k)]))
    _replace(model, path, module)
    return {f"{path}.weight"} | ({f"{path}.bias"} if old.bias is not None else set())


def _grow_consumer(model: nn.Module, site, new: NewUnits) -> set[str]:
    old = model.get_submodule(site.consumer)
    outgoing = new.outgoing
    o = old.weight.shape[0]
    if o > len(outgoing):  # the consumer grew its own outputs first: zero rows for them
        outgoing = torch.cat([outgoing, outgoing.new_zeros(o - len(outgoing), *outgoing.shape[1:])])
    k = outgoing.shape[1]
    if isinstance(old, nn.Conv2d):
        size = old.in_channels
        module = _like(old, in_channels=size + k)
        columns = outgoing.reshape(o, k, *old.weight.shape[2:])
    else:
        size = old.in_features
        module = _like(old, in_features=size + k * site.spatial)
        columns = outgoing.reshape(o, k * site.spatial)  # flatten is channel-major
    with torch.no_grad():
        module.weight.copy_(torch.cat([old.weight, columns.to(old.weight)], dim=1))
        if old.bias is not None:
            module.bias.copy_(old.bias)
    _replace(model, site.consumer, module)
    return {f"{site.consumer}.weight"}
