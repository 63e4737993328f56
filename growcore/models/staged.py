"""Staged networks: blocks kept in ``model.stages``, a ``ModuleList`` of ``Sequential`` stages.

The VGG, ResNet, WRN and MobileNet models of :mod:`growcore.models` are staged; depth growth
appends a block at the end of a stage (:func:`growcore.ops.insert.insert_modules`). Every block
class is registered here with the two facts growth needs:

* how to build a fresh, shape-preserving block like a given one (He initialisation), for a
  stage whose last block downsamples and so cannot be copied;
* which module ends its residual branch (None for a plain block): zeroing it makes a new
  residual block the identity.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from growcore.models.mobilenet import InvertedResidual, SeparableBlock
from growcore.models.resnet import BasicBlock, WideBasicBlock
from growcore.models.vgg import ConvBlock

STAGES = "stages"  # attribute of a staged model holding its stages
NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm)


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a ``DistributedDataParallel`` wrapper (``.module``), else itself."""
    return getattr(model, "module", model)


def is_staged(model: nn.Module) -> bool:
    """Whether ``model`` keeps its blocks in a ``ModuleList`` named ``stages``."""
    return isinstance(getattr(unwrap(model), STAGES, None), nn.ModuleList)


def stages(model: nn.Module) -> nn.ModuleList:
    """The stages of a staged model (``model.stages``)."""
    found = getattr(model, STAGES, None)
    if not isinstance(found, nn.ModuleList):
        raise TypeError(f"{type(model).__name__} has no ModuleList 'stages': depth growth "
                        "by blocks needs a staged model (growcore.models.vgg, resnet, mobilenet)")
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


def output_channels(block: nn.Module) -> int:
    """Channels a block outputs: those of its last convolution."""
    return _convs(block)[-1].out_channels


@dataclass(frozen=True)
class BlockKind:
    """What depth growth needs to know of a block class.

    Attributes
    ----------
    fresh : callable ``template -> nn.Module``
        A new shape-preserving block like ``template`` (at its output width), freshly built.
    branch_end : callable ``block -> nn.Module``, or None
        The last module of the block's residual branch (None: a plain block, no shortcut).
    activation : callable ``block -> nn.Module``, or None
        The activation that ends a plain block (its output is what a plain insertion reads).
    """

    fresh: Callable[[nn.Module], nn.Module]
    branch_end: Callable[[nn.Module], nn.Module] | None = None
    activation: Callable[[nn.Module], nn.Module] | None = None

    @property
    def style(self) -> str:
        """``"residual"`` or ``"plain"``: the two kinds of depth site."""
        return "plain" if self.branch_end is None else "residual"


BLOCK_KINDS: dict[str, BlockKind] = {}


def register_block_kind(cls: type, kind: BlockKind) -> None:
    """Teach depth growth a block class (by class name)."""
    BLOCK_KINDS[cls.__name__] = kind


def block_kind(block: nn.Module) -> BlockKind:
    """The registered kind of a block, or a ``TypeError`` naming the known ones."""
    name = type(block).__name__
    if name not in BLOCK_KINDS:
        raise TypeError(f"no BlockKind registered for {name}; known: {sorted(BLOCK_KINDS)} "
                        "(growcore.models.staged.register_block_kind)")
    return BLOCK_KINDS[name]


def he_init(block: nn.Module) -> nn.Module:
    """He (Kaiming) normal initialisation, fan-out, of every convolution (He et al. 2015, the
    FRAGrow slides' Table 4); BatchNorm scale 1 and shift 0 with fresh running statistics."""
    for module in block.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, NORMS):
            module.reset_parameters()
    return block


def _like(block: nn.Module, template: nn.Module) -> nn.Module:
    weight = next(template.parameters())
    return he_init(block.to(weight.device, weight.dtype))


def _vgg_fresh(template: ConvBlock) -> nn.Module:
    width = template.conv.out_channels
    return _like(ConvBlock(width, width, template.bn is not None,
                           lambda: copy.deepcopy(template.act)), template)


def _resnet_fresh(template: BasicBlock) -> nn.Module:
    width = template.conv2.out_channels
    return _like(BasicBlock(width, width, 1, lambda: copy.deepcopy(template.act1)), template)


def _wide_fresh(template: WideBasicBlock) -> nn.Module:
    width, inner = template.conv2.out_channels, template.conv1.out_channels
    return _like(WideBasicBlock(width, inner, width, 1, lambda: copy.deepcopy(template.act1)),
                 template)


def _mobilenet_fresh(template: InvertedResidual) -> nn.Module:
    hidden = template.dw[0].in_channels
    source = template.expand[0].in_channels if template.expand is not None else hidden
    width = template.project[0].out_channels
    block = InvertedResidual(width, width, 1, hidden // source,
                             lambda: copy.deepcopy(template.dw[2]))
    return _like(block, template)


def _separable_fresh(template: SeparableBlock) -> nn.Module:
    width = template.pw[0].out_channels
    return _like(SeparableBlock(width, width, 1, lambda: copy.deepcopy(template.pw[2])), template)


def _register_known_kinds() -> None:
    register_block_kind(ConvBlock, BlockKind(_vgg_fresh, activation=lambda block: block.act))
    register_block_kind(SeparableBlock, BlockKind(_separable_fresh,
                                                  activation=lambda block: block.pw[2]))
    register_block_kind(BasicBlock, BlockKind(_resnet_fresh, lambda block: block.bn2))
    register_block_kind(WideBasicBlock, BlockKind(_wide_fresh, lambda block: block.conv2))
    register_block_kind(InvertedResidual,
                        BlockKind(_mobilenet_fresh, lambda block: block.project[1]))


_register_known_kinds()
