"""HOW new weights start: initialisers per kind of growth.

:mod:`~growcore.how.width` (new units: Zero, Random, KaimingNew, GradMax, GradMaxOpt,
FireflyOpt) and :mod:`~growcore.how.depth` (new layers and blocks: IdentityLayer,
BlockInit).
"""

from growcore.how.depth import INITS, BlockInit, IdentityLayer
from growcore.how.width import FireflyOpt, GradMax, GradMaxOpt, KaimingNew, Random, Zero

__all__ = [
    "INITS",
    "BlockInit",
    "FireflyOpt",
    "GradMax",
    "GradMaxOpt",
    "IdentityLayer",
    "KaimingNew",
    "Random",
    "Zero",
]
