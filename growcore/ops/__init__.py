"""The change itself: function-preserving growth operators, and the optimiser state carried.

:mod:`~growcore.ops.widen` (new units at width sites), :mod:`~growcore.ops.insert` (layers
and blocks), :mod:`~growcore.ops.optim` (optimisers; old state kept, new entries zero).
Every operator returns a :class:`~growcore.ops.base.Growth`.
"""

from growcore.ops.base import Growth
from growcore.ops.insert import (
    BlockGrowth,
    LayerInsertion,
    add_blocks,
    identity_layer,
    insert_layers,
)
from growcore.ops.optim import OPTIMIZERS, GrowThenCosine, make_optimizer, rebuild_optimizer
from growcore.ops.widen import NewUnits, WidthGrowth, unit_sizes, widen, width

__all__ = [
    "OPTIMIZERS", "BlockGrowth", "GrowThenCosine", "Growth", "LayerInsertion", "NewUnits",
    "WidthGrowth", "add_blocks", "identity_layer", "insert_layers", "make_optimizer",
    "rebuild_optimizer", "unit_sizes", "widen", "width",
]
