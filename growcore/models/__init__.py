"""Models of the study. Small nets are *seed-batched*: S independent copies, one tensor program."""

from growcore.models.seed_batched import SeedBatchedFNN, SeedBatchedNet, SeedBatchedResNet

__all__ = ["SeedBatchedFNN", "SeedBatchedNet", "SeedBatchedResNet", "build"]


def build(kind: str, widths: list[int], seeds: list[int], **kwargs) -> SeedBatchedNet:
    """Build a seed-batched model by name: ``"fnn"`` (SensLI eq. 2.2) or ``"resnet"`` (eq. 2.3)."""
    kinds = {"fnn": SeedBatchedFNN, "resnet": SeedBatchedResNet}
    if kind not in kinds:
        raise ValueError(f"model kind must be one of {sorted(kinds)}, got {kind!r}")
    return kinds[kind].initial(widths, seeds, **kwargs)
