"""The SensLI notebook: papermill with changed and with invalid parameters, and the records
its smoke run wrote (the run itself is shared with the book test, see conftest.py)."""

import json

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name, value, message", [
    ("n_seeds", -3, "parameter 'n_seeds' must be int >= 1; got -3"),
    ("merit_normalisation", "none", "parameter 'merit_normalisation' must be str one of"),
    ("insertion_iteration", 5000, "parameter 'insertion_iteration': must be below iterations"),
    ("authors_stop_test_error", 2.0, "parameter 'authors_stop_test_error': is a test error"),
])
def test_bad_parameter_stops_before_compute(stops_before_compute, name, value, message):
    stops_before_compute("sensli", name, value, message)


def test_smoke_records_are_complete(smoke_book):
    records = [json.loads(p.read_text()) for p in smoke_book.results.rglob("sensli/**/*.json")]
    names = {r["name"] for r in records}
    for expected in ("FNN1", "FNN2", "ResNet1", "ResNet2", "ResNetLI", "FNN[4,4] LI",
                     "FNN[4,4] LI_other", "ResNet1 authors", "ResNet2 authors",
                     "ResNetLI authors", "ResNet[3,3,3,3] authors"):
        assert expected in names
    for record in records:
        assert record["preset"] == "smoke" and record["environment"]["code_version"]
        n_seeds, n_steps = len(record["seeds"]), record["config"]["train"]["iterations"]
        assert len(record["metrics"]["loss"]) == n_seeds
        assert all(len(row) == n_steps for row in record["metrics"]["loss"])


def test_a_plan_by_names_runs_beside_sensli_and_a_bad_one_stops_before_compute(
        stops_before_compute):
    """``extra_plans``: any where/how of the registry on FNN [4, 4]; a name the registry does
    not know stops the notebook with the valid names."""
    from growcore.chapters import sensli
    from growcore.runner import notebook_parameters

    p = sensli.validate(notebook_parameters("sensli", "smoke"))
    runs = sensli.experiments(p)
    assert runs["FNN[4,4] random position"]["plan"]["where"] == "random_depth"
    assert runs["FNN[4,4] random position"]["plan"]["when"]["iterations"] == 20
    stops_before_compute("sensli", "extra_plans", {"x": {"where": "randomm"}},
                         "random_depth")
