"""Runtime setup shared by the notebooks: their parameters as papermill gave them, device
choice with CPU fallback, threads."""

from __future__ import annotations

import ast
import importlib
import os
from pathlib import Path

import torch

from growcore.params import ParameterError, check, refuse_unknown

DEVICES = ("auto", "cpu", "cuda")
INJECTED_HEADER = "# Parameters"  # the first line of the cell papermill injects
PAPERMILL_OWN = "PAPERMILL_"  # names papermill injects itself (--inject-paths)


def resolve_device(name: str) -> str:
    """``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``; ``"cuda"`` without a GPU is an
    error rather than a silent fallback, so a gpu-preset run never pretends."""
    if name not in DEVICES:
        raise ParameterError(f"parameter 'device' must be one of {DEVICES}; got {name!r}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ParameterError("parameter 'device' is 'cuda' but no CUDA device is available; "
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


def injected_names(namespace: dict) -> list[str] | None:
    """The names assigned by the cell papermill injected (``-p name value``), read from the
    kernel's input history (IPython's ``In``): the last executed cell whose first line is
    papermill's ``# Parameters``. None where no such cell ran (a notebook run by hand)."""
    history = namespace.get("In") or namespace.get("_ih")
    if not isinstance(history, list):
        return None
    for source in reversed(history):
        lines = source.splitlines() if isinstance(source, str) else []
        if not lines or lines[0].strip() != INJECTED_HEADER:
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        return [target.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
                if isinstance(target, ast.Name)]
    return None


def notebook_values(name: str, namespace: dict) -> dict:
    """The parameters of chapter ``name`` as the notebook should run them, written back into
    ``namespace``; not yet validated.

    Where papermill injected values, a name the chapter does not take is refused, and the
    preset named by ``preset`` is applied under them: the parameters cell's defaults, updated
    by the section ``preset`` of ``presets/<name>.yml``, then by every injected value. So
    ``papermill ... -p preset smoke -p n_seeds 3`` runs the smoke preset with 3 seeds, as the
    runner would. Without an injected cell (a notebook run by hand) the cell's values are
    taken as they are.
    """
    from growcore.runner import RunnerError, load_preset

    specs = importlib.import_module(f"growcore.chapters.{name}").PARAMETERS
    values = {key: namespace[key] for key in specs if key in namespace}
    injected = injected_names(namespace)
    if injected is not None:
        refuse_unknown([n for n in injected if not n.startswith(PAPERMILL_OWN)], specs,
                       " injected by papermill (-p/-y)")
    if injected is not None and "preset" in specs:
        preset = check("preset", values.get("preset"), specs["preset"])
        try:
            section = load_preset(name, preset)
        except RunnerError as error:
            raise ParameterError(f"parameter 'preset': {error}") from error
        refuse_unknown(section, specs, f" in section {preset!r} of presets/{name}.yml")
        values.update({key: value for key, value in section.items() if key not in injected})
    namespace.update(values)
    return values


def shown_path(path: Path) -> str:
    """``path`` as a page may show it: relative to the repository when inside it, else under
    ``$GROWCORE_RESULTS`` by name (a page never shows the build machine's folders)."""
    from growcore.paths import repo_root, results_dir

    path = Path(path).resolve()
    for base, label in ((results_dir().resolve(), "$GROWCORE_RESULTS" if
                         "GROWCORE_RESULTS" in os.environ else "results"),
                        (repo_root().resolve(), ".")):
        if path.is_relative_to(base):
            return str(Path(label) / path.relative_to(base))
    return path.name


def start_chapter(name: str, namespace: dict) -> tuple[dict, str, object]:
    """The one setup call of every chapter notebook, right after its parameters cell.

    Resolves the notebook's parameters (:func:`notebook_values`: unknown injected names
    refused, the preset applied), validates them (``growcore.chapters.<name>.validate``: a
    bad value stops here, before any compute), chooses the device, sets threads and the
    global seed, and prints the resolved configuration, where the records go and the code
    version.

    Returns
    -------
    params : dict
        The validated parameters.
    device : str
        ``"cpu"`` or ``"cuda"``.
    out_dir : pathlib.Path
        ``$GROWCORE_RESULTS/<name>/<preset>``.
    """
    from growcore import results
    from growcore.params import describe
    from growcore.paths import results_dir

    values = notebook_values(name, namespace)
    params = importlib.import_module(f"growcore.chapters.{name}").validate(values)
    device = resolve_device(params["device"])
    setup(params["threads"])
    out_dir = results_dir() / name / params["preset"]
    print(describe({**params, "device": device}))
    print(f"results  -> {shown_path(out_dir)}")
    print(f"code     =  {results.code_version()}, torch {torch.__version__}")
    return params, device, out_dir
