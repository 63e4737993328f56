"""WHERE to grow: criteria that score a model's growth sites and propose where to grow.

Families: :mod:`~growcore.where.sensli` (virtual identity layers, KKT merits),
:mod:`~growcore.where.nagn` (activation-gradient contrast, widths to add),
:mod:`~growcore.where.gradmax` (largest singular value), :mod:`~growcore.where.fixed`
(fixed sites, widths grown to a target, stage orders), :mod:`~growcore.where.baselines`
(gradient norm of the weights, random sites).
"""

from growcore.where.baselines import GradientNorm, RandomDepth, RandomWidth, weight_gradient_norms
from growcore.where.fixed import ORDERS, PER_GROWTH, FixedSites, GrowToWidths, StageOrder
from growcore.where.gradmax import LargestSingularValue
from growcore.where.nagn import (
    FALLBACK_FRACTION,
    NAGN,
    increments,
    monotone_by_kind,
    neighbour_average,
    non_decreasing,
    relative_contrast,
)
from growcore.where.sensli import SELECTIONS, SensLI, sensli_merits

__all__ = [
    "FALLBACK_FRACTION",
    "NAGN",
    "ORDERS",
    "PER_GROWTH",
    "SELECTIONS",
    "FixedSites",
    "GradientNorm",
    "GrowToWidths",
    "LargestSingularValue",
    "RandomDepth",
    "RandomWidth",
    "SensLI",
    "StageOrder",
    "increments",
    "monotone_by_kind",
    "neighbour_average",
    "non_decreasing",
    "relative_contrast",
    "sensli_merits",
    "weight_gradient_norms",
]
