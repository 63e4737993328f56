"""Figures, equations and exercises are numbered within their chapter, in the HTML book and in
the LaTeX source of the PDF, with the book's own _config.yml and _toc.yml (a two-chapter book
built in a temporary folder; LaTeX itself is not needed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from growcore.runner import REPO_ROOT

CHAPTER = """# Chapter {n}

Some text.

```{{figure}} dot.png
:name: fig-{n}-a

The first figure of chapter {n}.
```

```{{figure}} dot.png
:name: fig-{n}-b

The second figure of chapter {n}.
```

$$
y = {n} x
$$ (eq-{n})

## Exercises

```{{exercise}}
:label: ex-{n}

Exercise of chapter {n}: see {{numref}}`fig-{n}-b` and {{eq}}`eq-{n}`.
```
"""


def tiny_book(root: Path) -> None:
    """The book's configuration with two parts of one chapter each and a root page."""
    for name in ("_config.yml", "book/references.bib"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / name, root / name)
    shutil.copytree(REPO_ROOT / "book" / "latex", root / "book" / "latex",
                    ignore=shutil.ignore_patterns("__pycache__"))
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text())
    toc["parts"] = [{"caption": f"Part {n}", "chapters": [{"file": f"book/c{n}"}]}
                    for n in (1, 2)]
    (root / "_toc.yml").write_text(yaml.safe_dump(toc))
    (root / toc["root"]).with_suffix(".md").write_text("# The book\n\nAn introduction.\n")
    for n in (1, 2):
        (root / "book" / f"c{n}.md").write_text(CHAPTER.format(n=n))
    from PIL import Image

    Image.new("RGB", (4, 4), "white").save(root / "book" / "dot.png")


def build(root: Path, builder: str) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(root),
               "--builder", builder, "--warningiserror", "--nitpick", "--keep-going"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=root, check=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        pytest.fail(f"jupyter-book --builder {builder} failed:\n{tail}")
    return done


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("numbered")
    tiny_book(root)
    build(root, "html")
    build(root, "latex")
    return root


def test_html_numbers_figures_equations_and_exercises_per_chapter(book):
    for n in (1, 2):
        html = (book / "_build" / "html" / "book" / f"c{n}.html").read_text()
        text = re.sub(r"<[^>]+>", "", html)
        assert re.findall(r"Fig\. (\d+\.\d+)", text)[:2] == [f"{n}.1", f"{n}.2"]
        assert re.findall(r"Exercise (\d[\d.]*)", text)[:1] == [f"{n}.1"]  # not 1.2.1
        assert f"({n}.1)" in text  # the equation's number
        assert re.search(rf"see\s+Fig\. {n}\.2 and \({n}\.1\)", text), "references numbered so too"


def test_the_pdf_source_numbers_exercises_as_the_html_does(book):
    tex = next((book / "_build" / "latex").glob("*.tex")).read_text()
    assert re.findall(r"\{Exercise ([\d.]+)\}", tex) == ["1.1", "2.1"]
    assert r"\part{Part 1}" in tex and r"\chapter{Chapter 2}" in tex
    assert (book / "_build" / "latex" / "bbm.sty").is_file()  # the stand-in for the PDF class
