"""The papers' own numbers, the tables the chapters print beside ours, as data files.

``<chapter>.yml`` holds, for each table or figure a chapter compares with, the values as
printed in the paper (with where they come from in a comment). :func:`load` reads one file.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml


@cache
def load(chapter: str) -> dict:
    """The paper numbers of ``chapter`` (``gradmax``, ``nagn``, ``fragrow``)."""
    path = resources.files(__package__) / f"{chapter}.yml"
    if not path.is_file():
        raise FileNotFoundError(f"no paper numbers for chapter {chapter!r} ({path})")
    return yaml.safe_load(path.read_text())
