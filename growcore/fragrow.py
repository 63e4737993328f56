"""WHEN to grow a staged network deeper: periodic, convergent, LipGrow and FRAGrow.

FRAGrow (Wu et al., the slides' eqs. 2-4) sets the interval between two growth steps from the
overfitting risk level ``ORL = train accuracy - validation accuracy``:

    I = I_max / (1 + exp(alpha - ORL)),     I_max = (E_T - E_F_min) / n,

with ``n`` the number of blocks to add, ``E_T`` the training epochs and ``E_F_min`` the
minimum fine-tuning epochs of the target network. **ORL is in percentage points.** With
``alpha = 4`` the logistic factor ``1 / (1 + exp(4 - ORL))`` then runs from 0.018 (no gap,
underfitting: grow almost at once) through 1/2 (a 4-point gap) to 0.98 (an 8-point gap,
overfitting: grow at the slowest allowed pace), the range of the generalisation gaps of
CIFAR and ImageNet networks. As a fraction (``ORL`` in [-1, 1]) the factor would stay
within [0.007, 0.05] for every possible accuracy: the policy would always grow at about 2 %
of ``I_max`` and could not tell overfitting from underfitting.

All policies follow the spine's ``policy(iteration, history) -> bool`` and read
``history.evals`` (one record per evaluation, with the mean training-batch error since the
previous evaluation and the validation error, per seed; seeds are averaged) and
``history.events`` (the growth steps so far, each with ``blocks_added``). Intervals are in
epochs; an epoch is ``iterations_per_epoch`` updates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from growcore.blocks import NORMS, stages, unwrap
from growcore.when import WhenPolicy

PERCENT = 100.0  # ORL is in percentage points of accuracy
_EPOCH_TOLERANCE = 1e-9  # epochs are ratios of integers: compare without rounding noise


def max_interval(total_epochs: float, finetune_min: float, n_blocks: int) -> float:
    """``I_max = (E_T - E_F_min) / n`` (FRAGrow eq. 4), in epochs."""
    if n_blocks < 1 or finetune_min >= total_epochs:
        raise ValueError(f"need n_blocks >= 1 and finetune_min < total_epochs, got "
                         f"{n_blocks}, {finetune_min}, {total_epochs}")
    return (total_epochs - finetune_min) / n_blocks


def growth_interval(orl: float, alpha: float, i_max: float) -> float:
    """``I = I_max / (1 + exp(alpha - ORL))`` (FRAGrow eq. 3), ORL in percentage points."""
    return i_max / (1.0 + math.exp(alpha - orl))


def overfitting_risk_level(train_error: float, val_error: float) -> float:
    """``ORL = train accuracy - validation accuracy`` (FRAGrow eq. 2) in percentage points,
    from errors given as fractions."""
    return PERCENT * (val_error - train_error)


def blocks_added(history) -> int:
    """Blocks added so far (a growth event adds ``blocks_added`` blocks, default 1)."""
    return sum(e.get("blocks_added", 1) for e in history.events)


def block_epochs(events: Sequence[dict], iterations_per_epoch: int,
                 total_epochs: float) -> list[float]:
    """Training epochs ``E_i`` of every added block: ``E_T`` minus its growth epoch."""
    return [total_epochs - e["iteration"] / iterations_per_epoch
            for e in events for _ in range(e.get("blocks_added", 1))]


def average_training_epochs(events: Sequence[dict], iterations_per_epoch: int,
                            total_epochs: float) -> float:
    """``E-bar = (1/n) sum_i E_i`` over the n added blocks (the slides' regularisation
    strength): small for slow growth (strong regularisation), close to ``E_T`` for fast."""
    epochs = block_epochs(events, iterations_per_epoch, total_epochs)
    return sum(epochs) / len(epochs) if epochs else float(total_epochs)


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
    """

    def __init__(self, iterations_per_epoch: int, n_blocks: int, total_epochs: float,
                 finetune_min: float):
        if iterations_per_epoch < 1:
            raise ValueError(f"iterations_per_epoch must be >= 1, got {iterations_per_epoch}")
        self.iterations_per_epoch, self.n_blocks = iterations_per_epoch, n_blocks
        self.total_epochs, self.finetune_min = total_epochs, finetune_min
        self.i_max = max_interval(total_epochs, finetune_min, n_blocks)

    def __call__(self, iteration: int, history) -> bool:
        if iteration == 0 or blocks_added(history) >= self.n_blocks:
            return False
        return self.ready(iteration, history)

    def ready(self, iteration: int, history) -> bool:
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

    def ready(self, iteration: int, history) -> bool:
        due = (blocks_added(history) + 1) * self.interval * self.iterations_per_epoch
        return iteration >= due - _EPOCH_TOLERANCE

    def describe(self) -> dict:
        return {**super().describe(), "interval": self.interval}


class FRAGrow(EpochPolicy):
    """FRAGrow: grow once ``I(ORL)`` epochs (eq. 3) have passed since the last growth.

    ORL comes from the latest evaluation (training-batch error since the previous evaluation
    and validation error), so evaluate once an epoch. As in Algorithm 1, which checks the
    criterion once per epoch, a growth waits for an evaluation made after the previous growth:
    at most one growth per evaluation, each with a fresh ORL. With ``I_max`` above one epoch
    the target is then complete by ``E_T - E_F_min``; below, the deadline rule of
    :meth:`EpochPolicy.overdue` completes it. Before the first evaluation with both errors the
    interval is ``I_max``. ``self.trace`` keeps ``(iteration, ORL, I)`` of every evaluation
    seen.

    Parameters
    ----------
    alpha : float
        Eq. (3); the paper uses 4 (ORL in percentage points).
    """

    def __init__(self, iterations_per_epoch: int, n_blocks: int, total_epochs: float,
                 finetune_min: float, alpha: float = 4.0):
        super().__init__(iterations_per_epoch, n_blocks, total_epochs, finetune_min)
        self.alpha, self.trace = alpha, []

    def interval(self, history) -> float:
        errors = latest_errors(history)
        if errors is None:
            return self.i_max
        orl = overfitting_risk_level(*errors)
        interval = growth_interval(orl, self.alpha, self.i_max)
        iteration = history.evals[-1]["iteration"]
        if not self.trace or self.trace[-1][0] != iteration:
            self.trace.append((iteration, orl, interval))
        return interval

    def ready(self, iteration: int, history) -> bool:
        if self.overdue(iteration, history):
            return True
        last = history.events[-1]["iteration"] if history.events else -1
        fresh = bool(history.evals) and history.evals[-1]["iteration"] > last
        return fresh and (self.epochs_since_growth(iteration, history)
                          >= self.interval(history) - _EPOCH_TOLERANCE)

    def describe(self) -> dict:
        return {**super().describe(), "alpha": self.alpha, "orl_unit": "percentage points"}


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

    def ready(self, iteration: int, history) -> bool:
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


def lipschitz_bound(block: nn.Module) -> float:
    """Upper bound of a block's Lipschitz constant: the product of the spectral norms of its
    convolution/linear weights (reshaped to ``[out, in * k * k]``) and of its BatchNorm
    scales ``max |gamma| / sqrt(running_var + eps)``. LipGrow's growth signal (our proxy: the
    slides do not give the estimator)."""
    bound = 1.0
    for module in block.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            weight = module.weight.detach().flatten(1).double()
            bound *= float(torch.linalg.matrix_norm(weight, ord=2))
        elif isinstance(module, NORMS) and module.weight is not None:
            scale = module.weight.detach().abs() / (module.running_var + module.eps).sqrt()
            bound *= float(scale.max())
    return bound


class LipGrow(EpochPolicy):
    """LipGrow (Dong et al. 2020): grow when the model's Lipschitz estimate has risen by the
    factor ``tolerance`` over its value just after the last growth; each growth halves the
    excess tolerance (``1 + (tolerance - 1) / 2``), as in the authors' code. Pair it with a
    where-rule that doubles the blocks (:class:`growcore.blocks.StageOrder` with
    ``per_growth="double"``).

    The policy reads the model, so pass it to ``train(..., observers=[policy])`` too: the
    loop attaches it to the current (grown) model. The estimate (the largest
    :func:`lipschitz_bound` over the blocks) is taken at every epoch boundary and kept in
    ``self.trace`` as ``(iteration, estimate)``.
    """

    def __init__(self, iterations_per_epoch: int, n_blocks: int, total_epochs: float,
                 finetune_min: float, tolerance: float = 1.1):
        super().__init__(iterations_per_epoch, n_blocks, total_epochs, finetune_min)
        if tolerance <= 1:
            raise ValueError(f"tolerance must be > 1, got {tolerance}")
        self.tolerance, self.model, self.base, self.trace = tolerance, None, None, []

    def attach(self, model: nn.Module) -> None:
        self.model, self.base = unwrap(model), None

    def detach(self) -> None:
        self.model = None

    def ready(self, iteration: int, history) -> bool:
        if self.overdue(iteration, history):
            return True
        if iteration % self.iterations_per_epoch or self.model is None:
            return False
        estimate = max(lipschitz_bound(block) for stage in stages(self.model) for block in stage)
        self.trace.append((iteration, estimate))
        if self.base is None:
            self.base = estimate
            return False
        if estimate / self.base > self.tolerance:
            self.tolerance = 1 + (self.tolerance - 1) / 2
            return True
        return False

    def describe(self) -> dict:
        return {**super().describe(), "tolerance": self.tolerance}


class GrowThenCosine:
    """Learning-rate multiplier of the slides: constant while the network grows, then cosine
    decay to zero over the remaining iterations (at least ``E_F_min`` epochs with the
    policies above). With ``n_blocks = 0`` (a fixed network) it is plain cosine decay.

    Use as ``train(..., lr_schedule=GrowThenCosine(iterations, n_blocks))``.
    """

    def __init__(self, total_iterations: int, n_blocks: int):
        self.total_iterations, self.n_blocks = total_iterations, n_blocks

    def start(self, history) -> int | None:
        """Iteration at which the target was complete (None while still growing)."""
        if self.n_blocks == 0:
            return 0
        added = 0
        for event in history.events:
            added += event.get("blocks_added", 1)
            if added >= self.n_blocks:
                return event["iteration"]
        return None

    def __call__(self, iteration: int, history) -> float:
        start = self.start(history)
        if start is None:
            return 1.0
        progress = (iteration - start) / max(1, self.total_iterations - start)
        return 0.5 * (1 + math.cos(math.pi * progress))
