"""Staged networks: blocks kept in ``model.stages``, a ``ModuleList`` of ``Sequential`` stages.

The VGG, ResNet and MobileNet models of :mod:`growcore.models` are staged; depth growth
(:func:`growcore.ops.insert.add_blocks`) appends blocks to their stages.
"""

from __future__ import annotations

from torch import nn

STAGES = "stages"  # attribute of a staged model holding its stages


NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm)


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a ``DistributedDataParallel`` wrapper (``.module``), else itself."""
    return getattr(model, "module", model)


def stages(model: nn.Module) -> nn.ModuleList:
    """The stages of a staged model (``model.stages``)."""
    found = getattr(model, STAGES, None)
    if not isinstance(found, nn.ModuleList):
        raise TypeError(f"{type(model).__name__} has no ModuleList 'stages': depth growth "
                        "needs a staged model (growcore.models.vgg, resnet, mobilenet)")
    return found


def depths(model: nn.Module) -> list[int]:
    """Blocks per stage, e.g. ``[1, 1, 1, 1, 2]`` for VGG-1-1-1-1-2."""
    return [len(stage) for stage in stages(model)]


def _convs(block: nn.Module) -> list[nn.Conv2d]:
    return [m for m in block.modules() if isinstance(m, nn.Conv2d)]


def is_shape_preserving(block: nn.Module) -> bool:
    """True if the block maps its input shape to itself: no strided convolution, and its
    first convolution's inputs equal its last convolution's outputs. Only such a block can be
    copied to follow itself; a downsampling (or widening) block cannot."""
    convs = _convs(block)
    return (bool(convs) and convs[0].in_channels == convs[-1].out_channels
            and all(max(c.stride) == 1 for c in convs))
