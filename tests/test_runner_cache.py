"""The runner's execution cache and its presets: a notebook is executed again only when its code
cells, its parameters or growcore's code changed; otherwise its prose is brought up to date."""

from __future__ import annotations

import json
import shutil

import nbformat
import pytest

from growcore import runner
from growcore.runner import (
    PACKAGE_DIR,
    PRESETS,
    RunnerError,
    code_digest,
    execution_key,
    execution_parts,
    plan,
    run_notebooks,
)

BODY = "open(f'ran-{preset}-{size}', 'w').write('x')\nprint(size * 2)"


def write_notebook(path, body=BODY, prose=("# Alpha", "Some prose.")):
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    parameters = nbformat.v4.new_code_cell('preset = "cpu"  # name\nsize = 3  # units')
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [nbformat.v4.new_markdown_cell(prose[0]), parameters,
                      *(nbformat.v4.new_markdown_cell(text) for text in prose[1:]),
                      nbformat.v4.new_code_cell(body)]
    nbformat.write(notebook, path)


@pytest.fixture
def project(tmp_path):
    """One notebook that leaves a marker file when it runs, its presets, and a package."""
    for folder in ("notebooks", "presets"):
        (tmp_path / folder).mkdir()
    write_notebook(tmp_path / "notebooks" / "alpha.ipynb")
    (tmp_path / "presets" / "alpha.yml").write_text(
        "smoke: {size: 1}\nlab: {size: 5}\ncpu: {}\ngpu: {size: 100}\n")
    package = tmp_path / "package"
    (package / "papers").mkdir(parents=True)
    (package / "core.py").write_text("X = 1\n")
    (package / "papers" / "alpha.yml").write_text("claim: 1\n")
    return tmp_path


def run(project, preset="smoke", **kw):
    return run_notebooks(preset, ["alpha"], out=project / "out",
                         notebooks_dir=project / "notebooks", presets_dir=project / "presets",
                         progress_bar=False, package_dir=project / "package", **kw)


def markers(project) -> list[str]:
    """The marker files of the runs so far, removed (so the next run starts with none)."""
    found = sorted(p.name for p in (project / "notebooks").glob("ran-*"))
    for name in found:
        (project / "notebooks" / name).unlink()
    return found


def executed(project):
    return nbformat.read(project / "out" / "alpha.ipynb", as_version=4)


def edit_source(project, change):
    path = project / "notebooks" / "alpha.ipynb"
    notebook = nbformat.read(path, as_version=4)
    change(notebook)
    nbformat.write(notebook, path)


def parts_of(project, preset="smoke", package=None):
    (job,) = plan(preset, ["alpha"], project / "notebooks", project / "presets")
    return execution_parts(job, package or runner.package_digest(project / "package"), "env")


# -- the key ------------------------------------------------------------------------------


def test_the_key_ignores_markdown_and_rendering_tags(project):
    before = parts_of(project)

    def prose(notebook):
        notebook.cells[0].source = "# Alpha, retitled"
        notebook.cells.insert(2, nbformat.v4.new_markdown_cell("A new paragraph."))
        notebook.cells[-1].metadata["tags"] = ["hide-input"]

    edit_source(project, prose)
    assert parts_of(project) == before
    assert execution_key(parts_of(project)) == execution_key(before)


@pytest.mark.parametrize("change", ["code", "execution tag", "preset section", "package .py",
                                    "package .yml"])
def test_the_key_changes_with_code_parameters_and_growcore(project, change):
    before = parts_of(project)
    preset, part = "smoke", None
    if change == "code":
        edit_source(project, lambda nb: setattr(nb.cells[-1], "source", BODY + "\n1 + 1"))
        part = "code"
    elif change == "execution tag":  # papermill lets this cell raise
        edit_source(project, lambda nb: nb.cells[-1].metadata.update(tags=["raises-exception"]))
        part = "code"
    elif change == "preset section":
        preset, part = "lab", "parameters"
    elif change == "package .py":
        (project / "package" / "core.py").write_text("X = 2\n")
        part = "growcore"
    else:
        (project / "package" / "papers" / "alpha.yml").write_text("claim: 2\n")
        part = "growcore"
    after = parts_of(project, preset)
    assert [k for k in before if before[k] != after[k]] == [part]
    assert execution_key(after) != execution_key(before)


def test_the_package_digest_covers_growcore_sources_and_paper_numbers():
    digest = runner.package_digest(PACKAGE_DIR)
    assert digest == runner.package_digest(PACKAGE_DIR)  # deterministic
    assert (PACKAGE_DIR / "papers").is_dir() and list((PACKAGE_DIR / "papers").glob("*.yml"))


def test_a_notebook_is_keyed_on_its_own_chapter_module_only(tmp_path):
    package = tmp_path / "package"
    (package / "chapters").mkdir(parents=True)
    for name, text in (("__init__.py", ""), ("alpha.py", "from growcore.chapters import beta\n"),
                       ("beta.py", "X = 1\n"), ("gamma.py", "Y = 2\n")):
        (package / "chapters" / name).write_text(text)
    (package / "core.py").write_text("Z = 3\n")
    write_notebook(tmp_path / "a.ipynb", body="from growcore.chapters import alpha as chapter")
    chapters = runner.chapter_modules(tmp_path / "a.ipynb", package)
    assert chapters == {"alpha", "beta"}  # beta through alpha's import

    def digest():
        return runner.package_digest(package, chapters)

    before = digest()
    (package / "chapters" / "gamma.py").write_text("Y = 4\n")  # another chapter's module
    assert digest() == before
    for changed in ("chapters/beta.py", "chapters/__init__.py", "core.py"):
        (package / changed).write_text("W = 5\n")
        assert digest() != before, changed
        before = digest()
    assert runner.package_digest(package) != runner.package_digest(package, set())


def test_code_digest_reads_only_code_cells(tmp_path):
    write_notebook(tmp_path / "a.ipynb", prose=("# A", "one"))
    write_notebook(tmp_path / "b.ipynb", prose=("# B", "two", "three"))
    write_notebook(tmp_path / "c.ipynb", body=BODY + "\n")
    assert code_digest(tmp_path / "a.ipynb") == code_digest(tmp_path / "b.ipynb")
    assert code_digest(tmp_path / "a.ipynb") != code_digest(tmp_path / "c.ipynb")


# -- the runner with the cache (each execution starts a kernel: a few seconds) -------------


def test_reuse_refresh_and_reexecution(project, capsys):
    """One sequence, to start few kernels: execute, reuse untouched, reuse with new prose,
    execute again on a code, parameter or growcore change, and on --force."""
    out = project / "out" / "alpha.ipynb"
    run(project)
    assert markers(project) == ["ran-smoke-1"]
    assert "alpha: executing (not executed yet)" in capsys.readouterr().out
    stored = executed(project).metadata["growcore"]
    assert stored["execution_key"] == execution_key(stored["execution_parts"])

    # nothing changed: not executed, the file not even rewritten
    stamp, text = out.stat().st_mtime_ns, out.read_text()
    run(project)
    assert markers(project) == []
    assert "alpha: reused (code, parameters and growcore unchanged; prose unchanged" in (
        capsys.readouterr().out)
    assert out.stat().st_mtime_ns == stamp and out.read_text() == text

    # prose only: not executed; the new markdown and tags arrive, the outputs stay
    def prose(notebook):
        notebook.cells[0].source = "# Alpha, retitled"
        notebook.cells.insert(3, nbformat.v4.new_markdown_cell("A new paragraph."))
        notebook.cells[-1].metadata["tags"] = ["hide-input"]

    edit_source(project, prose)
    run(project)
    assert markers(project) == []
    assert "prose updated" in capsys.readouterr().out
    notebook = executed(project)
    kinds = [(c.cell_type, c.source.splitlines()[0] if c.source else "") for c in notebook.cells]
    assert [k for k, _ in kinds] == ["markdown", "code", "code", "markdown", "markdown", "code"]
    assert "injected-parameters" in notebook.cells[2].metadata["tags"]
    assert "hide-cell" in notebook.cells[2].metadata["tags"]  # collapsed in the book
    assert str(project) not in json.dumps(notebook.metadata)  # no machine paths
    assert notebook.cells[0].source == "# Alpha, retitled"
    assert notebook.cells[4].source == "A new paragraph."
    assert notebook.cells[-1].metadata["tags"] == ["hide-input"]
    assert notebook.cells[-1].outputs[0]["text"].strip() == "2"  # size 1 (smoke), doubled
    assert "papermill" in notebook.metadata and "growcore" in notebook.metadata
    stamp = out.stat().st_mtime_ns
    run(project)  # and once current, it stays untouched
    assert markers(project) == [] and out.stat().st_mtime_ns == stamp
    capsys.readouterr()

    # a code cell, a parameter, growcore's code: executed again, saying why
    edit_source(project, lambda nb: setattr(nb.cells[-1], "source", BODY + "\nprint('more')"))
    run(project)
    assert markers(project) == ["ran-smoke-1"]
    assert "alpha: executing (its code cells changed)" in capsys.readouterr().out
    assert executed(project).cells[-1].outputs[-1]["text"].strip().endswith("more")
    assert executed(project).cells[0].source == "# Alpha, retitled"

    run(project, "lab")
    assert markers(project) == ["ran-lab-5"]
    assert "alpha: executing (its parameters changed)" in capsys.readouterr().out

    (project / "package" / "papers" / "alpha.yml").write_text("claim: 3\n")
    run(project, "lab")
    assert markers(project) == ["ran-lab-5"]
    assert "alpha: executing (growcore's code changed)" in capsys.readouterr().out

    run(project, "lab", force=True)
    assert markers(project) == ["ran-lab-5"]
    assert "alpha: executing (--force)" in capsys.readouterr().out


def test_an_executed_notebook_without_a_key_is_executed_again(project, capsys):
    (project / "out").mkdir()
    write_notebook(project / "out" / "alpha.ipynb")  # e.g. made before the cache existed
    run(project)
    assert markers(project) == ["ran-smoke-1"]
    assert "executing (the executed notebook has no execution key)" in capsys.readouterr().out


def test_force_on_the_command_line(monkeypatch):
    calls = []
    monkeypatch.setattr(runner, "run_notebooks", lambda *a, **kw: calls.append(kw))
    assert runner.main(["--preset", "smoke", "--nb", "sensli", "--force"]) == 0
    assert runner.main(["--preset", "smoke", "--nb", "sensli"]) == 0
    assert [kw["force"] for kw in calls] == [True, False]


# -- the lab preset ------------------------------------------------------------------------


def test_lab_is_a_preset():
    assert PRESETS == ("smoke", "lab", "cpu", "gpu")


def test_a_preset_file_without_a_lab_section_is_named(project):
    shutil.copy(project / "presets" / "alpha.yml", project / "presets" / "beta.yml")
    (project / "presets" / "alpha.yml").write_text("smoke: {size: 1}\ncpu: {}\ngpu: {}\n")
    write_notebook(project / "notebooks" / "beta.ipynb")
    path = project / "presets" / "alpha.yml"
    with pytest.raises(RunnerError) as error:
        plan("lab", None, project / "notebooks", project / "presets")
    message = str(error.value)
    assert message.startswith(f"{path} has no section 'lab'") and "smoke, cpu, gpu" in message
    assert [job.parameters for job in plan("lab", ["beta"], project / "notebooks",
                                           project / "presets")] == [{"size": 5, "preset": "lab"}]


def test_refresh_prose_keeps_outputs_and_the_injected_cell_in_place():
    from growcore.runner import refresh_prose

    def code(source, tags=(), outputs=()):
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = list(tags)
        cell.outputs = [nbformat.v4.new_output("stream", text=t) for t in outputs]
        return cell

    source = nbformat.v4.new_notebook()
    source.cells = [nbformat.v4.new_markdown_cell("new text"), code("x = 1")]
    executed = nbformat.v4.new_notebook()
    executed.cells = [code("preset = 'smoke'", ["injected-parameters"]),
                      nbformat.v4.new_markdown_cell("old text"), code("x = 1", outputs=["1\n"])]
    executed.cells[1]["id"] = source.cells[0]["id"]
    refreshed = refresh_prose(source, executed)  # no parameters cell: papermill's is on top
    assert [c.source for c in refreshed.cells] == ["preset = 'smoke'", "new text", "x = 1"]
    assert refreshed.cells[2].outputs[0]["text"] == "1\n"
    source.cells[1].source = "x = 2"  # the code differs: cannot be reused
    assert refresh_prose(source, executed) is None
