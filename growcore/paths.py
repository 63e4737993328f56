"""Where data and results live: environment variables with defaults inside the repository."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

_MARKERS = ("_toc.yml", "pyproject.toml")


def repo_root(start: Path | None = None) -> Path:
    """The repository root: the first parent of ``start`` (default: cwd) holding ``_toc.yml``.

    Notebooks run with their own folder as working directory, so the root is searched
    upwards. Falls back to the package's parent folder, then to the working directory.
    """
    for base in (Path(start or Path.cwd()).resolve(), Path(__file__).resolve().parent):
        for folder in (base, *base.parents):
            if all((folder / marker).exists() for marker in _MARKERS):
                return folder
    return Path.cwd()


def data_dir() -> Path:
    """Data location: ``$GROWCORE_DATA``, default ``<repo>/data``."""
    return Path(os.environ.get("GROWCORE_DATA", repo_root() / "data"))


def results_dir() -> Path:
    """Results location: ``$GROWCORE_RESULTS``, default ``<repo>/results``."""
    return Path(os.environ.get("GROWCORE_RESULTS", repo_root() / "results"))


# What a data set's folder must hold, for the error message of a missing one
DATASET_LAYOUT = {"cifar100": "cifar-100-python/ (the python release)",
                  "imagenet": "train/<class>/* and val/<class>/*"}


def dataset_dir(dataset: str, root: str = "") -> Path:
    """The folder of a data set read from disk (CIFAR-100, ImageNet): ``root`` when given,
    else ``$GROWCORE_DATA/<dataset>``."""
    return Path(root) if root else data_dir() / dataset


def missing_dataset_message(dataset: str, root: str = "") -> str | None:
    """None when the folder of ``dataset`` exists, else a message saying what to set."""
    folder = dataset_dir(dataset, root)
    if folder.is_dir():
        return None
    return (f"no {dataset} folder at {folder}: set data_root to the folder holding "
            f"{DATASET_LAYOUT.get(dataset, 'the data set')}")


def write_atomically(path: str | Path, write: Callable, prefix: str = ".tmp-",
                     suffix: str = "") -> Path:
    """Write ``path`` through ``write(binary_file)``: to a temporary file in the same folder,
    flushed and fsynced, then renamed over ``path``. A crash never leaves a partial file and
    a failure leaves no temporary one (the error is raised)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_if_changed(path: str | Path, text: str) -> bool:
    """Write ``text`` to ``path`` atomically (:func:`write_atomically`) unless it holds exactly
    that already (its mtime then stays, so that Sphinx does not re-render it); return whether
    it was written. The file is an ordinary one (mode 0644)."""
    path = Path(path)
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return False
    data = text.encode()

    def write(f):
        os.fchmod(f.fileno(), 0o644)  # mkstemp makes it private
        f.write(data)

    write_atomically(path, write, prefix=f".{path.stem}.", suffix=path.suffix)
    return True
