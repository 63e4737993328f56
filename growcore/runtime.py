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


def best_seconds(fn, repeats: int = 1, trials: int = 3) -> float:
    """Best of ``trials`` wall times of ``repeats`` calls of ``fn`` (the minimum is least
    disturbed by a noisy machine), waiting for the GPU where there is one. For benchmarks:
    compare times taken in one run."""
    import time

    best = float("inf")
    for _ in range(trials):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def start_chapter(name: str, namespace: dict) -> tuple[dict, str, object]:
    """The one setup call of every chapter notebook, right after its parameters cell.

    Validates the notebook's parameters (``growcore.chapters.<name>.validate``: a bad value
    stops here, before any compute), chooses the device, sets threads and the global seed,
    and prints the resolved configuration, where the records go and the code version.

    Returns
    -------
    params : dict
        The validated parameters.
    device : str
        ``"cpu"`` or ``"cuda"``.
    out_dir : pathlib.Path
        ``$GROWCORE_RESULTS/<name>/<preset>``.
    """
    import importlib

    from growcore import results
    from growcore.params import describe
    from growcore.paths import results_dir

    params = importlib.import_module(f"growcore.chapters.{name}").validate(namespace)
    device = resolve_device(params["device"])
    setup(params["threads"])
    out_dir = results_dir() / name / params["preset"]
    print(describe({**params, "device": device}))
    print(f"results  -> {out_dir}")
    print(f"code     =  {results.code_version()}, torch {torch.__version__}")
    return params, device, out_dir
