"""The change itself: function-preserving growth operators, and the optimiser state carried.

:mod:`~growcore.ops.widen` (new units at width sites), :mod:`~growcore.ops.insert` (layers
and blocks), :mod:`~growcore.ops.optim` (optimisers; old state kept, new entries zero).
Every operator returns a :class:`~growcore.ops.base.Growth`.
"""

from growcore.ops.base import Growth
from growcore.ops.insert import (
    LayerInsertion,
    ModuleInsertion,
    at_positions,
    identity_layer,
    identity_module,
    insert_layers,
    insert_modules,
)
from growcore.ops.optim import OPTIMIZERS, GrowThenCosine, make_optimizer, rebuild_optimizer
from growcore.ops.widen import NewUnits, WidthGrowth, unit_sizes, widen, widen_seeds, width

__all__ = [
    "OPTIMIZERS",
    "GrowThenCosine",
    "Growth",
    "LayerInsertion",
    "ModuleInsertion",
    "NewUnits",
    "WidthGrowth",
    "at_positions",
    "identity_layer",
    "identity_module",
    "insert_layers",
    "insert_modules",
    "make_optimizer",
    "rebuild_optimizer",
    "unit_sizes",
    "widen",
    "widen_seeds",
    "width",
]
