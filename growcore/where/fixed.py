"""WHERE by a fixed rule: the same sites every time, widths grown to a target, or the next
stage of a staged network (FRAGrow's stage orders).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from torch import nn

from growcore.models.sites import DepthSite, Proposal, WidthSite, width_sites
from growcore.models.staged import depths, is_staged, unwrap
from growcore.ops.widen import width


def _by_producer(sites) -> dict:
    return {site.producer: site for site in sites}


@dataclass
class FixedSites:
    """WHERE: always the same sites, by producer name, with ``units`` new units each
    (the paper's fixed schedule: GradMax section 4.1 grows the one hidden layer)."""

    units: dict[str, int]

    kind: ClassVar[str] = "width"

    def refuses(self, model: nn.Module) -> str | None:
        """Why these sites cannot be grown in ``model`` (None if they can)."""
        names = {site.producer for site in width_sites(model)}
        missing = sorted(set(self.units) - names)
        return f"no width site {missing}; the model has {sorted(names)}" if missing else None

    def __call__(self, model: nn.Module, sites: list[WidthSite], stats=None
                 ) -> tuple[list[Proposal], dict]:
        by_name = _by_producer(sites)
        missing = sorted(set(self.units) - set(by_name))
        if missing:
            raise ValueError(f"FixedSites: no width site {missing}; the model has "
                             f"{sorted(by_name)}")
        return [Proposal(by_name[name], k) for name, k in self.units.items()], {
            "units": self.units}

    def describe(self) -> dict:
        return {"criterion": "FixedSites", "units": self.units}


@dataclass
class GrowToWidths:
    """WHERE: grow every site from its initial width to ``factor`` times it in ``growths``
    equal steps (paper section 4.2: "we add new neurons to all layers with reduced initial
    width, proportional to their target widths"; width x0.25 -> x1 is ``factor=4``).

    Stateful: the initial widths are read at the first call.
    """

    factor: float
    growths: int
    initial: dict[str, int] = field(default_factory=dict, init=False)  # read at the first call
    done: int = field(default=0, init=False)  # growths so far

    kind: ClassVar[str] = "width"

    def __call__(self, model: nn.Module, sites: list[WidthSite], stats=None
                 ) -> tuple[list[Proposal], dict]:
        sites = _by_producer(sites)
        if not self.initial:
            self.initial = {name: width(model, site) for name, site in sites.items()}
        self.done += 1
        units = {}
        for name, site in sites.items():
            target = round(self.initial[name] * (1 + (self.factor - 1) * min(
                self.done, self.growths) / self.growths))
            units[name] = max(0, target - width(model, site))
        return [Proposal(sites[n], k) for n, k in units.items() if k > 0], {"units": units}

    def describe(self) -> dict:
        return {"criterion": "GrowToWidths", "factor": self.factor, "growths": self.growths}


ORDERS = ("stagewise", "circulating")


PER_GROWTH = ("one", "double")


@dataclass
class StageOrder:
    """WHERE to add the next block(s) of a staged network.

    Parameters
    ----------
    seed, target : list of int
        Blocks per stage of the seed and of the target network.
    order : {"stagewise", "circulating"}
        ``"stagewise"``: fill the first stage below its target, then the next (the slides'
        layer-wise default); ``"circulating"``: visit the stages in turn, adding to the stage
        that has received the fewest blocks so far (Wen et al. 2020; slides' Table 9).
    per_growth : {"one", "double"}
        One block per growth, or double every stage up to its target (LipGrow).
    """

    seed: list[int]
    target: list[int]
    order: str = "stagewise"
    per_growth: str = "one"

    def __post_init__(self):
        if self.order not in ORDERS or self.per_growth not in PER_GROWTH:
            raise ValueError(f"order must be one of {ORDERS} and per_growth one of "
                             f"{PER_GROWTH}, got {self.order!r}, {self.per_growth!r}")
        if len(self.seed) != len(self.target) or any(
                a > b for a, b in zip(self.seed, self.target)):
            raise ValueError(f"target {self.target} must have as many stages as seed "
                             f"{self.seed} and no fewer blocks in any")

    @property
    def n_blocks(self) -> int:
        """Blocks between seed and target (``n`` of FRAGrow eq. 4)."""
        return sum(self.target) - sum(self.seed)

    def sites(self, current: Sequence[int]) -> list[int]:
        """Stages to grow next, given the current blocks per stage."""
        open_stages = [s for s, (d, t) in enumerate(zip(current, self.target)) if d < t]
        if not open_stages:
            return []
        if self.per_growth == "double":
            return [s for s in open_stages
                    for _ in range(min(current[s], self.target[s] - current[s]))]
        if self.order == "stagewise":
            return [open_stages[0]]
        return [min(open_stages, key=lambda s: (current[s] - self.seed[s], s))]

    kind: ClassVar[str] = "depth"

    def refuses(self, model: nn.Module) -> str | None:
        """Why this order cannot grow ``model`` (None if it can)."""
        if not is_staged(model):
            return "StageOrder adds blocks to the stages of a staged model (model.stages)"
        if len(depths(unwrap(model))) != len(self.seed):
            return (f"the model has {len(depths(unwrap(model)))} stages, the order "
                    f"{len(self.seed)} (seed {self.seed})")
        return None

    def __call__(self, model: nn.Module, sites: list[DepthSite], stats=None
                 ) -> tuple[list[Proposal], dict]:
        current = depths(unwrap(model))
        chosen = self.sites(current)
        after = list(current)
        for s in chosen:
            after[s] += 1
        by_stage = {site.container: site for site in sites}
        proposals = [Proposal(by_stage[f"stages.{s}"]) for s in chosen]
        return proposals, {"stages": chosen, "blocks_added": len(chosen), "depths": after}

    def describe(self) -> dict:
        return {"criterion": "StageOrder", "seed": self.seed, "target": self.target,
                "order": self.order, "per_growth": self.per_growth}
