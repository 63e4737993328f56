"""The frame of every when-policy, ``policy(state: TrainState) -> bool``, and the epoch frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from growcore.when.formulas import max_interval


@dataclass
class TrainState:
    """What a when-policy reads, once per iteration before that iteration's update.

    Attributes
    ----------
    iteration : int
        Updates done so far.
    history : growcore.train.History
        What the loop recorded: ``evals`` (evaluations, with training and validation
        errors), ``events`` (the growth steps so far), per-iteration losses.
    model : nn.Module, optional
        The network as it is now (LipGrow reads its weights).
    iterations_per_epoch : int, optional
        Updates per pass over the training data.
    """

    iteration: int
    history: object = None
    model: nn.Module | None = None
    iterations_per_epoch: int | None = None

    @property
    def epoch(self) -> float | None:
        """Epochs done so far (None if the loop does not know the epoch length)."""
        if self.iterations_per_epoch is None:
            return None
        return self.iteration / self.iterations_per_epoch


class WhenPolicy:
    """Base class of the when-policies: ``policy(state: TrainState) -> bool``.

    Each policy's docstring says which unit its parameters count in (iterations, epochs or
    evaluations).
    """

    unit: ClassVar[str] = "iterations"  # what the policy's intervals count

    def __call__(self, state: TrainState) -> bool:
        raise NotImplementedError

    def describe(self) -> dict:
        """A JSON-able description for result records."""
        return {"policy": type(self).__name__}

    def report(self) -> dict:
        """What the policy observed during the run (JSON-able), for the run's record."""
        return {}


_EPOCH_TOLERANCE = 1e-9  # epochs are ratios of integers: compare without rounding noise


def blocks_added(history) -> int:
    """Blocks added so far (a growth event adds ``blocks_added`` blocks, default 1)."""
    return sum(e.get("blocks_added", 1) for e in history.events)


def _mean(value) -> float:
    return float(torch.as_tensor(value, dtype=torch.float64).mean())


def latest_errors(history) -> tuple[float, float] | None:
    """(training error, validation error) of the latest evaluation that has both, seeds
    averaged; None before the first such evaluation."""
    for record in reversed(history.evals):
        if "train_error" in record and "val_error" in record:
            return _mean(record["train_error"]), _mean(record["val_error"])
    return None


class EpochPolicy(WhenPolicy):
    """Common frame of this chapter's policies (Algorithm 1 of the slides).

    Grows until ``n_blocks`` blocks are added; :meth:`overdue` is the deadline rule of the
    policies whose intervals are unbounded (convergent, LipGrow). Periodic growth needs no
    such rule, and FRAGrow only when ``I_max`` is below an epoch: their intervals never exceed
    ``I_max``, so the target is complete by epoch ``E_T - E_F_min`` and is fine-tuned for at
    least ``E_F_min`` epochs.

    Parameters
    ----------
    iterations_per_epoch : int
    n_blocks : int
        Blocks between the seed and the target network (``n`` of eq. 4).
    total_epochs, finetune_min : float
        ``E_T`` and ``E_F_min``.

    Unit: intervals and totals count in epochs (``iterations_per_epoch`` updates each).
    """

    unit: ClassVar[str] = "epochs"

    def __init__(self, iterations_per_epoch: int, n_blocks: int, total_epochs: float,
                 finetune_min: float):
        if iterations_per_epoch < 1:
            raise ValueError(f"iterations_per_epoch must be >= 1, got {iterations_per_epoch}")
        self.iterations_per_epoch, self.n_blocks = iterations_per_epoch, n_blocks
        self.total_epochs, self.finetune_min = total_epochs, finetune_min
        self.i_max = max_interval(total_epochs, finetune_min, n_blocks)

    def __call__(self, state: TrainState) -> bool:
        if state.iteration == 0 or blocks_added(state.history) >= self.n_blocks:
            return False
        return self.ready(state.iteration, state.history, state)

    def ready(self, iteration: int, history, state: TrainState) -> bool:
        raise NotImplementedError

    def overdue(self, iteration: int, history) -> bool:
        """Deadline rule: with ``r`` blocks still to add, grow once the epoch reaches
        ``E_T - E_F_min - (r - 1) * min(1, I_max)``, so the last block arrives by
        ``E_T - E_F_min`` (LipGrow's code forces growth the same way)."""
        remaining = self.n_blocks - blocks_added(history)
        spacing = min(1.0, self.i_max)
        due = self.total_epochs - self.finetune_min - (remaining - 1) * spacing
        return iteration >= due * self.iterations_per_epoch - _EPOCH_TOLERANCE

    def epochs_since_growth(self, iteration: int, history) -> float:
        last = history.events[-1]["iteration"] if history.events else 0
        return (iteration - last) / self.iterations_per_epoch

    def describe(self) -> dict:
        return {"policy": type(self).__name__, "n_blocks": self.n_blocks,
                "total_epochs": self.total_epochs, "finetune_min": self.finetune_min,
                "i_max": self.i_max, "iterations_per_epoch": self.iterations_per_epoch}
