"""The GradMax notebook: papermill with invalid parameters, and the records its smoke run wrote
(the run itself is shared with the book test, see conftest.py)."""

import json

import pytest

from growcore.chapters.gradmax import CIFAR_METHODS, PAIRED_METHODS, TS_METHODS

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name, value, message", [
    ("n_seeds", 0, "parameter 'n_seeds' must be int >= 1; got 0"),
    ("cifar_models", ["resnet50"], "parameter 'cifar_models' must be a list of str one of"),
    ("image_dataset", "svhn", "parameter 'image_dataset' must be str one of"),
    ("ts_small_interval", 400, "parameter 'ts_small_interval': 5 growths every 400 steps"),
])
def test_bad_parameter_stops_before_compute(stops_before_compute, name, value, message):
    stops_before_compute("gradmax", name, value, message)


def _records(smoke_book) -> dict[str, dict]:
    paths = (smoke_book.results / "gradmax" / "smoke").glob("*.json")
    return {r["name"]: r for r in (json.loads(path.read_text()) for path in paths)}


def test_smoke_records_are_complete(smoke_book):
    records = _records(smoke_book)
    expected = ([f"{size} {m}" for size in ("small", "large") for m in TS_METHODS]
                + [f"vgg11 {m}" for m in CIFAR_METHODS] + ["Fig2a", "Fig2c", "Fig6 alignment"])
    sides = ["vgg11 Random [epsilon outgoing]", "vgg11 GradMax [epsilon outgoing]"]
    assert set(expected + sides + ["GradMax growth sites"]) <= set(records)
    for size in ("small", "large"):  # the paired runs: batched, their own number of seeds
        for method in PAIRED_METHODS:
            record = records[f"{size} {method}"]
            assert record["batched_seeds"] and len(record["seeds"]) == 3  # smoke: 3
    assert records["small GradMaxOpt"]["seeds"] == [0, 1]  # n_seeds, one seed at a time
    assert records["vgg11 GradMax [epsilon outgoing]"]["config"]["plan"]["how"]["value"] == 1e-4
    sites = records["GradMax growth sites"]["metrics"]["sites"]
    assert len(sites) == 8 and all(s["gradient incoming"] > s["gradient outgoing"] > 0
                                   for s in sites)
    for name in expected[:10]:
        record = records[name]
        config, metrics, plan = record["config"], record["metrics"], record["config"]["plan"]
        assert record["preset"] == "smoke" and record["environment"]["code_version"]
        assert len(metrics["loss"]) == len(config["seeds"])
        assert all(len(row) == config["train"]["iterations"] for row in metrics["loss"])
        growths = plan["when"]["count"] * plan["where"]["units"]["layers.0"] if plan else 0
        hidden = config["model"]["hidden"][0] + growths
        assert all(m["widths"]["layers.0"] == hidden for m in metrics["final_model"])
    for name in expected[10:15]:
        assert len(records[name]["metrics"]["final_test"]) == len(records[name]["seeds"])
