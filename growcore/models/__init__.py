"""Models of the study. Small nets are *seed-batched*: S independent copies, one tensor program."""

from growcore.models.mobilenet import MobileNetV1, MobileNetV2
from growcore.models.resnet import resnet, wrn28
from growcore.models.seed_batched import SeedBatchedFNN, SeedBatchedNet, SeedBatchedResNet
from growcore.models.sites import WidthSite
from growcore.models.vgg import vgg11, vgg_staged

__all__ = ["MobileNetV1", "MobileNetV2", "SeedBatchedFNN", "SeedBatchedNet",
           "SeedBatchedResNet", "WidthSite", "build", "resnet", "vgg11", "vgg_staged", "wrn28"]


def build(kind: str, widths: list[int], seeds: list[int], **kwargs) -> SeedBatchedNet:
    """Build a seed-batched model by name: ``"fnn"`` (SensLI eq. 2.2) or ``"resnet"`` (eq. 2.3)."""
    kinds = {"fnn": SeedBatchedFNN, "resnet": SeedBatchedResNet}
    if kind not in kinds:
        raise ValueError(f"model kind must be one of {sorted(kinds)}, got {kind!r}")
    return kinds[kind].initial(widths, seeds, **kwargs)
