"""The papers' claims a chapter tests, each with the study's number and a verdict computed from
its interval, never typed.

A chapter builds one :class:`Claims` and adds each claim with its :class:`~growcore.uncertainty.
Estimate`; the verdict follows from where the interval lies against the claim's threshold:

- ``"confirmed"``: the whole interval is on the side the paper claims;
- ``"contradicted"``: the whole interval is on the other side;
- ``"not resolved"``: the interval contains the threshold (with the number of units that would
  resolve it if the mean held, when the interval is a t interval).

Each claim's sentence, verdict and estimate are glued (myst-nb's ``glue``) under its key, so
that the chapter's prose pastes them (``{glue:text}`key_verdict```) instead of typing them;
:meth:`Claims.show` displays the chapter's table and glues the whole list as JSON under
:data:`GLUE_KEY`, from which ``python -m growcore.claims DIR`` writes the page "What the study
found" (``DIR/findings.md``) out of the executed notebooks in DIR.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from growcore.uncertainty import Estimate

VERDICTS = ("confirmed", "contradicted", "not resolved")
EXPECTS = ("below", "above", "within")  # where the paper says the number lies
GLUE_KEY = "growcore_claims"
KEY = re.compile(r"[a-z][a-z0-9_]*")
FINDINGS = "findings.md"
REACH = 100  # a claim that would need more than REACH times the units is out of reach


@dataclass(frozen=True)
class Claim:
    """One claim of a paper and the study's test of it.

    Parameters
    ----------
    key : str
        Identifier in the chapter (lower case, digits, underscores): the glue keys are
        ``key``, ``key_verdict``, ``key_estimate``, ``key_n``.
    statement : str
        The paper's claim in words.
    source : str
        Where the paper makes it ("Fig. 4", "§3.2", "Table 5").
    measure : str
        What the study's number is (e.g. "paired difference of the final loss, LI - LI_other").
    estimate : Estimate
        The study's number with its interval.
    expect : str
        Where the paper says the number lies against ``threshold``: ``"below"``, ``"above"``,
        or ``"within"`` ``threshold ± margin``.
    threshold, margin : float
    scale : str
        The scale of the run (e.g. "cpu preset: 30 seeds, 1850 iterations, as the paper").
    """

    key: str
    statement: str
    source: str
    measure: str
    estimate: Estimate
    expect: str = "below"
    threshold: float = 0.0
    margin: float = 0.0
    scale: str = ""

    def __post_init__(self):
        if not isinstance(self.key, str) or not KEY.fullmatch(self.key):
            raise ValueError(f"key must be lower case letters, digits and underscores, "
                             f"starting with a letter; got {self.key!r}")
        if self.expect not in EXPECTS:
            raise ValueError(f"expect must be one of {EXPECTS}, got {self.expect!r}")
        if not isinstance(self.estimate, Estimate):
            raise TypeError(f"estimate must be a growcore.uncertainty.Estimate, got "
                            f"{type(self.estimate).__name__}")
        if self.expect == "within" and not self.margin > 0:
            raise ValueError(f"expect='within' needs a positive margin, got {self.margin}")
        for name in ("threshold", "margin"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")

    @property
    def verdict(self) -> str:
        e, t = self.estimate, self.threshold
        if math.isnan(e.low):
            return "not resolved"
        if self.expect == "within":
            if t - self.margin <= e.low and e.high <= t + self.margin:
                return "confirmed"
            if e.high < t - self.margin or e.low > t + self.margin:
                return "contradicted"
            return "not resolved"
        below, above = e.high < t, e.low > t
        if self.expect == "below":
            return "confirmed" if below else "contradicted" if above else "not resolved"
        return "confirmed" if above else "contradicted" if below else "not resolved"

    def resolving_n(self) -> int | None:
        """About how many units would resolve a claim that is not resolved, if the mean and
        the spread held (the t interval's half-width shrinks as 1/sqrt(n)); None when it is
        resolved, the mean sits on the threshold, or the interval is not a t interval."""
        e = self.estimate
        if (self.verdict != "not resolved" or e.method not in ("t", "paired t", "log t")
                or math.isnan(e.low) or self.expect == "within"):
            return None
        mean, half = (math.log(e.mean), (math.log(e.high) - math.log(e.low)) / 2) \
            if e.method == "log t" else (e.mean, e.half)
        gap = abs(mean - (math.log(self.threshold) if e.method == "log t" else
                          self.threshold))
        if gap == 0 or half == 0:
            return None
        return max(e.n + 1, math.ceil(round(e.n * (half / gap) ** 2, 6)))

    def verdict_words(self) -> str:
        """The verdict, with the scale that would resolve it where it is not resolved."""
        if self.verdict != "not resolved":
            return self.verdict
        n = self.resolving_n()
        more = ""
        if n and n > REACH * self.estimate.n:
            more = (f"; the mean is so close to the threshold that more than {REACH} times "
                    f"as many would be needed")
        elif n:
            more = f"; about {n} would resolve it if the mean held"
        return f"not resolved at this scale (n = {self.estimate.n}{more})"

    def sentence(self, spec: str = ".3g") -> str:
        """``measure: estimate (source: statement) - verdict.``"""
        return (f"{self.measure}: {self.estimate.format(spec)} (paper, {self.source}: "
                f"{self.statement}): {self.verdict_words()}.")

    def to_dict(self) -> dict:
        return {"key": self.key, "statement": self.statement, "source": self.source,
                "measure": self.measure, "estimate": self.estimate.to_dict(),
                "expect": self.expect, "threshold": self.threshold, "margin": self.margin,
                "scale": self.scale, "verdict": self.verdict,
                "verdict_words": self.verdict_words()}

    @classmethod
    def from_dict(cls, d: dict) -> Claim:
        keep = {k: d[k] for k in ("key", "statement", "source", "measure", "expect",
                                  "threshold", "margin", "scale")}
        return cls(estimate=Estimate(**d["estimate"]), **keep)


def glue(key: str, value) -> None:
    """Glue ``value`` under ``key`` for the page's prose (myst-nb's ``glue``, not displayed);
    nothing outside the book's environment, where there is no page to paste into."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return
    myst_glue(key, value, display=False)


@dataclass
class Claims:
    """The claims one chapter tests (``chapter`` is its notebook name; ``preset`` the preset
    it ran under)."""

    chapter: str
    preset: str
    spec: str = ".3g"
    claims: dict[str, Claim] = field(default_factory=dict)

    def add(self, key: str, statement: str, source: str, measure: str, estimate: Estimate,
            expect: str = "below", threshold: float = 0.0, margin: float = 0.0,
            scale: str = "") -> Claim:
        """Add a claim (see :class:`Claim`), glue its sentence, verdict, estimate and n, and
        return it."""
        if key in self.claims:
            raise ValueError(f"claim key {key!r} is already used in chapter {self.chapter!r}")
        c = Claim(key, statement, source, measure, estimate, expect, threshold, margin, scale)
        self.claims[key] = c
        glue(key, c.sentence(self.spec))
        glue(f"{key}_verdict", c.verdict_words())
        glue(f"{key}_estimate", c.estimate.format(self.spec))
        glue(f"{key}_n", str(c.estimate.n))
        return c

    def table(self):
        """The claims as a DataFrame: claim, paper, measure, study, n, verdict."""
        import pandas as pd

        rows = [{"claim": c.statement, "paper": c.source, "measure": c.measure,
                 "study": c.estimate.format(self.spec).split(" (n = ")[0],
                 "n": c.estimate.n, "verdict": c.verdict_words()}
                for c in self.claims.values()]
        return pd.DataFrame(rows, columns=["claim", "paper", "measure", "study", "n",
                                           "verdict"])

    def counts(self) -> dict[str, int]:
        """How many claims got each verdict."""
        verdicts = [c.verdict for c in self.claims.values()]
        return {v: verdicts.count(v) for v in VERDICTS}

    def show(self):
        """Glue the chapter's claims (JSON, for the findings page) and the verdict counts,
        and return the table for display."""
        if not self.claims:
            raise ValueError(f"chapter {self.chapter!r} has no claims to show")
        glue(GLUE_KEY, json.dumps(self.to_dict()))
        for verdict, count in self.counts().items():
            glue(f"count_{verdict.replace(' ', '_')}", str(count))
        return self.table().style.hide(axis="index")

    def to_dict(self) -> dict:
        return {"chapter": self.chapter, "preset": self.preset,
                "claims": [c.to_dict() for c in self.claims.values()]}


def read_claims(notebook: Path) -> dict | None:
    """The claims glued in an executed notebook (None if it glued none)."""
    nb = json.loads(Path(notebook).read_text())
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            scrapbook = out.get("metadata", {}).get("scrapbook", {})
            if scrapbook.get("name") == GLUE_KEY:
                # under papermill, myst-nb's glue stores the value under its mime prefix
                data = out["data"]
                text = data.get("text/plain",
                                data.get(scrapbook.get("mime_prefix", "") + "text/plain"))
                text = "".join(text) if isinstance(text, list) else text
                return json.loads(ast.literal_eval(text))
    return None


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def findings_markdown(chapters: list[tuple[str, str, dict]]) -> str:
    """The page "What the study found": one table per chapter, from ``(name, title, claims)``
    (claims as :meth:`Claims.to_dict` gives them)."""
    lines = ["# What the study found", "",
             "Every claim of the papers that the chapters test, with the study's number, its "
             "95 % interval and n, and the verdict computed from the interval (see "
             "[the intro](../intro.md) for the convention). *Confirmed*: the whole interval is "
             "on the side the paper claims; *contradicted*: on the other side; *not resolved*: "
             "the interval contains the paper's threshold at this scale. This page is written "
             "by `python -m growcore.claims` from the executed chapters; each row links to the "
             "chapter that computed it.", ""]
    total = dict.fromkeys(VERDICTS, 0)
    for name, title, data in chapters:
        claims = [Claim.from_dict(c) for c in data["claims"]]
        for c in claims:
            total[c.verdict] += 1
        lines += [f"## [{title}]({name}.ipynb)", "",
                  f"Preset `{data['preset']}`; {len(claims)} claims.", "",
                  "| claim | paper | measure | study | verdict |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {_cell(c.statement)} | {_cell(c.source)} | {_cell(c.measure)} | "
                  f"{_cell(c.estimate.format())} | **{_cell(c.verdict_words())}** |"
                  for c in claims]
        lines.append("")
    summary = ", ".join(f"{n} {v}" for v, n in total.items())
    lines[4:4] = [f"In all: {summary}.", ""]
    return "\n".join(lines) + "\n"


def _title(notebook: Path) -> str:
    nb = json.loads(Path(notebook).read_text())
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return Path(notebook).stem


def write_findings(directory: Path, order: list[str] | None = None) -> Path:
    """Write ``directory/findings.md`` from the executed notebooks in ``directory`` (in
    ``order`` of notebook names when given, else sorted) and return its path."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no folder of executed notebooks at {directory}")
    names = [n for n in order if n != Path(FINDINGS).stem] if order else sorted(
        p.stem for p in directory.glob("*.ipynb"))
    chapters = []
    for name in names:
        path = directory / f"{name}.ipynb"
        data = read_claims(path) if path.is_file() else None
        if data:
            chapters.append((name, _title(path), data))
    from growcore.paths import write_if_changed

    out = directory / FINDINGS
    write_if_changed(out, findings_markdown(chapters))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="folder of executed notebooks")
    parser.add_argument("--order", nargs="*", help="notebook names, in the book's order")
    args = parser.parse_args(argv)
    try:
        out = write_findings(args.directory, args.order)
    except FileNotFoundError as error:
        print(f"growcore.claims: {error}", file=sys.stderr)
        return 2
    print(f"findings: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
