"""WHERE to widen by GradMax's singular values (Evci et al. 2022, section 3: "layers to grow
could be chosen depending on which have the largest singular values").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from growcore.models.sites import Proposal, WidthSite
from growcore.stats.gradmax import GradientMatrices, TargetNorm, outgoing_norms
from growcore.stats.probe import Probe, data_of, loss_of
from growcore.where.fixed import _by_producer


@dataclass
class LargestSingularValue:
    """WHERE: the sites where GradMax predicts the largest gradient (paper section 3: "layers
    to grow could be chosen depending on which have the largest singular values").

    A site's score is the norm of the new incoming weights' gradient that GradMax with ``k``
    units would give, ``c (sigma_1^2 + ... + sigma_k^2)^(1/2)``, so that sites are compared at
    the norms they would actually get. ``statistics`` is GradMax's (``"passthrough"``: the
    layers between producer and consumer treated as the identity, max pooling as average
    pooling; ``"virtual"``: the exact matrix through them, see
    :class:`growcore.stats.gradmax.GradientMatrices`).
    """

    k: int = 1
    n_sites: int = 1
    loss: str | None = None
    batch_size: int | None = None
    norm: TargetNorm = field(default_factory=TargetNorm)
    conv_matrix: str = "exact"
    seed: int = 0
    statistics: str = "passthrough"

    kind: ClassVar[str] = "width"

    def __post_init__(self):
        self.matrices = GradientMatrices(self.batch_size, self.conv_matrix,
                                         torch.Generator().manual_seed(self.seed),
                                         statistics=self.statistics)

    def scores(self, model: nn.Module, sites: list[WidthSite], stats: Probe) -> dict[str, float]:
        """Producer name -> predicted gradient norm of ``k`` new GradMax units."""
        out = {}
        split, loss = data_of(stats, self), loss_of(stats, self.loss)
        for name, site in _by_producer(sites).items():
            S = torch.linalg.svdvals(self.matrices(model, site, split, loss, stats))
            c = self.norm(outgoing_norms(model, site))
            out[name] = c * float(S[:self.k].norm())
        return out

    def __call__(self, model: nn.Module, sites: list[WidthSite], stats: Probe
                 ) -> tuple[list[Proposal], dict]:
        scores = self.scores(model, sites, stats)
        chosen = sorted(scores, key=scores.get, reverse=True)[:self.n_sites]
        by_name = _by_producer(sites)
        return [Proposal(by_name[name], self.k) for name in chosen], {"scores": scores,
                                                                     "chosen": chosen}

    def describe(self) -> dict:
        return {"criterion": "LargestSingularValue", "k": self.k, "n_sites": self.n_sites,
                "loss": self.loss, "batch_size": self.batch_size, "scale": self.norm.scale,
                "value": self.norm.value, "conv_matrix": self.conv_matrix, "seed": self.seed,
                **({"statistics": self.statistics} if self.statistics != "passthrough"
                   else {})}
