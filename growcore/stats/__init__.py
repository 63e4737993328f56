"""The statistics that where-criteria and how-initialisers read.

:mod:`~growcore.stats.gradmax` (GradMax's gradient matrix), :mod:`~growcore.stats.nagn`
(NAGN's activation-gradient norms), :mod:`~growcore.stats.virtual` (SensLI's virtual-layer
gradients), :mod:`~growcore.stats.moments` (parameter moving averages).
"""

from growcore.stats.gradmax import (
    CHUNK,
    CONV_MATRICES,
    GradientMatrices,
    SiteData,
    TargetNorm,
    auxiliary_applies,
    auxiliary_kernel_matrix,
    collect,
    gradient_matrix,
    incoming_gradient_norm,
    incoming_norms,
    outgoing_norms,
    unit_inputs,
)
from growcore.stats.moments import MomentTracker
from growcore.stats.nagn import (
    NAGNObserver,
    default_layers,
    nagn_direct,
    nagn_from_sums,
    producer_layers,
)
from growcore.stats.probe import FULL_CHUNK, Probe, data_of, loss_of
from growcore.stats.virtual import NORMALISATIONS, extended_gradients, module_merits

__all__ = [
    "CHUNK",
    "CONV_MATRICES",
    "FULL_CHUNK",
    "NORMALISATIONS",
    "GradientMatrices",
    "MomentTracker",
    "NAGNObserver",
    "Probe",
    "SiteData",
    "TargetNorm",
    "auxiliary_applies",
    "auxiliary_kernel_matrix",
    "collect",
    "data_of",
    "default_layers",
    "extended_gradients",
    "gradient_matrix",
    "incoming_gradient_norm",
    "incoming_norms",
    "loss_of",
    "module_merits",
    "nagn_direct",
    "nagn_from_sums",
    "outgoing_norms",
    "producer_layers",
    "unit_inputs",
]
