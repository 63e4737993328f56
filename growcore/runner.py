"""Execute the book's notebooks with papermill under a named preset.

Every notebook ``notebooks/<name>.ipynb`` has a preset file ``presets/<name>.yml``: a
mapping with the sections ``smoke``, ``lab``, ``cpu`` and ``gpu`` (``lab`` where the
chapter has one), each a mapping of notebook parameter to value (an empty section means the
notebook's own defaults). The runner checks everything it was asked to run before executing
anything, then executes each notebook with papermill and writes it, atomically, to
``<out>/<name>.ipynb``.

Execution cache: the executed notebook stores, in ``metadata.growcore.execution_key``, a
hash of what its outputs depend on: the source notebook's code cells, the preset's
parameters, growcore's code (every ``*.py`` and ``*.yml`` file of the package, of the chapter
modules only those the notebook imports) and the versions of Python and the numerical
libraries. When the key of an existing
``<out>/<name>.ipynb`` matches, the notebook is not executed again: its markdown cells (and
the tags of its code cells) are brought up to date from the source notebook, and the file is
rewritten only if that changed something, so that Sphinx re-renders only the pages whose
prose changed. ``--force`` executes regardless.

A SIGINT or SIGTERM (Ctrl-C, ``timeout``, a job scheduler) stops the running kernel at once,
with every process it started, before the runner exits: nothing is computed or written after
the signal, and the partly executed notebook is kept as ``<out>/<name>.failed.ipynb``.

Command line::

    python -m growcore.runner --preset smoke|lab|cpu|gpu [--nb NAME ...] [--out DIR] [--force]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import hashlib
import json
import os
import platform
import re
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from growcore.paths import write_if_changed

PRESETS = ("smoke", "lab", "cpu", "gpu")
KERNEL_NAME = "python3"
PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
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
        present = ", ".join(str(s) for s in sections) or "none"
        raise RunnerError(
            f"{path} has no section {preset!r} (it has: {present}); the chapter's parameters "
            f"for the {preset} preset are to be added there"
        )
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


# -- the execution cache -------------------------------------------------------------------

CACHE_VERSION = 1  # bump when what the key covers changes
# Code-cell tags that change what papermill executes (the rest only change the rendering).
EXECUTION_TAGS = ("parameters", "raises-exception")
INJECTED_TAG = "injected-parameters"
# Libraries whose version can change a notebook's numbers (the package's dependencies).
KEY_LIBRARIES = ("torch", "torchvision", "numpy", "scipy", "pandas", "matplotlib", "seaborn",
                 "scikit-learn")
RUN_METADATA = ("papermill", "execution")  # cell metadata written by papermill / nbclient
# What each part of the key is, in the words the runner prints when it changed.
KEY_PARTS = {
    "code": "its code cells changed",
    "parameters": "its parameters changed",
    "growcore": "growcore's code changed",
    "environment": "the Python or library versions changed",
    "version": "the cache format changed",
}


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _tags(cell) -> list:
    return list(cell.get("metadata", {}).get("tags", []))


def code_digest(path: Path) -> str:
    """Hash of what papermill executes in the notebook at ``path``: every code cell's source
    and execution tags, in order, and the kernel's name (markdown is left out)."""
    import nbformat

    notebook = nbformat.read(str(path), as_version=4)
    cells = [
        (cell.source, sorted(t for t in _tags(cell) if t in EXECUTION_TAGS))
        for cell in notebook.cells
        if cell.cell_type == "code"
    ]
    kernel = notebook.metadata.get("kernelspec", {}).get("name")
    return _digest({"cells": cells, "kernel": kernel})


CHAPTER_IMPORT = re.compile(r"growcore\.chapters(?:\.|\s+import\s+)(\w+)")


def chapter_modules(notebook: Path, package_dir: Path = PACKAGE_DIR) -> set[str]:
    """The chapter modules (``growcore/chapters/<name>.py``) that the notebook's code imports,
    directly or through another chapter module; the other chapters' modules cannot change
    its outputs, so its execution key leaves them out."""
    import nbformat

    chapters_dir = Path(package_dir) / "chapters"
    cells = nbformat.read(str(notebook), as_version=4).cells
    pending = set(CHAPTER_IMPORT.findall("\n".join(c.source for c in cells
                                                    if c.cell_type == "code")))
    found: set[str] = set()
    while pending:
        name = pending.pop()
        path = chapters_dir / f"{name}.py"
        if name in found or not path.is_file():
            continue
        found.add(name)
        text = path.read_text()
        pending |= set(CHAPTER_IMPORT.findall(text))
        pending |= {m for line in re.findall(r"^from \.(?:\s+import\s+)?([\w, ]+)", text,
                                             re.MULTILINE) for m in re.split(r"[\s,]+", line)
                    if m}
    return found


def package_digest(package_dir: Path = PACKAGE_DIR, chapters: set[str] | None = None) -> str:
    """Hash of growcore's code: the relative path and bytes of every ``*.py`` and ``*.yml``
    file under ``package_dir`` (caches left out); with ``chapters``, of the chapter modules
    ``chapters/<name>.py`` only those named (the package's other code all the same)."""
    digest = hashlib.sha256()
    root = Path(package_dir)

    def covered(p: Path) -> bool:
        rel = p.relative_to(root).parts
        if chapters is None or len(rel) != 2 or rel[0] != "chapters" or rel[1] == "__init__.py":
            return True
        return Path(rel[1]).stem in chapters

    files = sorted(
        p for p in root.rglob("*")
        if p.suffix in (".py", ".yml", ".yaml") and p.is_file() and "__pycache__" not in p.parts
        and covered(p)
    )
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def environment_digest() -> str:
    """Hash of the Python version and the versions of :data:`KEY_LIBRARIES`."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in KEY_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return _digest(versions)


def execution_parts(job: Job, package: str, environment: str) -> dict[str, str]:
    """The parts of a job's execution key: one hash per thing its outputs depend on."""
    return {
        "code": code_digest(job.path),
        "parameters": _digest(job.parameters),
        "growcore": package,
        "environment": environment,
        "version": str(CACHE_VERSION),
    }


def execution_key(parts: dict[str, str]) -> str:
    """The execution key: one hash of all the parts."""
    return _digest(parts)


def cache_decision(target: Path, parts: dict[str, str]) -> tuple[bool, str]:
    """Whether the executed notebook ``target`` can be reused for a job with these key parts,
    and why (or why not), in words."""
    import nbformat

    if not target.is_file():
        return False, "not executed yet"
    try:
        stored = nbformat.read(str(target), as_version=4).metadata.get("growcore", {})
    except Exception as error:  # a damaged file is executed again, not trusted
        return False, f"the executed notebook cannot be read ({type(error).__name__})"
    if stored.get("execution_key") == execution_key(parts):
        return True, "code, parameters and growcore unchanged"
    if "execution_key" not in stored:
        return False, "the executed notebook has no execution key"
    previous = stored.get("execution_parts", {})
    changed = [why for part, why in KEY_PARTS.items() if previous.get(part) != parts[part]]
    return False, "; ".join(changed) or "its execution key changed"


def _merged_metadata(source: dict, run: dict) -> dict:
    """A cell's metadata: the source's (tags included), with papermill's run records kept."""
    merged = {key: copy.deepcopy(value) for key, value in run.items() if key in RUN_METADATA}
    merged.update(copy.deepcopy(dict(source)))
    merged.setdefault("tags", [])  # papermill writes an empty list
    return merged


def refresh_prose(source, executed):
    """The executed notebook ``executed`` with the prose of ``source``: its markdown and raw
    cells, its code cells' tags and metadata, and the notebook's metadata, while every code
    cell keeps its outputs (and the injected-parameters cell stays after the parameters
    cell). Markdown cells are matched by cell id, else one to one in order; an unmatched one
    is taken from the source as it is. Returns a new notebook, or None when the code cells
    of the two do not match (then the notebook must be executed)."""
    injected = [c for c in executed.cells if c.cell_type == "code" and INJECTED_TAG in _tags(c)]
    ran = [c for c in executed.cells if c.cell_type == "code" and INJECTED_TAG not in _tags(c)]
    code = [c for c in source.cells if c.cell_type == "code"]
    if len(ran) != len(code) or any(a.source != b.source for a, b in zip(ran, code)):
        return None
    prose = [c for c in source.cells if c.cell_type != "code"]
    old_prose = [c for c in executed.cells if c.cell_type != "code"]
    by_id = {c.get("id"): c for c in old_prose if c.get("id")}
    if all(c.get("id") in by_id for c in prose) or len(prose) != len(old_prose):
        matches = iter([by_id.get(c.get("id")) for c in prose])
    else:  # cells without ids (or new ids): one to one in order
        matches = iter(old_prose)
    notebook = copy.deepcopy(executed)
    # papermill injects its cell after the first cell tagged parameters, else at the top
    tagged = [i for i, c in enumerate(source.cells)
              if c.cell_type == "code" and "parameters" in _tags(c)]
    cells = [] if tagged else copy.deepcopy(injected)
    outputs = iter(ran)
    for index, cell in enumerate(source.cells):
        if cell.cell_type == "code":
            new = copy.deepcopy(next(outputs))
            new.metadata = _merged_metadata(cell.metadata, new.metadata)
            cells.append(new)
            if tagged and index == tagged[0]:
                cells.extend(copy.deepcopy(injected))
            continue
        old = next(matches)
        new = copy.deepcopy(cell)
        if old is not None and old.cell_type == cell.cell_type:
            new.metadata = _merged_metadata(cell.metadata, old.metadata)
        else:
            new.metadata = _merged_metadata(cell.metadata, {})
        cells.append(new)
    notebook.cells = cells
    for key, value in source.metadata.items():
        if key not in ("papermill", "growcore", "language_info"):
            notebook.metadata[key] = copy.deepcopy(value)
    return notebook


def reuse(job: Job, target: Path) -> bool | None:
    """Bring the executed notebook ``target`` up to date with the prose of ``job``'s source
    notebook; return whether the file changed, or None when it cannot be reused after all."""
    import nbformat

    source = nbformat.read(str(job.path), as_version=4)
    executed = nbformat.read(str(target), as_version=4)
    notebook = refresh_prose(source, executed)
    if notebook is None:
        return None
    text = nbformat.writes(notebook)
    return write_if_changed(target, text if text.endswith("\n") else text + "\n")  # as write()


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


def execute(job: Job, out: Path, progress_bar: bool = True, parts: dict | None = None) -> float:
    """Execute one job into ``out/<name>.ipynb`` via a temporary file; return wall seconds.
    With ``parts`` (see :func:`execution_parts`), the executed notebook stores its execution
    key in ``metadata.growcore``."""
    import nbformat
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
    notebook = nbformat.read(tmp, as_version=4)
    papermill_meta = notebook.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):  # no build machine's folders in a download
        if key in papermill_meta:
            papermill_meta[key] = f"notebooks/{job.name}.ipynb" if key == "input_path" \
                else f"{job.name}.ipynb"
    for cell in notebook.cells:  # papermill's parameter cell: collapsed in the book
        if INJECTED_TAG in _tags(cell) and "hide-cell" not in _tags(cell):
            cell.metadata.setdefault("tags", []).append("hide-cell")
    if parts is not None:
        notebook.metadata["growcore"] = {"execution_key": execution_key(parts),
                                         "execution_parts": parts,
                                         "preset": job.parameters.get("preset")}
    nbformat.write(notebook, tmp)
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
    """Write the registry's table (:func:`growcore.registry.markdown`) to ``out``, atomically,
    unless the page there holds it already (then its mtime stays)."""
    from growcore.registry import markdown  # imports torch: only when notebooks are run

    path = out / REGISTRY_PAGE
    write_if_changed(path, markdown())
    return path


def run_notebooks(
    preset: str,
    names: list[str] | None = None,
    out: Path | str = DEFAULT_OUT,
    notebooks_dir: Path | str = NOTEBOOKS_DIR,
    presets_dir: Path | str = PRESETS_DIR,
    progress_bar: bool = True,
    force: bool = False,
    package_dir: Path | str = PACKAGE_DIR,
) -> dict[str, float]:
    """Execute notebooks under ``preset``, or reuse the executed ones whose execution key
    matches (see the module's docstring); return the wall time in seconds per notebook
    (for a reused one, the time its prose update took).

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
    force
        Execute every notebook, whatever its execution key.
    package_dir
        The package whose code the execution key covers (growcore's by default).
    """
    jobs = plan(preset, names, Path(notebooks_dir), Path(presets_dir))
    out = output_folder(out)
    write_registry_page(out)
    print(f"preset {preset}: {len(jobs)} notebook(s), kernel {KERNEL_NAME} -> {kernel_python()}")
    environment = environment_digest()
    times = {}
    with kernels_stop_on_signals() as install_handlers:
        for job in jobs:
            start = time.perf_counter()
            target = out / f"{job.name}.ipynb"
            parts = execution_parts(job, package_digest(
                package_dir, chapter_modules(job.path, package_dir)), environment)
            reusable, why = (False, "--force") if force else cache_decision(target, parts)
            if reusable:
                changed = reuse(job, target)
                if changed is not None:
                    times[job.name] = time.perf_counter() - start
                    prose = "prose updated" if changed else "prose unchanged, file untouched"
                    print(f"{job.name}: reused ({why}; {prose}) -> {target}")
                    continue
                why = "the executed notebook's code cells differ from the source"
            print(f"{job.name}: executing ({why})")
            try:
                times[job.name] = execute(job, out, progress_bar, parts)
            finally:
                install_handlers()
            print(f"{job.name}: executed in {times[job.name]:.1f} s -> {target}")
    write_findings_page(out)
    return times


TOC = REPO_ROOT / "_toc.yml"


def book_order(toc: Path = TOC) -> list[str]:
    """The chapters' names in the book's order: the files ``book/chapters/<name>`` of
    ``_toc.yml`` (empty when there is none)."""
    if not Path(toc).is_file():
        return []
    text = yaml.safe_load(Path(toc).read_text()) or {}
    files = [c.get("file", "") for part in text.get("parts", []) for c in part.get("chapters", [])]
    return [f.rsplit("/", 1)[1] for f in files if f.startswith("book/chapters/")]


def write_findings_page(out: Path) -> Path:
    """Write the page "What the study found" (:func:`growcore.claims.write_findings`) from the
    executed notebooks in ``out``, in the book's order, unless it holds that already."""
    from growcore.claims import write_findings

    return write_findings(out, book_order() or None)


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
    parser.add_argument("--force", action="store_true",
                        help="execute every notebook even where its executed copy is current")
    args = parser.parse_args(argv)
    from papermill.exceptions import PapermillExecutionError

    try:
        run_notebooks(args.preset, args.nb, args.out, force=args.force)
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
