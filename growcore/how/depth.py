"""HOW for depth growth: the weights of an inserted layer or block.

* :class:`IdentityLayer`: SensLI's identity initialisations (section 2.3, eqs. 2.4 and 2.6)
  for seed-batched FNNs and ResNets (:func:`growcore.ops.insert.insert_layers`);
* :class:`BlockInit`: FRAGrow's new block after the last of a stage
  (:func:`growcore.ops.insert.add_blocks`): a copy of the preceding block, its moving average
  ("moment growth", Li et al. 2022) or He initialisation; ``preserve=True`` zeroes the last
  BatchNorm of a new residual branch so that the grown network computes the same function.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from growcore.models.mobilenet import InvertedResidual
from growcore.models.resnet import BasicBlock
from growcore.models.seed_batched import Layer, SeedBatchedNet
from growcore.models.staged import NORMS, is_shape_preserving
from growcore.models.vgg import ConvBlock
from growcore.ops.insert import identity_layer
from growcore.stats.moments import MomentTracker

INITS = ("copy", "moment", "kaiming")


@dataclass(frozen=True)
class BlockKind:
    """How to build a fresh shape-preserving block like ``template`` (He initialisation), and
    which BatchNorm ends its residual branch (None for a plain, non-residual block)."""

    fresh: Callable[[nn.Module], nn.Module]
    branch_norm: Callable[[nn.Module], nn.Module] | None = None


BLOCK_KINDS: dict[str, BlockKind] = {}


def register_block_kind(cls: type, kind: BlockKind) -> None:
    """Teach the growth operator a block class (by class name)."""
    BLOCK_KINDS[cls.__name__] = kind


def he_init(block: nn.Module) -> nn.Module:
    """He (Kaiming) normal initialisation, fan-out, of every convolution (He et al. 2015, the
    slides' Table 4); BatchNorm scale 1 and shift 0 with fresh running statistics."""
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


def _mobilenet_fresh(template: InvertedResidual) -> nn.Module:
    hidden = template.dw[0].in_channels
    source = template.expand[0].in_channels if template.expand is not None else hidden
    width = template.project[0].out_channels
    block = InvertedResidual(width, width, 1, hidden // source,
                             lambda: copy.deepcopy(template.dw[2]))
    return _like(block, template)


def _register_known_kinds() -> None:
    register_block_kind(ConvBlock, BlockKind(_vgg_fresh))
    register_block_kind(BasicBlock, BlockKind(_resnet_fresh, lambda block: block.bn2))
    register_block_kind(InvertedResidual,
                        BlockKind(_mobilenet_fresh, lambda block: block.project[1]))


_register_known_kinds()


def _kind(block: nn.Module) -> BlockKind:
    name = type(block).__name__
    if name not in BLOCK_KINDS:
        raise TypeError(f"no BlockKind registered for {name}; known: {sorted(BLOCK_KINDS)} "
                        "(growcore.blocks.register_block_kind)")
    return BLOCK_KINDS[name]


@dataclass(frozen=True)
class IdentityLayer:
    """SensLI's identity initialisation of an inserted layer (section 2.3), for
    :func:`growcore.ops.insert.insert_layers`: see :func:`growcore.ops.insert.identity_layer`.

    Parameters
    ----------
    resnet_W1_scale : float
        The factor c in ``W1 = c I`` for ResNet blocks (paper: 0.8).
    """

    resnet_W1_scale: float = 0.8

    def __call__(self, model: SeedBatchedNet, k: int, seed_index: int) -> Layer:
        return identity_layer(model, k, self.resnet_W1_scale)

    def describe(self) -> dict:
        return {"how": "IdentityLayer", "resnet_W1_scale": self.resnet_W1_scale}


@dataclass
class BlockInit:
    """HOW a new block starts.

    Parameters
    ----------
    mode : {"copy", "moment", "kaiming"}
        ``"copy"``: the preceding block's current weights (FRAGrow's default);
        ``"moment"``: the preceding block's moving average (needs ``tracker``);
        ``"kaiming"``: He initialisation. After a shape-changing (downsampling) block the
        first two fall back to He initialisation, as the slides prescribe.
    preserve : bool
        Zero the last BatchNorm (scale and shift) of the new residual branch: the block is the
        identity and the grown network computes the same function. Only for residual blocks.
    tracker : MomentTracker, optional
        Source of the moving averages for ``mode="moment"``.
    """

    mode: str = "copy"
    preserve: bool = False
    tracker: MomentTracker | None = None

    def __post_init__(self):
        if self.mode not in INITS:
            raise ValueError(f"mode must be one of {INITS}, got {self.mode!r}")
        if self.mode == "moment" and self.tracker is None:
            raise ValueError("mode 'moment' needs a MomentTracker (tracker=...)")

    def __call__(self, template: nn.Module, template_name: str) -> nn.Module:
        """A new block to follow ``template`` (named ``template_name`` in the model)."""
        kind = _kind(template)
        if self.mode == "kaiming" or not is_shape_preserving(template):
            block = kind.fresh(template)
        else:
            block = copy.deepcopy(template)
            if self.mode == "moment":
                self._load_average(block, template_name)
        if self.preserve:
            if kind.branch_norm is None:
                raise ValueError(f"preserve=True needs a residual block; {type(template).__name__}"
                                 " is not one (a plain conv block cannot be the identity)")
            norm = kind.branch_norm(block)
            with torch.no_grad():
                norm.weight.zero_()
                norm.bias.zero_()
        return block

    @torch.no_grad()
    def _load_average(self, block: nn.Module, template_name: str) -> None:
        for name, param in block.named_parameters():
            average = self.tracker.ema.get(f"{template_name}.{name}")
            if average is not None:
                param.copy_(average)
