"""The NAGN notebook: papermill with invalid parameters, and the records its smoke run wrote
(the run itself is shared with the book test, see conftest.py)."""

import json

import pytest

from growcore.chapters import nagn as chapter

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name, value, message", [
    ("tau", -0.1, "parameter 'tau' must be float >= 0; got -0.1"),
    ("configurations", [[[4], [0]]], "parameter 'configurations': every entry must be"),
    ("n_val", 46000, "parameter 'n_train': n_train + n_val must not exceed"),
    ("growth_how", "identity", "parameter 'growth_how' must be str one of 'zero'"),
])
def test_bad_parameter_stops_before_compute(stops_before_compute, name, value, message):
    stops_before_compute("nagn", name, value, message)


def _records(smoke_book):
    return [json.loads(p.read_text()) for p in smoke_book.results.rglob("nagn/**/*.json")]


def test_smoke_records_hold_the_growth_and_its_static_baseline(smoke_book):
    records = {r["name"]: r for r in _records(smoke_book)}
    assert {"bottleneck", "fig1", "grown [[4], [4], [8]]", "static [[4], [4], [8]]"} <= \
        set(records)
    for record in records.values():
        assert record["preset"] == "smoke" and record["environment"]["code_version"]
    grown, static = records["grown [[4], [4], [8]]"], records["static [[4], [4], [8]]"]
    assert grown["seeds"] == static["seeds"]
    per_seed = static["config"]["model"]["per_seed"]
    for seed, g, s in zip(grown["seeds"], chapter.final_widths(grown),
                          chapter.final_widths(static)):
        assert per_seed[str(seed)]["config"] == g == s
    assert not static["metrics"]["events"] and static["config"]["plan"] is None
    fig1 = records["fig1"]
    for seed, final in zip(fig1["seeds"], chapter.final_widths(fig1)):
        events = chapter.seed_events(fig1, seed)  # the smoke preset forces a growth
        event = events[0]
        assert len(event["nagn"]) == 10 and event["increments"][-1] >= 0
        widths = [w for block in final for w in block]
        assert widths == [n + d for n, d in zip(event["widths"], event["increments"])] or \
            len(events) > 1
    profiles, widths = chapter.profiles(records["bottleneck"])
    assert widths == [8, 3, 8, 16, 4, 16, 32, 4, 32, 10] or len(widths) == 10
    assert set(profiles) == {"after BatchNorm", "before BatchNorm"}
    assert all(len(row) == 10 for rows in profiles.values() for row in rows)


def test_chapter_has_its_figures(require_build):
    html = (require_build.html / "book" / "chapters" / "nagn.html").read_text()
    for name in ("nagn-fig-bottleneck", "nagn-fig-1", "nagn-fig-2"):
        assert f'id="{name}"' in html
