"""WHERE to insert a layer, by SensLI (Herberg et al. 2023, section 2.4).

Every possible insertion position is scored by the Lagrange multiplier of the constraint
that keeps a virtual identity layer at its initial value, from one forward-backward pass of
the fully extended network (:func:`growcore.stats.virtual.extended_gradients`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from growcore.data import Split
from growcore.models.seed_batched import SeedBatchedNet
from growcore.stats.virtual import extended_gradients

NORMALISATIONS = ("paper", "code")


SELECTIONS = ("max", "min")


def sensli_merits(model: SeedBatchedNet, split: Split, normalisation: str = "paper",
                  resnet_W1_scale: float = 0.8, batch_size: int | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """SensLI merit of every insertion position, for every seed.

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
    extended, grads = extended_gradients(model, split, resnet_W1_scale, batch_size, generator)
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

    Calling it returns one position per seed and a JSON-able info dict with the merits.
    """

    select: str = "max"
    normalisation: str = "paper"
    batch_size: int | None = None
    resnet_W1_scale: float = 0.8

    def __post_init__(self):
        if self.select not in SELECTIONS:
            raise ValueError(f"select must be one of {SELECTIONS}, got {self.select!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, "
                             f"got {self.normalisation!r}")

    def __call__(self, model: SeedBatchedNet, split: Split) -> tuple[list[int], dict]:
        positions = model.insertion_positions()
        merits = sensli_merits(model, split, self.normalisation, self.resnet_W1_scale,
                               self.batch_size)
        pick = merits.argmax(dim=1) if self.select == "max" else merits.argmin(dim=1)
        chosen = [positions[int(i)] for i in pick]
        extended_flops = _extended_flops(model, positions)
        info = {"candidates": positions, "merits": merits.tolist(), "chosen": chosen,
                "cost_flops": 3 * extended_flops * len(split.y_train)}
        return chosen, info

    def describe(self) -> dict:
        return {"criterion": "SensLI", "select": self.select, "normalisation": self.normalisation,
                "batch_size": self.batch_size, "resnet_W1_scale": self.resnet_W1_scale}


def _extended_flops(model: SeedBatchedNet, positions: list[int]) -> int:
    h = [model.width_at(k) for k in positions]
    per_layer = sum(2 * w * w for w in h) * (2 if model.kind == "resnet" else 1)
    return model.flops_per_example() + per_layer
