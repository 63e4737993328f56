"""The change itself: function-preserving growth operators.

Every operator returns a :class:`Growth`: the grown model plus the map from old to new
parameters. The same map carries the optimiser state across the change
(:func:`growcore.optim.rebuild_optimizer`): old entries keep their state, new ones start at
zero.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from growcore.models.seed_batched import Layer, SeedBatchedNet, stack_seeds


class Growth:
    """Result of a growth operator.

    Attributes
    ----------
    model : torch.nn.Module
        The grown model (a new object; the old one is left unchanged).
    """

    model: torch.nn.Module

    def transport(self, old: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map tensors shaped like the old parameters (by name) to the new parameters.

        Entries that are new after the change are zero. Applied to the optimiser's
        momentum or moment buffers this implements "old entries unchanged, new ones zero".
        """
        raise NotImplementedError

    def status(self, name: str) -> str:
        """Whether parameter ``name`` existed before the change.

        ``"old"``: unchanged in shape; ``"new"``: created by the change; ``"extended"``: an
        old tensor with new entries (a widened layer; its optimiser step count is kept);
        ``"mixed"``: old for some seeds of a seed-batched model and new for others.
        """
        raise NotImplementedError

    def source_of(self, name: str) -> str | None:
        """The old parameter whose scalar optimiser state (e.g. Adam's step) ``name`` keeps."""
        raise NotImplementedError


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
