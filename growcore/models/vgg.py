"""Configurable VGG networks (Simonyan and Zisserman 2015) for growth in width and depth.

A VGG is a list of *stages*, each a list of 3x3 convolution widths (padding 1); each conv is
followed by BatchNorm (optional) and the activation, each stage by 2x2 max-pooling (or the
next stage's first conv has stride 2). A head pools globally (``"pool"``) or flattens
(``"flatten"``: GradMax's conv -> linear growth across a flatten, NAGN's dense classifier),
then optional hidden linear layers and a linear classifier.

Presets: VGG11 (GradMax, Evci et al. 2022, at width x0.25), the NAGN nets given as nested
lists such as ``[[8, 3, 8], [16, 4, 16], [32, 4, 32]]`` (Wang et al.), and FRAGrow's staged
VGG-a-b-c-d-e (Wu et al. 2024) with ``a ... e`` convs in stages of widths 64, 128, 256, 512,
512. The GradMax public code's VGG differs in three details, available as options or noted
here: it downsamples by stride (``downsample="stride"``), puts BatchNorm after the
activation, and ends with a strided conv to the classes instead of a linear layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise

import torch
from torch import nn

from growcore.images import CIFAR10_MEAN, CIFAR10_STD, Standardize
from growcore.models.flops import Measured
from growcore.models.resnet import init_weights
from growcore.models.sites import WidthSite, stage_sites

VGG11 = ((64,), (128,), (256, 256), (512, 512), (512, 512))
FRAGROW_VGG_WIDTHS = (64, 128, 256, 512, 512)
NAGN_EXAMPLE = ((8, 3, 8), (16, 4, 16), (32, 4, 32))  # NAGN Fig. 1


class ConvBlock(nn.Module):
    """``conv -> BatchNorm -> activation``; the unit a staged VGG adds when it grows deeper."""

    growth_style = "plain"  # no shortcut: an identity block needs an idempotent activation

    def growth_activation(self) -> nn.Module:
        """The activation that ends the block (what a block inserted after it reads)."""
        return self.act

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = True,
                 activation: Callable[[], nn.Module] = nn.ReLU, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1,
                              bias=not batch_norm)
        self.bn = nn.BatchNorm2d(out_channels) if batch_norm else None
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.act(self.bn(x) if self.bn is not None else x)


class VGG(Measured, nn.Module):
    """A VGG given by the conv widths of each stage.

    Parameters
    ----------
    config : sequence of sequences of int
        Conv widths per stage, e.g. :data:`VGG11`.
    num_classes : int
        Outputs of the classifier.
    batch_norm : bool
        BatchNorm after every conv (then convs have no bias).
    activation : callable returning an ``nn.Module``
        Activation factory, default ``nn.ReLU``; GradMax needs ``f'(0) = 1``
        (``functools.partial(growcore.activations.ReLUWithSlopeAtZero, 1.0)``).
    head : {"pool", "flatten"}
        Global average pooling, or flattening the last feature map.
    hidden : sequence of int
        Widths of hidden linear layers (each followed by the activation) before the classifier.
    downsample : {"maxpool", "stride"}
        2x2 max-pooling after each stage, or stride 2 in the first conv of stages 2, 3, ...
    input_shape : (C, H, W)
        Shape of one example (for the flatten head and the FLOP count).
    mean, std : per-channel statistics for :class:`growcore.images.Standardize`.
    channels_last : bool
        Convert the model and its activations to the channels-last memory format.

    Notes
    -----
    :attr:`config` and :attr:`hidden` are read from the modules, so they follow width and
    depth growth; :meth:`spec` gives the arguments that rebuild a grown network.
    """

    def __init__(self, config: Sequence[Sequence[int]], num_classes: int = 10,
                 batch_norm: bool = True, activation: Callable[[], nn.Module] = nn.ReLU,
                 head: str = "pool", hidden: Sequence[int] = (), downsample: str = "maxpool",
                 input_shape: tuple[int, int, int] = (3, 32, 32), mean=CIFAR10_MEAN,
                 std=CIFAR10_STD, channels_last: bool = False):
        super().__init__()
        if head not in ("pool", "flatten") or downsample not in ("maxpool", "stride"):
            raise ValueError(f"head must be 'pool' or 'flatten' and downsample 'maxpool' or "
                             f"'stride', got {head!r}, {downsample!r}")
        if not config or any(not stage for stage in config):
            raise ValueError(f"config needs at least one stage, each with a conv: {config}")
        self.head, self.downsample, self.input_shape = head, downsample, tuple(input_shape)
        self.standardize = Standardize(mean, std, channels_last)
        self.stages = nn.ModuleList()
        channels, size = input_shape[0], input_shape[1:]
        for s, widths in enumerate(config):
            blocks = []
            for i, width in enumerate(widths):
                stride = 2 if downsample == "stride" and s > 0 and i == 0 else 1
                blocks.append(ConvBlock(channels, width, batch_norm, activation, stride))
                channels = width
            self.stages.append(nn.Sequential(*blocks))
            if s > 0 or downsample == "maxpool":  # both halve, rounding down / up
                size = tuple(n // 2 if downsample == "maxpool" else (n + 1) // 2
                             for n in size)
        self.pool = nn.MaxPool2d(2) if downsample == "maxpool" else nn.Identity()
        self.spatial = size[0] * size[1] if head == "flatten" else 1
        features = channels * self.spatial
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(features, width), activation()]
            features = width
        layers.append(nn.Linear(features, num_classes))
        self.classifier = nn.Sequential(*layers)
        init_weights(self)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.standardize(x)
        for stage in self.stages:
            x = self.pool(stage(x))
        x = x.mean((2, 3)) if self.head == "pool" else x.flatten(1)
        return self.classifier(x)

    @property
    def config(self) -> list[list[int]]:
        """Conv widths per stage, read from the current modules (so it follows growth).

        Returns
        -------
        list of list of int
            ``out_channels`` of every :class:`ConvBlock` conv, stage by stage.
        """
        return [[block.conv.out_channels for block in stage] for stage in self.stages]

    @property
    def hidden(self) -> list[int]:
        """Widths of the hidden linear layers (every classifier ``Linear`` but the last).

        Returns
        -------
        list of int
            ``out_features`` of the hidden ``nn.Linear`` layers, in forward order.
        """
        return [m.out_features for m in self._linears()[:-1]]

    def spec(self) -> dict:
        """JSON-able constructor arguments that rebuild the current (possibly grown) network.

        The activation factory cannot be serialised: ``"activation"`` holds only its class
        name (a ``functools.partial``'s arguments are lost), and a rebuild takes the factory
        from the caller. The rebuilt model has parameters of the same shapes, so it can load
        this model's ``state_dict``::

            args = {k: v for k, v in model.spec().items() if k != "activation"}
            twin = VGG(**args, activation=activation)

        Returns
        -------
        dict
            ``config``, ``num_classes``, ``batch_norm``, ``head``, ``hidden``,
            ``downsample`` and ``input_shape`` (lists and plain scalars), and ``activation``.
        """
        first = self.stages[0][0]
        return {"config": self.config, "num_classes": self._linears()[-1].out_features,
                "batch_norm": first.bn is not None, "head": self.head, "hidden": self.hidden,
                "downsample": self.downsample, "input_shape": list(self.input_shape),
                "activation": type(first.act).__name__}

    def _linears(self) -> list[nn.Linear]:
        """The classifier's ``nn.Linear`` layers in forward order (the last one is the output)."""
        return [m for m in self.classifier if isinstance(m, nn.Linear)]

    def conv_names(self) -> list[tuple[str, str | None]]:
        """``(conv, norm)`` module names of every conv block, in forward order."""
        return [(f"stages.{s}.{i}.conv", f"stages.{s}.{i}.bn" if block.bn is not None else None)
                for s, stage in enumerate(self.stages) for i, block in enumerate(stage)]

    def growth_sites(self) -> list:
        """Width sites (:meth:`width_sites`), then one depth site at the end of every stage."""
        return [*self.width_sites(), *stage_sites(self)]

    def width_sites(self) -> list[WidthSite]:
        """Every conv (it feeds the next conv or the classifier) and every hidden linear.

        The last conv's consumer is the first linear layer, with ``spatial = H * W`` of the
        last feature map for the flatten head. The classifier's outputs never grow.
        """
        convs = self.conv_names()
        linears = [f"classifier.{i}" for i, m in enumerate(self.classifier)
                   if isinstance(m, nn.Linear)]
        sites = [WidthSite(conv, norm, nxt) for (conv, norm), (nxt, _) in pairwise(convs)]
        sites.append(WidthSite(*convs[-1], linears[0], self.spatial))
        sites += [WidthSite(a, None, b) for a, b in pairwise(linears)]
        return sites


def scaled(config: Sequence[Sequence[int]], width: float) -> list[list[int]]:
    """Every width multiplied by ``width`` and rounded (at least 1): GradMax's x0.25 nets."""
    return [[max(1, round(w * width)) for w in stage] for stage in config]


def vgg(config: Sequence[Sequence[int]], num_classes: int = 10, width: float = 1.0,
        batch_norm: bool = True, activation: Callable[[], nn.Module] = nn.ReLU,
        **kwargs) -> VGG:
    """A :class:`VGG` of the given stages with every width scaled by ``width``."""
    return VGG(scaled(config, width), num_classes, batch_norm, activation, **kwargs)


def vgg11(width: float = 1.0, num_classes: int = 10, **kwargs) -> VGG:
    """VGG11 (64 | 128 | 256 256 | 512 512 | 512 512); GradMax grows it from width 0.25."""
    return vgg(VGG11, num_classes, width, **kwargs)


def staged_config(blocks: Sequence[int], widths: Sequence[int] = FRAGROW_VGG_WIDTHS
                  ) -> list[list[int]]:
    """FRAGrow's VGG-a-b-c-d-e: ``blocks[s]`` convs of width ``widths[s]`` in stage ``s``."""
    if len(blocks) != len(widths) or min(blocks) < 1:
        raise ValueError(f"need one count >= 1 per stage width {list(widths)}, got {blocks}")
    return [[w] * n for n, w in zip(blocks, widths)]


def vgg_staged(blocks: Sequence[int], widths: Sequence[int] = FRAGROW_VGG_WIDTHS,
               num_classes: int = 10, **kwargs) -> VGG:
    """FRAGrow's staged VGG, e.g. ``vgg_staged((1, 1, 1, 1, 2))`` (seed) or ``(2, 2, 4, 4, 4)``.

    A stage grows deeper by inserting a :class:`ConvBlock` into ``model.stages[s]`` (its
    input and output widths equal the stage width, so any position inside a stage but the
    first is shape-compatible).
    """
    return VGG(staged_config(blocks, widths), num_classes, **kwargs)
