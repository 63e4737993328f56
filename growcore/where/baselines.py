"""WHERE baselines that no paper proposes but every comparison needs.

* :class:`GradientNorm`: the width sites whose producer weights have the largest gradient
  norm on the training data, the naive "where is the loss most sensitive" answer;
* :class:`RandomWidth`, :class:`RandomDepth`: sites drawn uniformly at random, the control
  any criterion has to beat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from growcore.losses import LOSSES, as_seed_batch
from growcore.models.seed_batched import SeedBatchedNet
from growcore.models.sites import DepthSite, Proposal, WidthSite
from growcore.stats.probe import FULL_CHUNK, Probe, data_of, unchanged_buffers


def weight_gradient_norms(model: nn.Module, sites: list[WidthSite], stats: Probe
                          ) -> dict[str, float]:
    """Producer name -> ``||dL/dW_producer||_F`` of the mean training loss over the probe's
    data (in chunks of :data:`FULL_CHUNK`, weighted to the full-data mean); the model's own
    ``.grad`` and BatchNorm statistics are left untouched."""
    split = data_of(stats, "GradientNorm")
    weights = [model.get_submodule(site.producer).weight for site in sites]
    n = len(split.y_train)
    total = [torch.zeros_like(w) for w in weights]
    with unchanged_buffers(model):
        for X, y in split.chunks(FULL_CHUNK):
            value = LOSSES[stats.loss](as_seed_batch(model(X)), y).sum() * (len(y) / n)
            for acc, grad in zip(total, torch.autograd.grad(value, weights)):
                acc += grad
    return {site.producer: float(g.norm()) for site, g in zip(sites, total)}


@dataclass
class GradientNorm:
    """WHERE: the ``n_sites`` width sites with the largest gradient norm of their producer's
    weights, ``k`` new units each (a baseline for the comparison of criteria)."""

    k: int = 1
    n_sites: int = 1

    kind: ClassVar[str] = "width"

    def __call__(self, model: nn.Module, sites: list[WidthSite], stats: Probe
                 ) -> tuple[list[Proposal], dict]:
        scores = weight_gradient_norms(model, sites, stats)
        chosen = sorted(scores, key=scores.get, reverse=True)[:self.n_sites]
        by_name = {site.producer: site for site in sites}
        return [Proposal(by_name[name], self.k) for name in chosen], {"scores": scores,
                                                                     "chosen": chosen}

    def describe(self) -> dict:
        return {"criterion": "GradientNorm", "k": self.k, "n_sites": self.n_sites}


def _draw(sites: list, n_sites: int, generator: torch.Generator) -> list:
    order = torch.randperm(len(sites), generator=generator)[:n_sites].tolist()
    return [sites[i] for i in sorted(order)]


@dataclass
class RandomWidth:
    """WHERE: ``n_sites`` width sites drawn uniformly at random, ``k`` new units each."""

    k: int = 1
    n_sites: int = 1
    seed: int = 0

    kind: ClassVar[str] = "width"

    def __post_init__(self):
        self.generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, model: nn.Module, sites: list[WidthSite], stats=None
                 ) -> tuple[list[Proposal], dict]:
        chosen = _draw(sites, self.n_sites, self.generator)
        return [Proposal(site, self.k) for site in chosen], {
            "chosen": [site.name for site in chosen]}

    def describe(self) -> dict:
        return {"criterion": "RandomWidth", "k": self.k, "n_sites": self.n_sites,
                "seed": self.seed}


@dataclass
class RandomDepth:
    """WHERE: one depth site drawn uniformly at random, the control of SensLI's choice.

    On a seed-batched net every seed draws its own site, from a generator seeded by that
    seed's value (so a seed draws the same sites batched or alone); otherwise from the
    generator of ``seed``.
    """

    seed: int = 0

    kind: ClassVar[str] = "depth"

    def __post_init__(self):
        self.generator = torch.Generator().manual_seed(self.seed)
        self._per_seed: dict[int, torch.Generator] = {}

    def __call__(self, model: nn.Module, sites: list[DepthSite], stats=None
                 ) -> tuple[list[Proposal], dict]:
        if not isinstance(model, SeedBatchedNet):
            (site,) = _draw(sites, 1, self.generator)
            return [Proposal(site)], {"chosen": [site.name]}
        proposals = []
        for i, seed in enumerate(model.seeds):
            generator = self._per_seed.setdefault(seed, torch.Generator().manual_seed(seed))
            (site,) = _draw(sites, 1, generator)
            proposals.append(Proposal(site, seed=i))
        return proposals, {"chosen": [p.site.position for p in proposals]}

    def describe(self) -> dict:
        return {"criterion": "RandomDepth", "seed": self.seed}
