"""The change itself for depth growth: insert layers or blocks, function preserved.

* :func:`insert_layers`: layers into a seed-batched FNN or ResNet after hidden layers ``k``
  (SensLI section 2.3), each seed at its own positions;
* :func:`add_blocks`: blocks appended to the stages of a staged network (FRAGrow).

Both return a :class:`growcore.ops.base.Growth`; new parameters start with zero optimiser
state.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from growcore.activations import RELUS
from growcore.models.seed_batched import Layer, SeedBatchedNet, stack_seeds
from growcore.models.staged import STAGES, stages
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


def insert_layers(model: SeedBatchedNet, positions: Sequence[int] | Sequence[Sequence[int]],
                  how: Callable[[SeedBatchedNet, int, int], Layer],
                  split=None) -> LayerInsertion:
    """Insert layers into a seed-batched FNN or ResNet after hidden layers ``positions``.

    Parameters
    ----------
    model : SeedBatchedNet
        The network (unchanged by the call).
    positions : list of int, or list (one per seed) of lists of int
        ``k`` means "after hidden layer k" (1-based, SensLI section 2.3). A flat list gives
        one position per seed; a list of lists gives several positions per seed (the fully
        extended network of section 2.4 inserts at all positions at once).
    how : callable
        Initialiser of the new layer, e.g. :class:`growcore.how.IdentityLayer` (eq. 2.4/2.6),
        which makes the insertion function-preserving.
    split : ignored
        Growth operators share the signature ``op(model, sites, how, split)``; data-driven
        initialisers (e.g. GradMax) use the split, the identity layer does not.

    Returns
    -------
    LayerInsertion
    """
    per_seed = _positions_per_seed(model, positions)
    group = model.insertion_group
    groups = model.groups()
    new_layers, sources, inserted = [], [], []
    for s, ks in enumerate(per_seed):
        layers = [{n: t[s] for n, t in layer.items()} for layer in groups[group]]
        origin: list[int | None] = list(range(len(layers)))
        for k in sorted(ks, reverse=True):
            index = model.insertion_index(k)
            layers.insert(index, how(model, k, s))
            origin.insert(index, None)
        new_layers.append(layers)
        sources.append(origin)
        inserted.append([model.insertion_index(k) + i for i, k in enumerate(sorted(ks))])
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


class BlockGrowth(Growth):
    """Growth by appended blocks: old parameters keep their names, ``new`` names are new."""

    def __init__(self, model: nn.Module, new: set[str], prefix: str = ""):
        self.model, self.new, self.prefix = model, set(new), prefix

    def transport(self, old: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for name, param in self.model.named_parameters():
            out[name] = torch.zeros_like(param) if name in self.new else old[name]
        return out

    def status(self, name: str) -> str:
        return "new" if name in self.new else "old"

    def source_of(self, name: str) -> str | None:
        return None if name in self.new else name


def add_blocks(model: nn.Module, sites: Sequence[int], how: Callable,
               split=None) -> BlockGrowth:
    """Append one block to stage ``s`` for every ``s`` in ``sites`` (a stage may repeat).

    Parameters
    ----------
    model : staged network (unchanged by the call; the grown one is a copy)
    sites : list of int
        Stage indices, from a where-rule such as :class:`StageOrder`.
    how : BlockInit
    split : ignored (the spine's operator signature)
    """
    grown = copy.deepcopy(model)
    new: set[str] = set()
    for s in sites:
        stage = stages(grown)[s]
        name = f"{STAGES}.{s}.{len(stage) - 1}"
        block = how(stage[-1], name)
        stage.append(block)
        new |= {f"{STAGES}.{s}.{len(stage) - 1}.{n}" for n, _ in block.named_parameters()}
    return BlockGrowth(grown, new)
