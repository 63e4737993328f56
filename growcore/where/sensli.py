"""WHERE to insert a layer, by SensLI (Herberg et al. 2023, section 2.4).

Every possible insertion position is scored by the Lagrange multiplier of the constraint
that keeps a virtual identity layer at its initial value, from one forward-backward pass of
the fully extended network (:func:`growcore.stats.virtual.extended_gradients`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from growcore.data import Split
from growcore.models.seed_batched import SeedBatchedNet
from growcore.models.sites import DepthSite, Proposal
from growcore.stats.probe import Probe, data_of
from growcore.stats.virtual import NORMALISATIONS, extended_gradients, module_merits

SELECTIONS = ("max", "min")


def sensli_merits(model: SeedBatchedNet, split: Split, normalisation: str = "paper",
                  resnet_W1_scale: float = 0.8, batch_size: int | None = None,
                  generator: torch.Generator | None = None,
                  loss: str = "cross_entropy") -> torch.Tensor:
    """SensLI merit of every insertion position of a seed-batched net, for every seed.

    ``normalisation="paper"`` is eq. (2.14)/(2.15): ``||grad_W f_ext||_F^2 / h_k^2`` with W the
    new FNN weight (2.14) or the new ResNet weight W2 (2.15); ``"code"`` omits ``1/h_k^2`` as
    the authors' public code does. Biases are ignored, as in the paper; for ResNets the W1
    gradient is zero at insertion (eq. 2.5a), so W2 carries all the information.

    Returns
    -------
    Tensor of shape [S, P]: merit of position ``model.insertion_positions()[p]`` for seed s.
    """
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    positions = model.insertion_positions()
    extended, grads = extended_gradients(model, split, resnet_W1_scale, batch_size, generator,
                                         loss)
    group, weight = model.insertion_group, model.merit_weight
    merits = torch.empty(model.n_seeds, len(positions), dtype=grads[next(iter(grads))].dtype)
    for p, k in enumerate(positions):
        index = extended.inserted[0][p]  # the same for every seed: all insert at all positions
        g = grads[f"{group}.{index}.{weight}"]
        scale = model.width_at(k) ** 2 if normalisation == "paper" else 1
        merits[:, p] = g.pow(2).sum(dim=(1, 2)) / scale
    return merits


@dataclass
class SensLI:
    """WHERE criterion of SensLI: insert where the merit is largest (``select="max"``, the
    paper's LI) or smallest (``"min"``, the paper's LI_other control).

    On a seed-batched net every seed chooses its own position (eqs. 2.14-2.15, one proposal
    per seed); on any other model with depth sites, one virtual identity layer per site
    (:func:`growcore.stats.virtual.module_merits`) scores them, under the training loss of
    the probe (cross-entropy, MSE, ...).

    Parameters
    ----------
    select : {"max", "min"}
    normalisation : {"paper", "code"}
        Divide the squared multiplier norm by the width squared (paper) or not (the code).
    batch_size : int, optional
        None: full-data gradients; an int: one epoch of minibatches (section 2.4).
    resnet_W1_scale : float
        ``W1 = c I`` of the seed-batched ResNet's virtual blocks (paper: 0.8).

    Attributes
    ----------
    reduce_gradients : callable or None
        Not an option: set by :func:`growcore.distributed.reduce_statistics` under torchrun
        (the mean over the ranks of an ``nn.Module``'s virtual-layer gradients, see
        :func:`growcore.stats.virtual.module_merits`).
    """

    select: str = "max"
    normalisation: str = "paper"
    batch_size: int | None = None
    resnet_W1_scale: float = 0.8
    reduce_gradients: Callable | None = field(default=None, init=False, repr=False,
                                              compare=False)

    kind: ClassVar[str] = "depth"

    def __post_init__(self):
        if self.select not in SELECTIONS:
            raise ValueError(f"select must be one of {SELECTIONS}, got {self.select!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, "
                             f"got {self.normalisation!r}")

    def __call__(self, model: nn.Module, sites: list[DepthSite], stats: Probe
                 ) -> tuple[list[Proposal], dict]:
        split = data_of(stats, self)
        if isinstance(model, SeedBatchedNet):
            return self._seed_batched(model, sites, split, stats.loss)
        merits = module_merits(model, sites, split, stats.loss, self.normalisation,
                               self.batch_size, reduce=self.reduce_gradients)
        pick = int(merits.argmax() if self.select == "max" else merits.argmin())
        info = {"candidates": [site.name for site in sites], "merits": merits.tolist(),
                "chosen": [sites[pick].name],
                "cost_flops": 3 * _module_flops(model, sites) * len(split.y_train)}
        return [Proposal(sites[pick])], info

    def _seed_batched(self, model: SeedBatchedNet, sites, split, loss):
        positions = model.insertion_positions()
        merits = sensli_merits(model, split, self.normalisation, self.resnet_W1_scale,
                               self.batch_size, loss=loss)
        pick = merits.argmax(dim=1) if self.select == "max" else merits.argmin(dim=1)
        chosen = [positions[int(i)] for i in pick]
        by_position = {site.position: site for site in sites}
        proposals = [Proposal(by_position[k], 1, seed=s) for s, k in enumerate(chosen)]
        info = {"candidates": positions, "merits": merits.tolist(), "chosen": chosen,
                "cost_flops": 3 * _extended_flops(model, positions) * len(split.y_train)}
        return proposals, info

    def describe(self) -> dict:
        return {"criterion": "SensLI", "select": self.select, "normalisation": self.normalisation,
                "batch_size": self.batch_size, "resnet_W1_scale": self.resnet_W1_scale}


def _extended_flops(model: SeedBatchedNet, positions: list[int]) -> int:
    h = [model.width_at(k) for k in positions]
    per_layer = sum(2 * w * w for w in h) * (2 if model.kind == "resnet" else 1)
    return model.flops_per_example() + per_layer


def _module_flops(model: nn.Module, sites: list[DepthSite]) -> int:
    """Forward FLOPs of the extended network per example, roughly: the model's (2 per
    weight if it does not count them) plus a width x width layer per site (per pixel of a
    feature map not counted: a lower bound for convolutions)."""
    base = model.flops_per_example() if hasattr(model, "flops_per_example") else 2 * sum(
        p.numel() for p in model.parameters())
    return base + sum(2 * site.width ** 2 for site in sites)
