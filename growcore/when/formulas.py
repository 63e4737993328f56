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
"""

from __future__ import annotations

import math
from collections.abc import Sequence

PERCENT = 100.0  # ORL is in percentage points of accuracy


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
