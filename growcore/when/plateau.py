"""WHEN the validation accuracy stalls: AutoGrow's convergent policy and NAGN's validation window.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from growcore.when.base import EpochPolicy, TrainState, WhenPolicy, _mean


class Convergent(EpochPolicy):
    """Grow when the validation accuracy has stopped improving (AutoGrow's convergent
    policy): at an epoch boundary, once ``patience`` epochs have passed since the last growth
    and the best validation error of the last ``patience`` evaluations is not lower than the
    best before them by more than ``min_delta`` (a fraction); and by the deadline rule."""

    def __init__(self, iterations_per_epoch: int, n_blocks: int, total_epochs: float,
                 finetune_min: float, patience: int = 3, min_delta: float = 0.0):
        super().__init__(iterations_per_epoch, n_blocks, total_epochs, finetune_min)
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience, self.min_delta = patience, min_delta

    def ready(self, iteration: int, history, state=None) -> bool:
        if self.overdue(iteration, history):
            return True
        if iteration % self.iterations_per_epoch:
            return False
        last = history.events[-1]["iteration"] if history.events else 0
        errors = [_mean(e["val_error"]) for e in history.evals
                  if e["iteration"] > last and "val_error" in e]
        if len(errors) <= self.patience:
            return False
        before, recent = min(errors[:-self.patience]), min(errors[-self.patience:])
        return recent >= before - self.min_delta

    def describe(self) -> dict:
        return {**super().describe(), "patience": self.patience, "min_delta": self.min_delta}


# ---------------------------------------------------------------- the when-policy
class ValidationWindow(WhenPolicy):
    """The NAGN growth trigger and its termination rule (section 4).

    With ``A`` the validation accuracy of each evaluation (``1 - val_error`` of
    ``history.evals``, averaged over the seeds of a batched model), a growth fires when the
    mean of the last ``w_acc`` evaluations, ``A_curr``, and the mean of the ``w_acc``
    before, ``A_prev``, satisfy ``(A_curr - A_prev) / A_prev < delta_acc``. Both windows
    must lie after the last growth. At every trigger after the first, if ``A_curr`` has
    gained less than ``delta_stop`` (relative) over its value at the previous trigger,
    growth is disabled for the rest of the run (and this trigger does not grow).

    The policy answers once per new evaluation; ``triggers`` and ``stopped_at`` record its
    decisions (iteration, ``A_curr``).

    Unit: the windows count evaluations (one every ``eval_every`` iterations of the loop).
    """

    unit: ClassVar[str] = "evaluations"

    def __init__(self, w_acc: int = 3, delta_acc: float = 3e-3, delta_stop: float = 5e-2,
                 max_growths: int | None = None):
        if w_acc < 1:
            raise ValueError(f"w_acc must be >= 1, got {w_acc}")
        self.w_acc, self.delta_acc, self.delta_stop = w_acc, delta_acc, delta_stop
        self.max_growths = max_growths
        self.triggers: list[tuple[int, float]] = []
        self.stopped_at: tuple[int, float] | None = None
        self._seen = 0
        self._since = 0  # index in history.evals of the first evaluation after the last growth

    def __call__(self, state: TrainState) -> bool:
        iteration, evals = state.iteration, state.history.evals
        if len(evals) == self._seen or self.stopped_at is not None:
            return False
        self._seen = len(evals)
        accuracy = [1 - float(torch.as_tensor(e["val_error"]).double().mean())
                    for e in evals[self._since:]]
        fire, current = window_trigger(accuracy, self.w_acc, self.delta_acc)
        if not fire:
            return False
        if self.triggers and not gained(self.triggers[-1][1], current, self.delta_stop):
            self.stopped_at = (iteration, current)
            return False
        if self.max_growths is not None and len(self.triggers) >= self.max_growths:
            return False
        self.triggers.append((iteration, current))
        self._since = len(evals)
        return True

    def report(self) -> dict:
        """The growth triggers and the stop, each ``(iteration, validation accuracy)``."""
        return {"triggers": [list(t) for t in self.triggers],
                "stopped_at": list(self.stopped_at) if self.stopped_at else None}

    def describe(self) -> dict:
        return {"policy": "ValidationWindow", "w_acc": self.w_acc, "delta_acc": self.delta_acc,
                "delta_stop": self.delta_stop, "max_growths": self.max_growths}


def window_trigger(accuracy: list[float], w_acc: int, delta_acc: float) -> tuple[bool, float]:
    """Whether the last two windows of ``w_acc`` accuracies gain less than ``delta_acc``.

    Returns ``(fire, A_curr)``; ``fire`` is False while fewer than ``2 w_acc`` values exist.
    From an accuracy of 0 the relative gain is infinite for any rise (no trigger) and there
    is no gain without one (a plateau: the trigger fires).
    """
    if len(accuracy) < 2 * w_acc:
        return False, float("nan")
    current = sum(accuracy[-w_acc:]) / w_acc
    previous = sum(accuracy[-2 * w_acc:-w_acc]) / w_acc
    if previous <= 0:
        return current <= previous, current
    return (current - previous) / previous < delta_acc, current


def gained(before: float, after: float, delta_stop: float) -> bool:
    """Whether the accuracy rose by at least ``delta_stop`` (relative) between triggers (from
    0, any rise is an infinite relative gain)."""
    if before <= 0:
        return after > before or delta_stop <= 0
    return (after - before) / before >= delta_stop
