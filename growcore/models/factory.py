"""Every model of the study by name, for plain configuration (the driver, the chapters).

``build_named(name, input_shape, num_classes, seeds, **options)``: ``input_shape`` is one
example's shape (``(d,)`` for vectors, ``(C, H, W)`` for images); ``options`` are the model's
own constructor arguments (``activation`` by name: ``relu``, ``relu1`` (``f'(0) = 1``, for
GradMax), ``relu6``, ``tanh``; left out, the model's default). Names: ``fnn`` and
``resnet_seed_batched`` (SensLI's seed-batched nets, all ``seeds`` in one tensor program),
``resnet_seed_batched_authors`` (the ResNet of the SensLI authors' code, biases in and out),
``mlp``, ``vgg`` (a stage list ``config``), ``vgg11``, ``vgg_staged`` (FRAGrow's
VGG-a-b-c-d-e), ``resnet``, ``wrn``, ``mobilenet_v1``, ``mobilenet_v2``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import nn

from growcore.activations import ACTIVATIONS, ReLUWithSlopeAtZero
from growcore.models.mlp import MLP
from growcore.models.mobilenet import MobileNetV1, MobileNetV2
from growcore.models.resnet import WideResNet, resnet
from growcore.models.seed_batched import (
    SeedBatchedAuthorsResNet,
    SeedBatchedFNN,
    SeedBatchedResNet,
)
from growcore.models.vgg import VGG, vgg11, vgg_staged

MODULE_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "relu1": functools.partial(ReLUWithSlopeAtZero, 1.0),
    "relu6": nn.ReLU6, "tanh": nn.Tanh}


class ModelError(ValueError):
    """A model name or option that cannot be built."""


def _activation(options: dict) -> dict:
    """``activation`` by name -> the module factory the image models take."""
    if "activation" not in options:
        return options
    name = options["activation"]
    if name not in MODULE_ACTIVATIONS:
        raise ModelError(f"model activation must be one of {sorted(MODULE_ACTIVATIONS)}, "
                         f"got {name!r}")
    return {**options, "activation": MODULE_ACTIVATIONS[name]}


def _seed_batched(cls):
    def build(shape, classes, seeds, widths, activation=None, dtype=torch.float32):
        if activation is not None and activation not in ACTIVATIONS:
            raise ModelError(f"model activation must be one of {sorted(ACTIVATIONS)}, "
                             f"got {activation!r}")
        extra = {} if activation is None else {"activation": activation}
        return cls.initial(list(widths), list(seeds), in_features=shape[0],
                           out_features=classes, dtype=dtype, **extra)
    return build


def _image(build):
    def make(shape, classes, seeds, **options):
        return build(tuple(shape), classes, **_activation(options))
    return make


MODELS: dict[str, Callable] = {
    "fnn": _seed_batched(SeedBatchedFNN),
    "resnet_seed_batched": _seed_batched(SeedBatchedResNet),
    "resnet_seed_batched_authors": _seed_batched(SeedBatchedAuthorsResNet),
    "mlp": lambda shape, classes, seeds, hidden, **o: MLP([shape[0], *hidden, classes], **o),
    "vgg": _image(lambda shape, classes, config, **o: VGG(config, classes, input_shape=shape,
                                                            **o)),
    "vgg11": _image(lambda shape, classes, width=1.0, **o: vgg11(width, classes,
                                                                 input_shape=shape, **o)),
    "vgg_staged": _image(lambda shape, classes, blocks, **o: vgg_staged(
        blocks, num_classes=classes, input_shape=shape, **o)),
    "resnet": _image(lambda shape, classes, blocks=(2, 2, 2, 2), **o: resnet(
        blocks, classes, input_shape=shape, **o)),
    "wrn": _image(lambda shape, classes, depth=28, width=1, block_width=1.0, **o: WideResNet(
        depth, width, block_width, classes, input_shape=shape, **o)),
    "mobilenet_v1": _image(lambda shape, classes, width=1.0, stem="cifar", **o: MobileNetV1(
        width, classes, stem, input_shape=shape, **o)),
    "mobilenet_v2": _image(lambda shape, classes, blocks=(2, 3, 4, 3, 3), width=1.0,
                           stem="cifar", **o: MobileNetV2(blocks, width, classes, stem,
                                                          input_shape=shape, **o)),
}


def build_named(name: str, input_shape: Sequence[int], num_classes: int,
                seeds: Sequence[int] = (0,), **options) -> nn.Module:
    """The model ``name`` for inputs of ``input_shape`` and ``num_classes`` outputs."""
    if name not in MODELS:
        raise ModelError(f"model name must be one of {sorted(MODELS)}, got {name!r}")
    try:
        return MODELS[name](tuple(input_shape), num_classes, list(seeds), **options)
    except TypeError as error:
        raise ModelError(f"model {name!r}: {error}") from error
