"""Where data and results live: environment variables with defaults inside the repository."""

from __future__ import annotations

import os
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
