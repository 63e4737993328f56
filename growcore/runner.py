"""Execute the book's notebooks with papermill under a named preset.

Every notebook ``notebooks/<name>.ipynb`` has a preset file ``presets/<name>.yml``: a
mapping with the sections ``smoke``, ``cpu`` and ``gpu``, each a mapping of notebook
parameter to value (an empty section means the notebook's own defaults). The runner
checks everything it was asked to run before executing anything, then executes each
notebook with papermill and writes it, atomically, to ``<out>/<name>.ipynb``.

A SIGINT or SIGTERM (Ctrl-C, ``timeout``, a job scheduler) stops the running kernel at once,
with every process it started, before the runner exits: nothing is computed or written after
the signal, and the partly executed notebook is kept as ``<out>/<name>.failed.ipynb``.

Command line::

    python -m growcore.runner --preset smoke|cpu|gpu [--nb NAME ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

PRESETS = ("smoke", "cpu", "gpu")
KERNEL_NAME = "python3"
REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PRESETS_DIR = REPO_ROOT / "presets"
DEFAULT_OUT = REPO_ROOT / "book" / "chapters"


class RunnerError(ValueError):
    """A preset, a notebook name or a parameter that cannot be run."""


@dataclass(frozen=True)
class Job:
    """One notebook to execute: where it is and the parameters papermill injects."""

    name: str
    path: Path
    parameters: dict


def available_notebooks(notebooks_dir: Path = NOTEBOOKS_DIR) -> list[str]:
    """Names (file stems) of the notebooks in ``notebooks_dir``, sorted."""
    return sorted(p.stem for p in Path(notebooks_dir).glob("*.ipynb"))


def load_preset(name: str, preset: str, presets_dir: Path = PRESETS_DIR) -> dict:
    """The parameters of notebook ``name`` under ``preset``, read from its preset file."""
    path = Path(presets_dir) / f"{name}.yml"
    if not path.is_file():
        raise RunnerError(f"notebook {name!r} has no preset file {path}")
    try:
        sections = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise RunnerError(yaml_error_line(path, error)) from error
    if not isinstance(sections, dict):
        raise RunnerError(f"{path} must be a mapping with sections {', '.join(PRESETS)}")
    unknown = sorted(set(sections) - set(PRESETS))
    if unknown:
        raise RunnerError(f"{path}: unknown section(s) {unknown}; valid: {', '.join(PRESETS)}")
    if preset not in sections:
        raise RunnerError(f"{path} has no section {preset!r}")
    parameters = sections[preset] or {}
    if not isinstance(parameters, dict):
        raise RunnerError(f"{path}: section {preset!r} must map parameter names to values")
    return dict(parameters)


def yaml_error_line(path: Path, error: yaml.YAMLError) -> str:
    """One line naming the file, line and column of a YAML error, and what is wrong."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    return f"{where}: YAML error: {problem}" + (f" ({context})" if context else "")


def notebook_parameters(name: str, preset: str | None = None, **overrides) -> dict:
    """The parameters of ``notebooks/<name>.ipynb`` as papermill would run them: the defaults
    of its ``parameters`` cell, updated by the preset's section (and ``preset`` set to its
    name) and then by ``overrides``. Not validated: pass the result to the chapter's
    ``validate``."""
    import ast

    import papermill

    declared = papermill.inspect_notebook(str(NOTEBOOKS_DIR / f"{name}.ipynb"))
    values = {key: ast.literal_eval(spec["default"]) for key, spec in declared.items()}
    if preset is not None:
        values.update(load_preset(name, preset), preset=preset)
    return {**values, **overrides}


def check_parameters(name: str, path: Path, parameters: dict) -> None:
    """Stop if a parameter is not declared in the notebook's ``parameters`` cell."""
    import papermill

    declared = papermill.inspect_notebook(str(path))
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        valid = ", ".join(sorted(declared)) or "(no parameters cell)"
        raise RunnerError(
            f"notebook {name!r}: parameter(s) {', '.join(unknown)} not in its parameters cell; "
            f"valid: {valid}"
        )


def plan(
    preset: str,
    names: list[str] | None = None,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    presets_dir: Path = PRESETS_DIR,
) -> list[Job]:
    """Resolve and check every job before any of them runs.

    Raises
    ------
    RunnerError
        For an unknown preset, an unknown notebook, a missing preset file or section, or a
        preset parameter that the notebook does not declare. The message names the culprit
        and lists what is valid.
    """
    if preset not in PRESETS:
        raise RunnerError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    available = available_notebooks(notebooks_dir)
    names = list(names) if names else available
    unknown = [n for n in names if n not in available]
    if unknown:
        raise RunnerError(
            f"unknown notebook(s) {', '.join(unknown)} in {notebooks_dir}; "
            f"valid: {', '.join(available) or '(none)'}"
        )
    jobs = []
    for name in names:
        path = Path(notebooks_dir) / f"{name}.ipynb"
        parameters = {**load_preset(name, preset, presets_dir), "preset": preset}
        check_parameters(name, path, parameters)
        jobs.append(Job(name, path, parameters))
    return jobs


def kernel_python() -> str:
    """The interpreter the ``python3`` kernel will start (a bare "python" means this one)."""
    from jupyter_client.kernelspec import KernelSpecManager

    executable = KernelSpecManager().get_kernel_spec(KERNEL_NAME).argv[0]
    return sys.executable if executable in ("python", "python3") else executable


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_KERNELS: set = set()  # kernel managers of the kernels this process has running


def _kernel_manager_class():
    """A kernel manager that registers its kernels, so that :func:`stop_kernels` can kill
    them from a signal handler (papermill's own cleanup waits for a busy kernel)."""
    from jupyter_client.manager import AsyncKernelManager

    class TrackedKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            await super().start_kernel(**kw)
            _KERNELS.add(self)
            # nbclient's own handlers (set on the loop while a notebook runs) shut a busy
            # kernel down gracefully, which lets it finish what it is doing: replace them
            loop = asyncio.get_running_loop()
            with contextlib.suppress(NotImplementedError, RuntimeError):
                for number in STOP_SIGNALS:
                    loop.add_signal_handler(number, _on_signal, number, None)

        async def shutdown_kernel(self, *args, **kw):
            _KERNELS.discard(self)
            await super().shutdown_kernel(*args, **kw)

    return TrackedKernelManager


def stop_kernels() -> list[int]:
    """Kill every kernel this process started, with its process group (the kernel leads
    its own session: the data loaders it forked go too); return their process ids."""
    stopped = []
    for manager in list(_KERNELS):
        pid = getattr(getattr(manager, "provisioner", None), "pid", None)
        if pid is None:
            continue
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:  # not a group leader, or gone
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError, ChildProcessError):
            os.waitpid(pid, 0)
        stopped.append(pid)
        _KERNELS.discard(manager)
    return stopped


class Stopped(KeyboardInterrupt):
    """The runner received SIGINT or SIGTERM; its kernels are already stopped."""


def _on_signal(signum, frame):
    """Kill the kernels, then stop the runner (a KeyboardInterrupt also leaves the event loop
    of a running notebook)."""
    stop_kernels()
    raise Stopped(f"stopped by {signal.Signals(signum).name}; the kernel was stopped")


@contextlib.contextmanager
def kernels_stop_on_signals():
    """While inside, SIGINT and SIGTERM kill the kernels first, then raise :class:`Stopped`
    (a KeyboardInterrupt); yields a function that sets the handlers again (nbclient resets
    them to the defaults after each notebook). Outside the main thread signals cannot be
    caught: no change."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}

    def install() -> None:
        for number in STOP_SIGNALS:
            signal.signal(number, _on_signal)

    install()
    try:
        yield install
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        stop_kernels()


def execute(job: Job, out: Path, progress_bar: bool = True) -> float:
    """Execute one job into ``out/<name>.ipynb`` via a temporary file; return wall seconds."""
    import papermill

    fd, tmp = tempfile.mkstemp(prefix=f".{job.name}.", suffix=".ipynb", dir=out)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; the result is an ordinary file
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(job.path),
            tmp,
            parameters=job.parameters,
            kernel_name=KERNEL_NAME,
            progress_bar=progress_bar,
            cwd=str(job.path.parent),
            kernel_manager_class=_kernel_manager_class(),
        )
    except BaseException:
        failed = out / f"{job.name}.failed.ipynb"
        os.replace(tmp, failed)
        print(f"{job.name}: failed; the partly executed notebook is {failed}", file=sys.stderr)
        raise
    os.replace(tmp, out / f"{job.name}.ipynb")
    return time.perf_counter() - start


def output_folder(out: Path | str) -> Path:
    """``out``, created if missing; RunnerError (one line) if it, or a parent, is no folder or
    cannot be made."""
    out = Path(out)
    blocking = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise RunnerError(f"--out {out}: {blocking} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunnerError(f"--out {out}: cannot create the folder ({error.strerror})") from error
    if not os.access(out, os.W_OK):
        raise RunnerError(f"--out {out}: the folder is not writable")
    return out


REGISTRY_PAGE = "registry.md"  # included by book/intro.md


def write_registry_page(out: Path) -> Path:
    """Write the registry's table (:func:`growcore.registry.markdown`) to ``out``, atomically."""
    from growcore.registry import markdown  # imports torch: only when notebooks are run

    fd, tmp = tempfile.mkstemp(prefix=".registry.", suffix=".md", dir=out)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; the page is an ordinary file
    with os.fdopen(fd, "w") as file:
        file.write(markdown())
    path = out / REGISTRY_PAGE
    os.replace(tmp, path)
    return path


def run_notebooks(
    preset: str,
    names: list[str] | None = None,
    out: Path | str = DEFAULT_OUT,
    notebooks_dir: Path | str = NOTEBOOKS_DIR,
    presets_dir: Path | str = PRESETS_DIR,
    progress_bar: bool = True,
) -> dict[str, float]:
    """Execute notebooks under ``preset``; return the wall time in seconds per notebook.

    Parameters
    ----------
    preset
        One of ``PRESETS``.
    names
        Notebook names (file stems); all notebooks in ``notebooks_dir`` when None.
    out
        Folder that receives ``<name>.ipynb`` (created if missing).
    notebooks_dir, presets_dir
        Where the notebooks and their preset files live (the repository's by default).
    progress_bar
        Show papermill's per-cell progress bar.
    """
    jobs = plan(preset, names, Path(notebooks_dir), Path(presets_dir))
    out = output_folder(out)
    write_registry_page(out)
    print(f"preset {preset}: {len(jobs)} notebook(s), kernel {KERNEL_NAME} -> {kernel_python()}")
    times = {}
    with kernels_stop_on_signals() as install_handlers:
        for job in jobs:
            try:
                times[job.name] = execute(job, out, progress_bar)
            finally:
                install_handlers()
            print(f"{job.name}: {times[job.name]:.1f} s -> {out / (job.name + '.ipynb')}")
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m growcore.runner",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", default="cpu", help=f"one of {', '.join(PRESETS)}")
    parser.add_argument(
        "--nb",
        nargs="+",
        action="extend",
        metavar="NAME",
        help="notebook name(s) without .ipynb (default: all)",
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output folder")
    args = parser.parse_args(argv)
    from papermill.exceptions import PapermillExecutionError

    try:
        run_notebooks(args.preset, args.nb, args.out)
    except RunnerError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    except PapermillExecutionError as error:
        parser.exit(1, f"{parser.prog}: a cell failed (cell {error.exec_count}): "
                       f"{error.ename}: {first_line(error.evalue)}\n")
    except Stopped as error:
        parser.exit(130, f"{parser.prog}: {error}\n")
    return 0


def first_line(text: str) -> str:
    """The first non-empty line of ``text``."""
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


if __name__ == "__main__":
    sys.exit(main())
