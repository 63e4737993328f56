"""Residual networks: Wide ResNets (GradMax) and basic-block ResNets with staged depth (FRAGrow).

Both keep their blocks in ``model.stages[s][b]`` (``nn.Sequential`` of blocks), so a stage
grows deeper by inserting a block, and expose the inner conv of each block as a width site:
``conv1 -> norm -> activation -> conv2``. The residual stream (stem output, block outputs,
shortcuts) is not a width site: widening it would change every block of a stage together
with its shortcut, an operation none of the papers use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from growcore.images import CIFAR10_MEAN, CIFAR10_STD, Standardize
from growcore.models.flops import Measured
from growcore.models.sites import WidthSite, stage_sites

Activation = Callable[[], nn.Module]
FRAGROW_RESNET_WIDTHS = (64, 128, 256, 512)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def init_weights(model: nn.Module) -> None:
    """He (Kaiming) normal conv weights (fan-out), BatchNorm scale 1 and shift 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ImageModel(Measured, nn.Module):
    """Shared frame: standardise, stem, stages of blocks, global average pooling, classifier.

    Subclasses set ``self.stem``, ``self.stages`` (``nn.ModuleList`` of ``nn.Sequential``),
    ``self.final`` (module applied before pooling, or ``nn.Identity``) and ``self.classifier``.
    """

    def _finish(self, input_shape, channels_last: bool) -> None:
        self.input_shape = tuple(input_shape)
        init_weights(self)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.standardize(x))
        for stage in self.stages:
            x = stage(x)
        return self.classifier(self.final(x).mean((2, 3)))

    def block_names(self) -> list[str]:
        """``stages.{s}.{b}`` of every block, in forward order."""
        return [f"stages.{s}.{b}" for s, stage in enumerate(self.stages)
                for b in range(len(stage))]

    def growth_sites(self) -> list:
        """Width sites (:meth:`width_sites`), then one depth site at the end of every stage."""
        return [*self.width_sites(), *stage_sites(self)]


class WideBasicBlock(nn.Module):
    """Pre-activation block of Zagoruyko and Komodakis (2016).

    ``bn1 -> act -> conv1 -> bn2 -> act -> conv2`` plus the shortcut: the identity, or a 1x1
    conv of the pre-activated input when the shape changes. ``conv1`` has ``inner`` channels
    (GradMax's block width x0.25 shrinks only these).
    """

    growth_style = "residual"  # a new block with conv2 = 0 is the identity

    def __init__(self, in_channels: int, inner: int, out_channels: int, stride: int,
                 activation: Activation):
        super().__init__()
        self.bn1, self.act1 = nn.BatchNorm2d(in_channels), activation()
        self.conv1 = conv3x3(in_channels, inner, stride)
        self.bn2, self.act2 = nn.BatchNorm2d(inner), activation()
        self.conv2 = conv3x3(inner, out_channels)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act1(self.bn1(x))
        y = self.conv2(self.act2(self.bn2(self.conv1(h))))
        return y + (self.shortcut(h) if self.shortcut is not None else x)


class WideResNet(ImageModel):
    """WRN-depth-k for CIFAR (Zagoruyko and Komodakis 2016); GradMax grows WRN-28-1.

    Parameters
    ----------
    depth : int
        ``6 n + 4``: three stages of ``n`` blocks (28 gives 4 blocks per stage).
    width : int or float
        ``k``: stage widths 16 k, 32 k, 64 k; the stem has 16 channels.
    block_width : float
        Multiplier of the inner width of every block (GradMax starts from 0.25).
    activation : activation factory (GradMax: ``f'(0) = 1``, see :mod:`growcore.activations`).
    """

    def __init__(self, depth: int = 28, width: float = 1, block_width: float = 1.0,
                 num_classes: int = 10, activation: Activation = nn.ReLU,
                 input_shape=(3, 32, 32), mean=CIFAR10_MEAN, std=CIFAR10_STD,
                 channels_last: bool = False):
        super().__init__()
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f"WRN depth must be 6 n + 4 with n >= 1, got {depth}")
        n = (depth - 4) // 6
        self.standardize = Standardize(mean, std, channels_last)
        self.stem = conv3x3(input_shape[0], 16)
        self.stages = nn.ModuleList()
        channels = 16
        for s, base in enumerate((16, 32, 64)):
            out = round(base * width)
            inner = max(1, round(out * block_width))
            blocks = [WideBasicBlock(channels if b == 0 else out, inner, out,
                                     2 if s > 0 and b == 0 else 1, activation)
                      for b in range(n)]
            self.stages.append(nn.Sequential(*blocks))
            channels = out
        self.final = nn.Sequential(nn.BatchNorm2d(channels), activation())
        self.classifier = nn.Linear(channels, num_classes)
        self._finish(input_shape, channels_last)

    def width_sites(self) -> list[WidthSite]:
        """``conv1 -> bn2 -> conv2`` of every block."""
        return [WidthSite(f"{b}.conv1", f"{b}.bn2", f"{b}.conv2") for b in self.block_names()]


def wrn28(width: float = 1, block_width: float = 1.0, **kwargs) -> WideResNet:
    """WRN-28-``width``; GradMax: ``wrn28(1, block_width=0.25)`` grown to ``block_width=1``."""
    return WideResNet(28, width, block_width, **kwargs)


class BasicBlock(nn.Module):
    """He et al. (2016) basic block: ``conv1 -> bn1 -> act -> conv2 -> bn2``, + shortcut, act.

    The shortcut is the identity, or a 1x1 conv with BatchNorm (``downsample``) when the shape
    changes. With ``bn2``'s scale and shift at 0 an identity-shortcut block computes
    ``act(x)``, which is ``x`` after a ReLU: FRAGrow's function-preserving insertion option.
    """

    growth_style = "residual"

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 activation: Activation = nn.ReLU):
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1, self.act1 = nn.BatchNorm2d(out_channels), activation()
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2, self.act2 = nn.BatchNorm2d(out_channels), activation()
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(y + (self.downsample(x) if self.downsample is not None else x))


def stem(kind: str, in_channels: int, out_channels: int, activation: Activation,
         ) -> nn.Sequential:
    """CIFAR stem (3x3 conv, stride 1) or ImageNet stem (7x7 conv stride 2, 3x3 max-pool)."""
    if kind == "cifar":
        conv, pool = conv3x3(in_channels, out_channels), nn.Identity()
    elif kind == "imagenet":
        conv = nn.Conv2d(in_channels, out_channels, 7, stride=2, padding=3, bias=False)
        pool = nn.MaxPool2d(3, stride=2, padding=1)
    else:
        raise ValueError(f"stem must be 'cifar' or 'imagenet', got {kind!r}")
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), activation(), pool)


class ResNet(ImageModel):
    """Basic-block ResNet with ``blocks[s]`` blocks in stage ``s`` (FRAGrow's ResNet-a-b-c-d).

    ``resnet((2, 2, 2, 2), stem="imagenet", num_classes=1000)`` is ResNet-18. Stages after the
    first start with a stride-2 block. FRAGrow grows ResNet-2-2-2-2 into ResNet-8-8-8-8 by
    inserting blocks that copy the preceding block of the stage.
    """

    def __init__(self, blocks: Sequence[int] = (2, 2, 2, 2),
                 widths: Sequence[int] = FRAGROW_RESNET_WIDTHS, num_classes: int = 10,
                 stem_kind: str = "cifar", activation: Activation = nn.ReLU,
                 input_shape=(3, 32, 32), mean=CIFAR10_MEAN, std=CIFAR10_STD,
                 channels_last: bool = False):
        super().__init__()
        if len(blocks) != len(widths) or min(blocks) < 1:
            raise ValueError(f"need one block count >= 1 per stage width {list(widths)}, "
                             f"got {list(blocks)}")
        self.standardize = Standardize(mean, std, channels_last)
        self.stem = stem(stem_kind, input_shape[0], widths[0], activation)
        self.stages = nn.ModuleList()
        channels = widths[0]
        for s, (n, width) in enumerate(zip(blocks, widths)):
            self.stages.append(nn.Sequential(*[
                BasicBlock(channels if b == 0 else width, width, 2 if s > 0 and b == 0 else 1,
                           activation) for b in range(n)]))
            channels = width
        self.final = nn.Identity()
        self.classifier = nn.Linear(channels, num_classes)
        self._finish(input_shape, channels_last)

    def width_sites(self) -> list[WidthSite]:
        """``conv1 -> bn1 -> conv2`` of every block."""
        return [WidthSite(f"{b}.conv1", f"{b}.bn1", f"{b}.conv2") for b in self.block_names()]


def resnet(blocks: Sequence[int] = (2, 2, 2, 2), num_classes: int = 10, stem: str = "cifar",
           **kwargs) -> ResNet:
    """:class:`ResNet` with ``blocks`` per stage and the ``"cifar"`` or ``"imagenet"`` stem."""
    return ResNet(blocks, num_classes=num_classes, stem_kind=stem, **kwargs)
