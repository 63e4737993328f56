"""Sphinx extension for the PDF: exercises numbered within their chapter, as in the HTML book.

sphinx-jupyterbook-latex turns the table of contents' parts into LaTeX parts and sets
``numfig_secnum_depth = 2`` so that LaTeX numbers figures and equations per chapter (the part
takes one level there). Sphinx, though, also numbers the exercises (sphinx-exercise) from its
own section numbers, where the chapters are numbered 1, 2, ... across the parts
(``use_multitoc_numbering``): with depth 2 Exercise 2.1 of the HTML book would read
Exercise 2.7.1 (chapter 2, section 7) in the PDF. This extension lets Sphinx assign its numbers
with the configured depth (``numfig_secnum_depth`` of ``_config.yml``, 1) and gives the LaTeX
writer the depth sphinx-jupyterbook-latex chose. Nothing changes for the HTML builder.
"""

from __future__ import annotations

SPHINX_NUMBERING = 500  # priority of Sphinx's toctree collector, which assigns the numbers


def setup(app):
    state = {}

    def configured_depth(app, config) -> None:
        state["configured"] = config.numfig_secnum_depth

    def before_numbering(app, env):
        if app.builder.format == "latex" and "configured" in state:
            state["latex"] = app.config.numfig_secnum_depth  # as sphinx-jupyterbook-latex set it
            app.config.numfig_secnum_depth = state["configured"]
        return []

    def after_numbering(app, env):
        if "latex" in state:
            app.config.numfig_secnum_depth = state.pop("latex")
        return []

    app.connect("config-inited", configured_depth)
    app.connect("env-get-updated", before_numbering, priority=SPHINX_NUMBERING - 1)
    app.connect("env-get-updated", after_numbering, priority=SPHINX_NUMBERING + 1)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
