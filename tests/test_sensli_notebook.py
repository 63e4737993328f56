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


def _glued(notebook: dict) -> dict[str, str]:
    """Glue key -> its text, from an executed notebook's outputs (myst-nb's glue under
    papermill stores them under a mime prefix)."""
    glued = {}
    for cell in notebook["cells"]:
        for out in cell.get("outputs", []):
            name = out.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                text = next(iter(out["data"].values()))
                glued[name] = "".join(text) if isinstance(text, list) else text
    return glued


def test_the_prose_pastes_only_glued_values_and_every_claim_has_a_verdict(smoke_book):
    """Every {glue:text} of the chapter's prose is glued by its run, and the claims glued
    for the findings page each carry a verdict computed from an interval."""
    import ast
    import re

    from growcore.claims import GLUE_KEY, VERDICTS

    notebook = json.loads((smoke_book.root / "book" / "chapters" / "sensli.ipynb").read_text())
    glued = _glued(notebook)
    pasted = {key for cell in notebook["cells"] if cell["cell_type"] == "markdown"
              for key in re.findall(r"\{glue:text\}`([^`]+)`", "".join(cell["source"]))}
    assert pasted and not pasted - set(glued), sorted(pasted - set(glued))
    claims = json.loads(ast.literal_eval(glued[GLUE_KEY]))
    assert claims["chapter"] == "sensli" and claims["preset"] == "smoke"
    keys = {c["key"] for c in claims["claims"]}
    assert {"resnet2_ahead_of_resnetli", "resnet2_ahead_of_resnetli_authors",
            "li_beats_li_other_fnn", "compute_fnn"} <= keys
    for claim in claims["claims"]:
        assert claim["verdict"] in VERDICTS and claim["estimate"]["n"] == 2
        assert f"{claim['key']}_verdict" in pasted     # every verdict is said in the prose
