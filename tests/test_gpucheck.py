"""The GPU check runs every chapter's GPU code path at tiny sizes on the CPU (what ``make
gpu-check`` runs at full size on a GPU), and the FLOP estimate of the gpu presets' cost."""

from __future__ import annotations

import json

import pytest

from growcore import gpucheck


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return gpucheck.run_check("cpu", tiny=True, folder=tmp_path_factory.mktemp("tree"))


def test_throughput_of_static_and_growing_nets(report):
    """Four rows: VGG11 and WRN-28-1, static and growing. A growing net grows the planned
    number of times and ends with exactly the static net's parameters (GradMax x4 from a
    quarter of the static width); its growth steps are timed against its training steps."""
    rows = report["throughput"]
    assert set(rows) == {f"{net} {kind}" for net in gpucheck.NETS
                         for kind in ("static", "growing")}
    for net in gpucheck.NETS:
        static, growing = rows[f"{net} static"], rows[f"{net} growing"]
        assert static["growths"] == 0 and static["growth_over_step"] is None
        assert static["params_start"] == static["params_end"]
        assert growing["growths"] == gpucheck.TINY.growths
        assert growing["params_start"] < growing["params_end"] == static["params_end"]
        assert growing["growth_over_step"] > 0
        for row in (static, growing):
            assert row["images_per_s"] > 0 and row["step_s"] > 0 and row["peak_mib"] > 0
            assert row["precision"] == "float32" and row["channels_last"] is False


def test_every_chapter_s_gpu_path_runs_through_a_growth(report):
    assert set(report["chapters"]) == set(gpucheck.CHAPTER_RUNS)
    for chapter, row in report["chapters"].items():
        assert row["growths"] >= 1, chapter
        assert row["params_end"] > row["params_start"], chapter
    assert report["chapters"]["nagn"]["when"] == "validation_window"  # NAGN's own trigger


def test_the_stream_reads_the_generated_tree_with_workers(report):
    stream = report["streaming"]
    assert stream["images"] == gpucheck.TINY.stream_images
    assert stream["workers"] == gpucheck.TINY.workers >= 2
    assert stream["images_per_s"] > 0 and stream["dtype"] == "torch.uint8"


def test_the_stream_feeds_a_growing_mobilenet_through_the_loop(report):
    """MobileNet-v1 trains on the streamed tree through the driver and GradMax widens it x2
    once (every width doubled: about 4 times the parameters of the pointwise layers)."""
    fed = report["streaming"]["training"]
    assert fed["steps"] == gpucheck.TINY.chapter_steps and fed["growths"] == 1
    assert fed["params_end"] > 2 * fed["params_start"] and fed["images_per_s"] > 0


def test_the_report_prints_and_is_json(report):
    text = gpucheck.format_report(report)
    for name in [*report["throughput"], *gpucheck.CHAPTER_RUNS.values(), "streaming"]:
        assert name in text
    assert json.loads(json.dumps(report)) == report
    assert report["tiny"] and report["within_budget"]


def test_the_cost_estimate_covers_every_chapter():
    """Each chapter's GPU-hours: positive, the upper bound at least the lower; FRAGrow's
    runs (ResNet-2-2-2-2 to 8-8-8-8) are FLOP-bound and their range is their growth: the
    target costs more than the seed network."""
    table = gpucheck.estimate()
    assert set(table) == {"sensli", "gradmax", "nagn", "fragrow"}
    for row in table.values():
        assert row["runs"] > 0 and 0 < row["lower"] <= row["upper"]
    assert table["fragrow"]["flop_bound"] == table["fragrow"]["runs"]
    assert table["fragrow"]["upper"] > 2 * table["fragrow"]["lower"]
    text = gpucheck.estimate_markdown(table)
    assert "Estimate, not a measurement" in text and "| fragrow |" in text
