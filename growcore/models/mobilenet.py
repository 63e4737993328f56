"""MobileNets: v1 (Howard et al. 2017; GradMax's ImageNet net) and v2 (Sandler et al. 2018;
FRAGrow's MobileNetV2-a-b-c-d-e).

Width sites pass through depthwise convolutions (one filter per channel), which grow along
with the channels they filter: :attr:`growcore.models.sites.WidthSite.depthwise` names them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from growcore.images import IMAGENET_MEAN, IMAGENET_STD, Standardize
from growcore.models.resnet import Activation, ImageModel
from growcore.models.sites import WidthSite

# MobileNet-v1: (output channels, stride) of the 13 depthwise-separable blocks.
V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
             (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
# MobileNetV2 stages: (expansion t, channels c, blocks n, stride s) of Sandler et al. Table 2.
V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))
# FRAGrow's MobileNetV2-a-b-c-d-e sets the block counts of the five middle stages.
FRAGROW_V2_SEED = (1, 1, 1, 1, 1)
FRAGROW_V2_TARGET = (2, 3, 4, 3, 3)


def conv_bn_act(in_channels: int, out_channels: int, kernel: int, stride: int,
                activation: Activation | None, groups: int = 1) -> nn.Sequential:
    """``conv (no bias) -> BatchNorm -> activation`` as modules ``0``, ``1``, ``2``."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups,
                        bias=False), nn.BatchNorm2d(out_channels)]
    return nn.Sequential(*layers, *([activation()] if activation else []))


def _scale(channels: int, width: float, divisor: int) -> int:
    """``channels * width`` rounded to a multiple of ``divisor`` (never 10 % below it)."""
    scaled = max(divisor, int(channels * width + divisor / 2) // divisor * divisor)
    return scaled + divisor if scaled < 0.9 * channels * width else scaled


class SeparableBlock(nn.Module):
    """MobileNet-v1 block: depthwise 3x3 (``dw``) then pointwise 1x1 (``pw``), each + BN + act."""

    growth_style = "plain"

    def growth_activation(self) -> nn.Module:
        """The activation that ends the block (what a block inserted after it reads)."""
        return self.pw[2]

    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 activation: Activation):
        super().__init__()
        self.dw = conv_bn_act(in_channels, in_channels, 3, stride, activation, in_channels)
        self.pw = conv_bn_act(in_channels, out_channels, 1, 1, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class MobileNetV1(ImageModel):
    """MobileNet-v1 with a width multiplier (GradMax grows it on ImageNet from x0.25).

    ``stem="imagenet"``: 3x3 stride-2 stem (224 px input); ``"cifar"``: stride 1. GradMax's
    code puts the stride on the pointwise conv and does not scale the last block; here the
    layout is the paper's and every width is scaled.
    """

    def __init__(self, width: float = 1.0, num_classes: int = 1000, stem: str = "imagenet",
                 activation: Activation = nn.ReLU, input_shape=(3, 224, 224),
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, channels_last: bool = False):
        super().__init__()
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        self.standardize = Standardize(mean, std, channels_last)
        channels = max(1, round(32 * width))
        self.stem = conv_bn_act(input_shape[0], channels, 3, 2 if stem == "imagenet" else 1,
                                activation)
        blocks = []
        for out, stride in V1_BLOCKS:
            blocks.append(SeparableBlock(channels, max(1, round(out * width)), stride,
                                         activation))
            channels = blocks[-1].pw[0].out_channels
        self.stages = nn.ModuleList([nn.Sequential(*blocks)])
        self.final = nn.Identity()
        self.classifier = nn.Linear(channels, num_classes)
        self._finish(input_shape, channels_last)

    def width_sites(self) -> list[WidthSite]:
        """Every pointwise conv (and the stem) through the next block's depthwise conv.

        The last pointwise conv feeds the classifier. Every conv but the depthwise ones is a
        producer, so the whole network can be grown, as in GradMax.
        """
        producers = [("stem.0", "stem.1")] + [(f"{b}.pw.0", f"{b}.pw.1")
                                              for b in self.block_names()]
        sites = [WidthSite(conv, norm, f"{b}.pw.0", depthwise=((f"{b}.dw.0", f"{b}.dw.1"),))
                 for (conv, norm), b in zip(producers, self.block_names())]
        return [*sites, WidthSite(*producers[-1], "classifier")]


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion (``expand``, absent when t = 1), depthwise 3x3
    (``dw``), linear 1x1 projection (``project``, no activation); residual when shapes match.
    """

    growth_style = "residual"  # a block appended to a stage keeps its shape: residual

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int,
                 activation: Activation):
        super().__init__()
        hidden = in_channels * expansion
        self.expand = (conv_bn_act(in_channels, hidden, 1, 1, activation)
                       if expansion != 1 else None)
        self.dw = conv_bn_act(hidden, hidden, 3, stride, activation, hidden)
        self.project = conv_bn_act(hidden, out_channels, 1, 1, None)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x) if self.expand is not None else x))
        return x + y if self.residual else y


class MobileNetV2(ImageModel):
    """MobileNetV2 with ``blocks[s]`` blocks in the five middle stages (FRAGrow).

    ``blocks=(2, 3, 4, 3, 3)`` is the standard network (Sandler et al. Table 2); the first
    (16 channels) and last (320 channels) stages keep one block. ``stem="cifar"`` uses stride 1
    in the stem and in the 24-channel stage (32 px input ends at 4 x 4).
    The classifier has no dropout.
    """

    def __init__(self, blocks: Sequence[int] = FRAGROW_V2_TARGET, width: float = 1.0,
                 num_classes: int = 10, stem: str = "cifar",
                 activation: Activation = nn.ReLU6, input_shape=(3, 32, 32),
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, channels_last: bool = False):
        super().__init__()
        if len(blocks) != 5 or min(blocks) < 1 or stem not in ("imagenet", "cifar"):
            raise ValueError(f"need 5 block counts >= 1 and stem 'imagenet' or 'cifar', got "
                             f"{list(blocks)}, {stem!r}")
        self.standardize = Standardize(mean, std, channels_last)
        channels = _scale(32, width, 8)
        self.stem = conv_bn_act(input_shape[0], channels, 3, 2 if stem == "imagenet" else 1,
                                activation)
        counts = (1, *blocks, 1)
        self.stages = nn.ModuleList()
        for s, ((t, c, _, stride), n) in enumerate(zip(V2_STAGES, counts)):
            stride = 1 if stem == "cifar" and s == 1 else stride
            out = _scale(c, width, 8)
            self.stages.append(nn.Sequential(*[
                InvertedResidual(channels if b == 0 else out, out, stride if b == 0 else 1, t,
                                 activation) for b in range(n)]))
            channels = out
        last = _scale(1280, max(1.0, width), 8)
        self.final = conv_bn_act(channels, last, 1, 1, activation)
        self.classifier = nn.Linear(last, num_classes)
        self._finish(input_shape, channels_last)

    def width_sites(self) -> list[WidthSite]:
        """The stem (through the first block's depthwise conv to its projection) unless the
        first block is residual, the expansion of every block with t > 1 (through its
        depthwise conv to the projection) and the last 1x1 conv.

        Excluded: block outputs (projections), which form the residual stream of a stage, and
        so the stem when the first block adds its input to its output (width multipliers up to
        about 0.27, e.g. 0.25, give stem and first stage 8 channels each): a wider stem would
        break that sum.
        """
        sites = self._stem_sites()
        sites += [WidthSite(f"{b}.expand.0", f"{b}.expand.1", f"{b}.project.0",
                            depthwise=((f"{b}.dw.0", f"{b}.dw.1"),))
                  for b in self.block_names() if self.get_submodule(b).expand is not None]
        return [*sites, WidthSite("final.0", "final.1", "classifier")]

    def _stem_sites(self) -> list[WidthSite]:
        """The stem's width site, or none when the first block is residual.

        Returns
        -------
        list of WidthSite
            ``[]`` or the one site ``stem.0 -> first block's dw -> first block's project``
            (the first stage has expansion 1, so the block has no ``expand`` conv).
        """
        first = self.block_names()[0]
        if self.get_submodule(first).residual:
            return []
        return [WidthSite("stem.0", "stem.1", f"{first}.project.0",
                          depthwise=((f"{first}.dw.0", f"{first}.dw.1"),))]
