"""The notebook runner and the book: checks before execution, and the HTML of a smoke build."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from growcore.claims import FINDINGS
from growcore.runner import REGISTRY_PAGE, REPO_ROOT, RunnerError, main, run_notebooks

REMOTE_RESOURCE = re.compile(
    r"<(?:script|link)\b[^>]*\b(?:src|href)=[\"'](?:https?:)?//", re.IGNORECASE
)
IMAGE_SOURCE = re.compile(r"<img\b[^>]*\bsrc=\"([^\"]+)\"", re.IGNORECASE)
MATH_ELEMENT = re.compile(r"class=\"math[\" ]")
MATHJAX_SCRIPT = "_static/mathjax/tex-chtml.js"
BROWSER_SECONDS = 120


def toc_files() -> list[str]:
    """Every page of the book, as the path of its source without suffix."""
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


def chapter_files() -> list[str]:
    """The pages produced by the runner from notebooks (executed notebooks)."""
    return [name for name in toc_files() if name.startswith("book/chapters/")
            and (REPO_ROOT / "notebooks" / f"{Path(name).name}.ipynb").is_file()]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("/usr/bin/chromium")


# -- the runner: everything is checked before anything runs ------------------------------


def write_notebook(path: Path, parameters: str, body: str) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    notebook.cells = [cell, nbformat.v4.new_code_cell(body)]
    nbformat.write(notebook, path)


@pytest.fixture
def project(tmp_path):
    """Two tiny notebooks; running either leaves a marker file, so execution is visible."""
    notebooks, presets = tmp_path / "notebooks", tmp_path / "presets"
    notebooks.mkdir()
    presets.mkdir()
    body = (
        "import os, sys\n"
        "open(f'ran-{preset}-{size}', 'w').write(sys.executable)\n"
        "print(os.environ.get('GROWCORE_RESULTS'))"
    )
    for name in ("alpha", "beta"):
        write_notebook(
            notebooks / f"{name}.ipynb", 'preset = "cpu"  # name\nsize = 3  # units', body
        )
    (presets / "alpha.yml").write_text("smoke: {size: 1}\ncpu: {}\ngpu: {size: 100}\n")
    (presets / "beta.yml").write_text("smoke: {size: 1, colour: red}\ncpu: {}\ngpu: {}\n")
    return tmp_path


def run(project: Path, preset: str, names=None):
    return run_notebooks(
        preset,
        names,
        out=project / "out",
        notebooks_dir=project / "notebooks",
        presets_dir=project / "presets",
        progress_bar=False,
    )


def nothing_ran(project: Path) -> bool:
    return not list((project / "notebooks").glob("ran-*")) and not (project / "out").exists()


def test_unknown_preset_names_it_and_the_valid_ones(project):
    with pytest.raises(RunnerError, match=r"'laptop'.*smoke, lab, cpu, gpu"):
        run(project, "laptop")
    assert nothing_ran(project)


def test_unknown_notebook_names_it_and_the_valid_ones(project):
    with pytest.raises(RunnerError, match=r"gamma.*valid: alpha, beta"):
        run(project, "smoke", ["alpha", "gamma"])
    assert nothing_ran(project)


def test_parameter_not_in_notebook_stops_before_any_execution(project):
    # alpha is valid and comes first: it must not run either.
    with pytest.raises(RunnerError, match=r"'beta'.*colour.*valid: preset, size"):
        run(project, "smoke")
    assert nothing_ran(project)


def test_command_line_reports_errors_without_traceback(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--preset", "laptop"])
    assert stop.value.code == 2
    assert "unknown preset 'laptop'" in capsys.readouterr().err


def test_runs_preset_in_venv_kernel_and_passes_environment(project, monkeypatch):
    monkeypatch.setenv("GROWCORE_RESULTS", str(project / "records"))
    times = run(project, "gpu", ["alpha"])
    assert set(times) == {"alpha"}
    marker = project / "notebooks" / "ran-gpu-100"  # cwd is the notebooks folder
    assert Path(marker.read_text()).resolve() == Path(sys.executable).resolve()
    executed = nbformat.read(project / "out" / "alpha.ipynb", as_version=4)
    assert executed.cells[-1].outputs[0]["text"].strip() == str(project / "records")
    # the executed notebook, the findings page and the registry's table (included by the
    # intro), no temporary file
    assert sorted(p.name for p in (project / "out").iterdir()) == [
        "alpha.ipynb", FINDINGS, REGISTRY_PAGE]


# -- the book, built from the smoke preset ------------------------------------------------


@pytest.mark.slow
def test_book_builds_with_warnings_as_errors(require_build):
    assert (require_build.html / "index.html").is_file()


@pytest.mark.slow
def test_every_chapter_is_an_executed_notebook(require_build):
    assert {Path(page).name for page in chapter_files()} <= set(require_build.times)


@pytest.mark.slow
@pytest.mark.parametrize("page", toc_files())
def test_page_exists(require_build, page):
    assert (require_build.html / f"{page}.html").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("page", chapter_files())
def test_chapter_embeds_figures(require_build, page):
    html = require_build.html / f"{page}.html"
    sources = IMAGE_SOURCE.findall(html.read_text())
    images = [s for s in sources if "_images/" in s]
    assert images, f"{page}: no figure"
    for source in images:
        assert (html.parent / source).resolve().is_file(), f"{page}: missing {source}"


@pytest.mark.slow
def test_findings_page_has_every_chapters_verdicts(require_build):
    text = (require_build.root / "book" / "chapters" / "findings.md").read_text()
    html = (require_build.html / "book" / "chapters" / "findings.html").read_text()
    for page in chapter_files():
        name = Path(page).name
        assert f"]({name}.ipynb)" in text, f"findings: no section for {name}"
        assert f'href="{name}.html' in html, f"findings: no link to {name}"
    assert re.search(r"In all: \d+ confirmed, \d+ contradicted, \d+ not resolved", text)


@pytest.mark.slow
def test_no_remote_scripts_or_styles(require_build):
    for html in require_build.html.rglob("*.html"):
        text = html.read_text()
        assert not REMOTE_RESOURCE.search(text), f"remote resource in {html}"
        assert "//cdn" not in text, f"CDN reference in {html}"


@pytest.mark.slow
def test_mathjax_is_bundled(require_build):
    assert (require_build.html / MATHJAX_SCRIPT).is_file()
    fonts = require_build.html / "_static/mathjax/output/chtml/fonts/woff-v2"
    assert list(fonts.glob("*.woff")), "MathJax fonts missing"
    for page in toc_files():
        text = (require_build.html / f"{page}.html").read_text()
        if MATH_ELEMENT.search(text):
            assert MATHJAX_SCRIPT in text, f"{page}: math without the local MathJax"


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="chromium is not installed")
@pytest.mark.parametrize("page", toc_files())
def test_math_is_typeset_in_a_browser(require_build, page, tmp_path):
    html = require_build.html / f"{page}.html"
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path}",
        "--virtual-time-budget=15000",
        "--dump-dom",
        html.as_uri(),
    ]
    browser = subprocess.run(
        command, check=True, capture_output=True, text=True, timeout=BROWSER_SECONDS
    )
    dom = browser.stdout
    expected = len(MATH_ELEMENT.findall(html.read_text()))
    assert dom.count("<mjx-container") >= expected, f"{page}: math not typeset"
    assert "<mjx-merror" not in dom, f"{page}: a TeX error"
    assert "$$" not in dom, f"{page}: raw $$ left"


def _plans(value):
    """Every plan description (a mapping with when, where, how and kind) inside a record."""
    if isinstance(value, dict):
        if {"when", "where", "how", "kind"} <= set(value):
            yield value
            return
        for item in value.values():
            yield from _plans(item)
    elif isinstance(value, list):
        for item in value:
            yield from _plans(item)


@pytest.mark.slow
def test_every_growing_run_can_be_rebuilt_from_its_record(smoke_book):
    """The chapters' smoke records hold the plan of every growing run; the registry turns
    each description back into a plan with the same description."""
    import json

    from growcore.registry import plan_from_description

    found = {}
    for path in smoke_book.results.rglob("*.json"):
        for plan in _plans(json.loads(path.read_text())):
            found.setdefault(path.parts[-3], []).append(plan)
    assert set(found) == {"sensli", "gradmax", "nagn", "fragrow", "compare"}, sorted(found)
    for plans in found.values():
        for plan in plans:
            rebuilt = plan_from_description(plan).describe()
            assert {role: rebuilt[role] for role in ("when", "where", "how")} == {
                role: _without(plan[role], "agreed") for role in ("when", "where", "how")}


def _without(description: dict, key: str) -> dict:
    return {k: v for k, v in description.items() if k != key}
