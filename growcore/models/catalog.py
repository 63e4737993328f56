"""One small instance of every model family, for the composability matrix and its tests.

Each builder returns ``(model, input_kind)`` with ``input_kind`` ``"vector"`` (inputs
``[N, 4]``) or ``"image"`` (``[N, 3, 8, 8]``); every model has 3 outputs. The activations are
ReLU forms with ``f'(0) = 1`` where a model takes one (GradMax's requirement), so every
criterion and initialiser can be tried on every family.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import nn

from growcore.activations import ReLUWithSlopeAtZero
from growcore.models.mlp import MLP
from growcore.models.mobilenet import MobileNetV1, MobileNetV2
from growcore.models.resnet import ResNet, WideResNet
from growcore.models.seed_batched import SeedBatchedFNN, SeedBatchedResNet
from growcore.models.vgg import VGG

CLASSES = 3
RELU1 = functools.partial(ReLUWithSlopeAtZero, 1.0)
IMAGE = (3, 8, 8)

FAMILIES: dict[str, Callable[[], tuple[nn.Module, str]]] = {
    "seed-batched FNN": lambda: (SeedBatchedFNN.initial([4, 4], [0, 1], in_features=4,
                                                        out_features=CLASSES), "vector"),
    "seed-batched ResNet": lambda: (SeedBatchedResNet.initial(
        [4, 4, 4], [0, 1], in_features=4, out_features=CLASSES), "vector"),
    "MLP": lambda: (MLP([4, 6, 5, CLASSES], activation="relu1"), "vector"),
    "nn.Sequential": lambda: (nn.Sequential(nn.Linear(4, 6), RELU1(), nn.Linear(6, 5),
                                            RELU1(), nn.Linear(5, CLASSES)), "vector"),
    "VGG": lambda: (VGG([[4], [4, 6]], CLASSES, activation=RELU1, input_shape=IMAGE),
                    "image"),
    "ResNet": lambda: (ResNet((1, 1), (4, 6), CLASSES, activation=RELU1, input_shape=IMAGE),
                       "image"),
    "WRN": lambda: (WideResNet(10, 0.25, 0.5, CLASSES, activation=RELU1, input_shape=IMAGE),
                    "image"),
    "MobileNet-v1": lambda: (MobileNetV1(0.125, CLASSES, "cifar", activation=RELU1,
                                         input_shape=IMAGE), "image"),
    "MobileNetV2": lambda: (MobileNetV2((1, 1, 1, 1, 1), 0.25, CLASSES, input_shape=IMAGE),
                            "image"),
}


def example_options(name: str, model: nn.Module) -> dict:
    """Options that make a registered part concrete for ``model``: the ones a part needs that
    depend on the model (which site, which stage counts), plus small settings for speed."""
    from growcore.models.sites import growth_sites
    from growcore.models.staged import depths, is_staged

    sites = growth_sites(model)
    if name == "fixed_sites":
        return {"units": {next((s.name for s in sites if s.kind == "width"), "layers.0"): 2}}
    if name == "stage_order":
        seed = depths(model) if is_staged(model) else [1]
        return {"seed": seed, "target": [d + 1 for d in seed]}
    if name == "grow_to_widths":
        return {"factor": 1.5, "growths": 1}
    if name.startswith("block_"):  # function-preserving where the blocks are residual
        return {"preserve": any(s.kind == "depth" and s.style == "residual" for s in sites)}
    return {}
