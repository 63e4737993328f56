"""Runtime setup shared by the notebooks: device choice with CPU fallback, threads."""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> str:
    """``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``; ``"cuda"`` without a GPU is an
    error rather than a silent fallback, so a gpu-preset run never pretends."""
    if name not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {name!r}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("parameter 'device' is 'cuda' but no CUDA device is available; "
                         "use 'auto' or 'cpu'")
    return name


def setup(threads: int, seed: int = 0) -> None:
    """Torch threads (1 is fastest for tiny nets on a CPU) and the global seed."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
