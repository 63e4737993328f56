"""WHEN: policies that look at the training history and answer "grow now?".

A policy is called once per iteration, before that iteration's update, as
``policy(iteration, history) -> bool``. SensLI inserts at a fixed iteration (section 3);
the later chapters add periodic, convergent, FRAGrow and NAGN-window policies here.
"""

from __future__ import annotations

from collections.abc import Iterable


class WhenPolicy:
    """Base class of the when-policies."""

    def __call__(self, iteration: int, history) -> bool:
        raise NotImplementedError

    def describe(self) -> dict:
        """A JSON-able description for result records."""
        return {"policy": type(self).__name__}


class AtIterations(WhenPolicy):
    """Grow at fixed iterations (SensLI: one insertion at iteration 450).

    Parameters
    ----------
    iterations : int or iterable of int
        The iterations (number of updates done so far) at which to grow.
    """

    def __init__(self, iterations: int | Iterable[int]):
        its = [iterations] if isinstance(iterations, int) else list(iterations)
        if any(int(i) != i or i < 0 for i in its):
            raise ValueError(f"iterations must be non-negative integers, got {its}")
        self.iterations = sorted({int(i) for i in its})

    def __call__(self, iteration: int, history) -> bool:
        return iteration in self.iterations

    def describe(self) -> dict:
        return {"policy": "AtIterations", "iterations": self.iterations}


class Every(WhenPolicy):
    """Grow every ``interval`` iterations from ``start`` on, at most ``count`` times.

    GradMax's teacher-student runs (section 4.1): one growth every 200 steps, 5 times.
    """

    def __init__(self, interval: int, start: int | None = None, count: int | None = None):
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self.interval, self.start = interval, interval if start is None else start
        if self.start < 0 or (count is not None and count < 0):
            raise ValueError(f"start and count must be >= 0, got {self.start}, {count}")
        self.count = count

    def __call__(self, iteration: int, history) -> bool:
        k, rest = divmod(iteration - self.start, self.interval)
        return iteration >= self.start and rest == 0 and (self.count is None or k < self.count)

    def describe(self) -> dict:
        return {"policy": "Every", "interval": self.interval, "start": self.start,
                "count": self.count}
