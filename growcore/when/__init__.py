"""WHEN to grow: policies that read the training history and answer "grow now?".

Protocol: ``policy(state: TrainState) -> bool``, called once per iteration before that
iteration's update; the state holds the iteration, the history, the model and the epoch
length, and each policy's ``unit`` says what its intervals count. Families:
:mod:`~growcore.when.schedule` (fixed iterations, every n, periodic epochs),
:mod:`~growcore.when.plateau` (convergent, NAGN's validation window),
:mod:`~growcore.when.fragrow` (FRAGrow, LipGrow; formulas in :mod:`~growcore.when.formulas`).
"""

from growcore.when.base import EpochPolicy, TrainState, WhenPolicy, blocks_added, latest_errors
from growcore.when.formulas import (
    PERCENT,
    average_training_epochs,
    block_epochs,
    growth_interval,
    max_interval,
    overfitting_risk_level,
)
from growcore.when.fragrow import FRAGrow, LipGrow, lipschitz_bound
from growcore.when.plateau import Convergent, ValidationWindow, gained, window_trigger
from growcore.when.schedule import AtIterations, Every, Periodic

__all__ = [
    "PERCENT",
    "AtIterations",
    "Convergent",
    "EpochPolicy",
    "Every",
    "FRAGrow",
    "LipGrow",
    "Periodic",
    "TrainState",
    "ValidationWindow",
    "WhenPolicy",
    "average_training_epochs",
    "block_epochs",
    "blocks_added",
    "gained",
    "growth_interval",
    "latest_errors",
    "lipschitz_bound",
    "max_interval",
    "overfitting_risk_level",
    "window_trigger",
]
