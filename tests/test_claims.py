"""The book's uncertainty convention and the verdicts computed from it: intervals against
hand-computed values, verdicts on each side of a threshold, the findings page from executed
notebooks."""

import json
import math

import matplotlib
import numpy as np
import pytest
from scipy import stats

from growcore import plots
from growcore.claims import GLUE_KEY, Claim, Claims, findings_markdown, read_claims, write_findings
from growcore.uncertainty import (
    MIN_BAND,
    Estimate,
    bootstrap_interval,
    errorbar,
    log_mean_interval,
    mean_interval,
    paired_difference,
)

matplotlib.use("Agg")


def test_mean_interval_is_the_t_interval_by_hand():
    v = [1.0, 2.0, 4.0]
    e = mean_interval(v)
    sd = math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert e.mean == pytest.approx(7 / 3)
    assert (e.low, e.high) == pytest.approx((7 / 3 - half, 7 / 3 + half))
    assert e.n == 3 and e.method == "t"
    assert str(e) == f"{7 / 3:.3g} [{7 / 3 - half:.3g}, {7 / 3 + half:.3g}] (n = 3)"


def test_an_exact_number_prints_without_an_interval():
    e = Estimate(0.873, 0.873, 0.873, 1000, "exact")
    assert str(e) == "0.873 (exact, n = 1000)"
    assert Claim("k", "s", "t", "m", e, "below", 1.0).verdict == "confirmed"


def test_one_value_has_no_interval():
    e = mean_interval([0.5])
    assert math.isnan(e.low) and math.isnan(e.high)
    assert "no interval" in str(e)
    assert errorbar([0.5]) == (0.5, 0.5)


def test_paired_difference_is_the_interval_of_the_differences():
    a, b = [1.0, 2.0, 3.5, 2.0], [1.5, 2.1, 3.0, 2.6]
    d, ref = paired_difference(a, b), mean_interval(np.subtract(a, b))
    assert (d.mean, d.low, d.high, d.n) == (ref.mean, ref.low, ref.high, 4)
    assert d.method == "paired t"
    with pytest.raises(ValueError, match="one entry per seed"):
        paired_difference([1.0, 2.0], [1.0])


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [[1.0, 2.0]]])
def test_bad_values_are_refused(bad):
    with pytest.raises(ValueError, match="values"):
        mean_interval(bad)


def test_bootstrap_interval_is_seeded_and_covers_the_mean():
    v = np.random.default_rng(1).normal(size=40)
    e1, e2 = bootstrap_interval(v, seed=3), bootstrap_interval(v, seed=3)
    assert e1 == e2 and e1.method == "bootstrap"
    assert e1.low < v.mean() < e1.high
    # the percentile interval is about the t interval for a normal sample of 40
    assert e1.half == pytest.approx(mean_interval(v).half, rel=0.2)


def test_log_interval_is_the_interval_of_the_logs():
    v = [1e-3, 1e-2, 1e-1]
    e, m = log_mean_interval(v), mean_interval(np.log(v))
    assert e.mean == pytest.approx(1e-2)
    assert (e.low, e.high) == pytest.approx((math.exp(m.low), math.exp(m.high)))
    assert e.low > 0
    with pytest.raises(ValueError, match="positive"):
        log_mean_interval([1.0, -1.0])


def estimate(low, high, n=10, method="paired t"):
    return Estimate((low + high) / 2, low, high, n, method)


@pytest.mark.parametrize("expect,low,high,verdict", [
    ("below", -0.3, -0.1, "confirmed"), ("below", 0.1, 0.3, "contradicted"),
    ("below", -0.1, 0.1, "not resolved"), ("above", 0.1, 0.3, "confirmed"),
    ("above", -0.3, -0.1, "contradicted"), ("above", -0.1, 0.2, "not resolved"),
])
def test_verdict_follows_the_interval(expect, low, high, verdict):
    assert Claim("k", "s", "Fig. 1", "m", estimate(low, high), expect).verdict == verdict


def test_within_needs_the_whole_interval_inside_the_margin():
    def within(low, high):
        return Claim("k", "s", "t", "m", estimate(low, high), "within", 1.0, 0.05).verdict

    assert within(0.97, 1.03) == "confirmed"
    assert within(0.80, 0.90) == "contradicted"
    assert within(0.90, 1.00) == "not resolved"
    with pytest.raises(ValueError, match="margin"):
        Claim("k", "s", "t", "m", estimate(0.9, 1.0), "within", 1.0)


def test_resolving_n_shrinks_the_half_width_to_the_gap():
    c = Claim("k", "s", "t", "m", Estimate(0.1, -0.2, 0.4, 10, "paired t"))
    # half 0.3, gap 0.1: the half-width must shrink by 3, n by 9
    assert c.resolving_n() == 90
    assert "about 90 would resolve it" in c.verdict_words()
    assert Claim("k", "s", "t", "m", estimate(-0.3, -0.1)).resolving_n() is None
    near = Claim("k", "s", "t", "m", Estimate(0.001, -0.2, 0.202, 10, "paired t"))
    assert near.resolving_n() > 100 * 10
    assert "more than 100 times as many" in near.verdict_words()
    assert Claim("k", "s", "t", "m", Estimate(0.1, -0.2, 0.4, 10, "bootstrap")
                 ).resolving_n() is None


def test_no_interval_is_never_a_verdict():
    c = Claim("k", "s", "t", "m", mean_interval([-5.0]))
    assert c.verdict == "not resolved"


@pytest.mark.parametrize("kwargs,match", [
    ({"key": "Bad Key"}, "key"), ({"expect": "lower"}, "expect"),
    ({"estimate": (0.1, 0.0, 0.2)}, "Estimate"), ({"threshold": float("nan")}, "threshold"),
])
def test_bad_claims_are_refused(kwargs, match):
    base = {"key": "k", "statement": "s", "source": "t", "measure": "m",
            "estimate": estimate(0.0, 1.0)}
    with pytest.raises((ValueError, TypeError), match=match):
        Claim(**{**base, **kwargs})


def test_claims_round_trip_and_refuse_a_key_twice():
    claims = Claims("ch", "smoke")
    c = claims.add("a_b", "x beats y", "Fig. 2", "x - y", estimate(-0.3, -0.1))
    assert Claim.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ValueError, match="already used"):
        claims.add("a_b", "x", "y", "z", estimate(0, 1))
    assert claims.counts() == {"confirmed": 1, "contradicted": 0, "not resolved": 0}
    assert list(claims.table()["verdict"]) == ["confirmed"]


def executed_notebook(path, title, data, prefix=""):
    """A minimal executed notebook holding a glued claims output, as myst-nb writes it (under
    papermill, with the mime prefix ``application/papermill.record/``)."""
    glued = {"output_type": "display_data",
             "metadata": {"scrapbook": {"name": GLUE_KEY, "mime_prefix": prefix}},
             "data": {prefix + "text/plain": repr(json.dumps(data))}}
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
          "cells": [{"cell_type": "markdown", "metadata": {}, "source": [f"# {title}\n"]},
                    {"cell_type": "code", "metadata": {}, "source": [], "execution_count": 1,
                     "outputs": [glued]}]}
    path.write_text(json.dumps(nb))


def test_findings_page_from_executed_notebooks(tmp_path):
    claims = Claims("one", "cpu")
    claims.add("up", "A beats B", "Table 5", "A - B | paired", estimate(-0.3, -0.1))
    claims.add("flat", "C costs less", "§4.1", "C / step", estimate(0.2, 1.4, 3, "t"),
               "below", 1.0)
    executed_notebook(tmp_path / "one.ipynb", "Chapter One", claims.to_dict())
    executed_notebook(tmp_path / "two.ipynb", "Chapter Two",
                      {"chapter": "two", "preset": "cpu", "claims": []},
                      prefix="application/papermill.record/")
    (tmp_path / "three.ipynb").write_text(json.dumps({"cells": []}))
    assert read_claims(tmp_path / "one.ipynb") == claims.to_dict()
    assert read_claims(tmp_path / "three.ipynb") is None
    text = write_findings(tmp_path, ["one", "two", "three"]).read_text()
    assert "## [Chapter One](one.ipynb)" in text and "## [Chapter Two](two.ipynb)" in text
    assert "In all: 1 confirmed, 0 contradicted, 1 not resolved." in text
    assert "A - B \\| paired" in text  # a pipe in a cell does not break the table
    assert text == findings_markdown([("one", "Chapter One", claims.to_dict()),
                                      ("two", "Chapter Two", read_claims(
                                          tmp_path / "two.ipynb"))])


def test_band_draws_seeds_below_the_minimum_and_logs_on_log_axes():
    fig, ax = matplotlib.pyplot.subplots()
    x = np.arange(4)
    plots.band(ax, x, np.ones((MIN_BAND - 1, 4)), "few")
    assert len(ax.lines) == MIN_BAND and not ax.collections  # mean + each seed, no band
    ax.cla()
    ax.set_yscale("log")
    Y = np.array([[1e-3] * 4, [1e-2] * 4, [1e-1] * 4, [1e-2] * 4, [1e-2] * 4])
    plots.band(ax, x, Y, "log")
    low = ax.collections[0].get_paths()[0].vertices[:, 1].min()
    assert low > 0  # a log-space band never dives to zero
    assert ax.lines[0].get_ydata()[0] == pytest.approx(1e-2)  # geometric mean
    matplotlib.pyplot.close(fig)


def test_runner_writes_the_findings_page_in_the_books_order(tmp_path):
    from growcore.runner import book_order, write_findings_page

    order = book_order()
    assert order[:5] == ["sensli", "gradmax", "nagn", "fragrow", "compare"]
    assert order[-1] == "findings"  # the page itself is listed last, and skipped
    for name, title in (("compare", "Five"), ("sensli", "One")):
        claims = Claims(name, "smoke")
        claims.add("k", "s", "Fig. 1", "m", estimate(-1, -0.5))
        executed_notebook(tmp_path / f"{name}.ipynb", title, claims.to_dict())
    page = write_findings_page(tmp_path)
    text = page.read_text()
    assert text.index("[One](sensli.ipynb)") < text.index("[Five](compare.ipynb)")
    mtime = page.stat().st_mtime_ns
    write_findings_page(tmp_path)
    assert page.stat().st_mtime_ns == mtime  # unchanged page: not rewritten


def test_pages_show_no_machine_paths(tmp_path, monkeypatch):
    from growcore.paths import repo_root
    from growcore.runtime import shown_path

    monkeypatch.setenv("GROWCORE_RESULTS", str(tmp_path / "r"))
    assert shown_path(tmp_path / "r" / "nagn" / "cpu") == "$GROWCORE_RESULTS/nagn/cpu"
    assert shown_path(repo_root() / "data" / "x") == "data/x"
    monkeypatch.delenv("GROWCORE_RESULTS")
    assert shown_path(repo_root() / "results" / "nagn") == "results/nagn"
    assert shown_path(tmp_path / "elsewhere") == "elsewhere"
