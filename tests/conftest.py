"""Shared fixtures: the book built once per session from the notebooks in the smoke preset."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from growcore.runner import REPO_ROOT, run_notebooks

BOOK_SOURCES = ("_config.yml", "_toc.yml", "book/*.md", "book/references.bib",
                "book/latex/*.*")  # the PDF's local Sphinx extension and LaTeX files


@dataclass
class SmokeBook:
    """A book built in a temporary folder; nothing in the repository is touched."""

    root: Path  # copy of the book sources; executed notebooks in root/book/chapters
    results: Path  # GROWCORE_RESULTS of the notebook runs
    times: dict  # wall seconds per notebook
    build: subprocess.CompletedProcess

    @property
    def html(self) -> Path:
        return self.root / "_build" / "html"


def copy_book_sources(root: Path) -> None:
    for pattern in BOOK_SOURCES:
        for source in REPO_ROOT.glob(pattern):
            target = root / source.relative_to(REPO_ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def build_book(root: Path) -> subprocess.CompletedProcess:
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    command = [
        str(jupyter_book),
        "build",
        str(root),
        "--warningiserror",
        "--nitpick",
        "--keep-going",
    ]
    return subprocess.run(command, check=False, capture_output=True, text=True, cwd=root)


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory) -> SmokeBook:
    """Every notebook executed with the smoke preset, then the book built with -W -n."""
    root = tmp_path_factory.mktemp("book")
    results = tmp_path_factory.mktemp("results")
    copy_book_sources(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GROWCORE_RESULTS", str(results))
        times = run_notebooks("smoke", out=root / "book" / "chapters", progress_bar=False)
    return SmokeBook(root, results, times, build_book(root))


@pytest.fixture
def require_build(smoke_book) -> SmokeBook:
    """The smoke book, failing the test with Sphinx's output when the build failed."""
    if smoke_book.build.returncode != 0:
        tail = (smoke_book.build.stdout + smoke_book.build.stderr)[-4000:]
        pytest.fail(f"jupyter-book build failed:\n{tail}")
    return smoke_book


CELL_TIMEOUT = 60  # seconds: a bad value must stop a notebook long before any cell runs so long


@pytest.fixture
def stops_before_compute(tmp_path, monkeypatch):
    """``check(notebook, name, value, message)``: papermill with ``name=value`` must stop in
    the notebook's validation with a ParameterError whose message contains ``message``, before
    any record is written."""
    import papermill

    def check(notebook: str, name: str, value, message: str) -> None:
        path = REPO_ROOT / "notebooks" / f"{notebook}.ipynb"
        monkeypatch.setenv("GROWCORE_RESULTS", str(tmp_path / "results"))
        with pytest.raises(papermill.PapermillExecutionError) as error:
            papermill.execute_notebook(str(path), str(tmp_path / "out.ipynb"),
                                       parameters={name: value}, kernel_name="python3",
                                       cwd=str(path.parent), progress_bar=False,
                                       execution_timeout=CELL_TIMEOUT)
        assert message in str(error.value)
        assert "ParameterError" in error.value.ename
        assert not (tmp_path / "results").exists(), "nothing may be computed or written"

    return check
