"""WHEN by the overfitting risk level (FRAGrow, Wu et al.) and by the Lipschitz estimate (LipGrow).

See :mod:`growcore.when.formulas` for eqs. 2-4 and the unit of ORL (percentage points).
All policies read ``history.evals`` (one record per evaluation, with the mean
training-batch error since the previous evaluation and the validation error, per seed; seeds
are averaged) and ``history.events`` (the growth steps so far, each with ``blocks_added``).
Intervals are in epochs; an epoch is ``iterations_per_epoch`` updates.
"""

from __future__ import annotations

import torch
from torch import nn

from growcore.models.staged import NORMS, stages, unwrap
from growcore.when.base import _EPOCH_TOLERANCE, EpochPolicy, latest_errors
from growcore.when.formulas import growth_interval, overfitting_risk_level


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

    def ready(self, iteration: int, history, state=None) -> bool:
        if self.overdue(iteration, history):
            return True
        last = history.events[-1]["iteration"] if history.events else -1
        fresh = bool(history.evals) and history.evals[-1]["iteration"] > last
        return fresh and (self.epochs_since_growth(iteration, history)
                          >= self.interval(history) - _EPOCH_TOLERANCE)

    def report(self) -> dict:
        """Every evaluation's ``(iteration, ORL, interval)``."""
        return {"trace": [list(row) for row in self.trace]}

    def describe(self) -> dict:
        return {**super().describe(), "alpha": self.alpha, "orl_unit": "percentage points"}


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
    where-rule that doubles the blocks (:class:`growcore.where.StageOrder` with
    ``per_growth="double"``).

    The policy reads the current (grown) model from the training state. The estimate (the largest
    :func:`lipschitz_bound` over the blocks) is taken at every epoch boundary and kept in
    ``self.trace`` as ``(iteration, estimate)``.
    """

    def __init__(self, iterations_per_epoch: int, n_blocks: int, total_epochs: float,
                 finetune_min: float, tolerance: float = 1.1):
        super().__init__(iterations_per_epoch, n_blocks, total_epochs, finetune_min)
        if tolerance <= 1:
            raise ValueError(f"tolerance must be > 1, got {tolerance}")
        self.tolerance, self.base, self.trace = tolerance, None, []
        self._model = None  # the network the base estimate belongs to

    def ready(self, iteration: int, history, state=None) -> bool:
        if self.overdue(iteration, history):
            return True
        model = unwrap(state.model) if state is not None and state.model is not None else None
        if model is not self._model:  # a new network (the start, or a growth): a new base
            self._model, self.base = model, None
        if iteration % self.iterations_per_epoch or model is None:
            return False
        estimate = max(lipschitz_bound(block) for stage in stages(model) for block in stage)
        self.trace.append((iteration, estimate))
        if self.base is None:
            self.base = estimate
            return False
        if estimate / self.base > self.tolerance:
            self.tolerance = 1 + (self.tolerance - 1) / 2
            return True
        return False

    def report(self) -> dict:
        """Every epoch's ``(iteration, Lipschitz estimate)``."""
        return {"trace": [list(row) for row in self.trace]}

    def describe(self) -> dict:
        return {**super().describe(), "tolerance": self.tolerance}
