"""WHEN by the clock: fixed iterations (SensLI), every n iterations (GradMax), periodic epochs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from growcore.when.base import (
    _EPOCH_TOLERANCE,
    EpochPolicy,
    TrainState,
    WhenPolicy,
    blocks_added,
)


class AtIterations(WhenPolicy):
    """Grow at fixed iterations (SensLI: one insertion at iteration 450).

    Parameters
    ----------
    iterations : int or iterable of int
        The iterations (number of updates done so far) at which to grow.

    Unit: iterations (updates done so far).
    """

    unit: ClassVar[str] = "iterations"

    def __init__(self, iterations: int | Iterable[int]):
        its = [iterations] if isinstance(iterations, int) else list(iterations)
        if any(int(i) != i or i < 0 for i in its):
            raise ValueError(f"iterations must be non-negative integers, got {its}")
        self.iterations = sorted({int(i) for i in its})

    def __call__(self, state: TrainState) -> bool:
        return state.iteration in self.iterations

    def describe(self) -> dict:
        return {"policy": "AtIterations", "iterations": self.iterations}


class Every(WhenPolicy):
    """Grow every ``interval`` iterations from ``start`` on, at most ``count`` times.

    GradMax's teacher-student runs (section 4.1): one growth every 200 steps, 5 times.

    Unit: iterations (updates done so far).
    """

    unit: ClassVar[str] = "iterations"

    def __init__(self, interval: int, start: int | None = None, count: int | None = None):
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self.interval, self.start = interval, interval if start is None else start
        if self.start < 0 or (count is not None and count < 0):
            raise ValueError(f"start and count must be >= 0, got {self.start}, {count}")
        self.count = count

    def __call__(self, state: TrainState) -> bool:
        k, rest = divmod(state.iteration - self.start, self.interval)
        return state.iteration >= self.start and rest == 0 and (
            self.count is None or k < self.count)

    def describe(self) -> dict:
        return {"policy": "Every", "interval": self.interval, "start": self.start,
                "count": self.count}


class Periodic(EpochPolicy):
    """Grow block ``k`` at epoch ``k * interval`` (the slides' periodic baseline, with
    ``interval = I_max`` by default: the target is complete at ``E_T - E_F_min``). A shorter
    interval is Table 1's fast growth."""

    def __init__(self, iterations_per_epoch: int, n_blocks: int, total_epochs: float,
                 finetune_min: float, interval: float | None = None):
        super().__init__(iterations_per_epoch, n_blocks, total_epochs, finetune_min)
        self.interval = self.i_max if interval is None else interval
        if not 0 < self.interval <= self.i_max:
            raise ValueError(f"interval must lie in (0, I_max = {self.i_max}], got {interval}")

    def ready(self, iteration: int, history, state=None) -> bool:
        due = (blocks_added(history) + 1) * self.interval * self.iterations_per_epoch
        return iteration >= due - _EPOCH_TOLERANCE

    def describe(self) -> dict:
        return {**super().describe(), "interval": self.interval}
