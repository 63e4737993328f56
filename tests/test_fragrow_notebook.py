"""The FRAGrow notebook: invalid parameters stop it before compute, and the records of its
smoke run (shared with the book test, see conftest.py) are complete and consistent."""

import json
import math

import pytest

from growcore.chapters import fragrow

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name, value, message", [
    ("alpha", "four", "parameter 'alpha' must be float"),
    ("target_blocks", [1, 1, 1], "parameter 'target_blocks': must be deeper than seed_blocks"),
    ("finetune_min", [45, 1], "parameter 'finetune_min': every entry must be below"),
    ("tables", [1], "parameter 'tables': must include a table with a FRAGrow run"),
])
def test_bad_parameter_stops_before_compute(stops_before_compute, name, value, message):
    stops_before_compute("fragrow", name, value, message)


def _smoke_records(smoke_book):
    return [json.loads(p.read_text()) for p in (smoke_book.results / "fragrow").rglob("*.json")]


def test_smoke_records_are_complete(smoke_book):
    p = fragrow.notebook_parameters("smoke")
    records = _smoke_records(smoke_book)
    assert p["extra_plans"], "the smoke preset runs an extra plan (every code path)"
    assert sorted(r["name"] for r in records) == sorted(fragrow.experiments(p))
    for record in records:
        config, metrics = record["config"], record["metrics"]
        assert record["preset"] == "smoke" and record["environment"]["code_version"]
        assert record["world_size"] == 1 and len(record["seeds"]) == 1
        assert 0 <= metrics["final_test"][0] <= 1
        epochs = config["train"]["epochs"]
        assert len(metrics["evals"][0]) == epochs  # one evaluation per epoch
        assert len(metrics["loss"][0]) == len(metrics["lr"][0]) == epochs  # one per epoch
        assert metrics["cost_flops"][0][-1] < metrics["total_cost_flops"][0]
        small = record["name"].endswith(" small s0")
        expected = p["seed_blocks"] if small else p["target_blocks"]
        if any(f" {label} s" in record["name"] for label in p["extra_plans"]):
            # another where-criterion: the same number of blocks, not the same stages
            assert sum(fragrow.final_depths(record)) == sum(expected), record["name"]
        else:
            assert fragrow.final_depths(record) == expected, record["name"]


def test_smoke_growth_completes_before_the_finetuning(smoke_book):
    """Every growing run reaches its target by E_T - E_F_min (FRAGrow eq. 4's guarantee and
    the deadline rule of the other policies)."""
    for record in _smoke_records(smoke_book):
        events, config = record["metrics"]["events"], record["config"]
        if config["plan"] is None:  # small and large
            assert not events
            continue
        epochs = config["train"]["epochs"] - config["plan"]["when"]["finetune_min"]
        deadline = epochs * record["iterations_per_epoch"]
        assert events and max(e["iteration"] for e in events) <= deadline, record["name"]


def test_smoke_tables_are_complete_and_normalised_to_their_reference(smoke_book):
    p = fragrow.notebook_parameters("smoke")
    records = {r["name"]: r for r in _smoke_records(smoke_book)}
    for number in p["tables"]:
        for regime in p["regimes"]:
            rows = fragrow.table(number, records, p, regime)
            assert rows and all(row["n"] == len(fragrow.seeds_of(p, row["method"]))
                               for row in rows), (number, regime)
            if number == 1:
                continue
            by_method = {row["method"]: row for row in rows}
            reference = by_method[fragrow.TIME_REFERENCE[number]]
            assert reference["time %"] == pytest.approx(100)
            assert reference["cost %"] == pytest.approx(100)
            assert all(math.isfinite(row["time %"]) and math.isfinite(row["cost %"])
                       for row in rows), (number, regime)
