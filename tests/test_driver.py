"""The one driver: any experiment from plain configuration, checked before compute."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from growcore import results
from growcore.data import Split, spiral, teacher_student
from growcore.driver import load_data, main, run_experiment
from growcore.experiments import spiral_config
from growcore.models.factory import MODULE_ACTIVATIONS, build_named
from growcore.models.mobilenet import MobileNetV2
from growcore.models.resnet import resnet
from growcore.models.vgg import vgg11, vgg_staged
from growcore.params import ParameterError


def _spiral_config(**changes) -> dict:
    config = {"name": "spiral sensli", "seeds": [0, 1],
              "data": {"name": "spiral", "n_per_class": 40},
              "model": {"name": "fnn", "widths": [4, 4]},
              "train": {"iterations": 30, "lr": 0.5},
              "plan": {"when": {"name": "at", "iterations": 10}, "where": "sensli",
                       "how": "identity"}}
    return {**config, **changes}


def test_a_spiral_run_by_hand_equals_the_sensli_chapters_configuration(tmp_path):
    """A configuration written by hand and the SensLI chapter's spiral_config of the same
    run give the same choices and losses: the configuration is all there is to a run."""
    record = run_experiment(_spiral_config(), directory=tmp_path, progress=False,
                            device="cpu")
    chapter = run_experiment(spiral_config(
        "fnn", [4, 4], seeds=[0, 1], iterations=30, lr=0.5, insert_at=10,
        name="reference") | {"data": {"name": "spiral", "n_per_class": 40}},
        directory=tmp_path, progress=False, device="cpu")
    assert record["batched_seeds"]
    assert [e["chosen"] for e in record["metrics"]["events"]] == [
        e["chosen"] for e in chapter["metrics"]["events"]]
    assert record["metrics"]["loss"] == chapter["metrics"]["loss"]
    split = spiral(40)
    assert len(record["metrics"]["final_test"]) == 2
    assert record["metrics"]["n_params"][0][-1] > (2 * 4 + 4) + (4 * 4 + 4) + (4 * 2 + 2)
    saved = results.load_record(record["path"])
    assert saved["metrics"]["plan"][0]["where"]["criterion"] == "SensLI"
    assert saved["iterations_per_epoch"] == 1 and len(split.y_train) == 60


def test_an_mlp_grows_by_gradmax_on_the_teacher_student_task(tmp_path):
    config = {"name": "ts", "seeds": [3], "data": {"name": "teacher_student",
                                                    "teacher": [6, 4, 3], "n_points": 64},
              "model": {"name": "mlp", "hidden": [2]},
              "train": {"iterations": 12, "lr": 0.05, "loss": "mse"},
              "plan": {"when": {"name": "every", "interval": 4, "count": 2},
                       "where": {"name": "fixed_sites", "units": {"layers.0": 1}},
                       "how": "gradmax"}}
    record = run_experiment(config, directory=tmp_path, progress=False, device="cpu")
    assert len(record["metrics"]["events"]) == 2
    assert record["metrics"]["n_params"][0][-1] == 6 * 4 + 4 * 3  # hidden 2 -> 4, no biases
    assert record["metrics"]["plan"][0]["how"]["how"] == "GradMax"


def test_seeds_of_an_nn_module_run_one_after_another(tmp_path):
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g),
                  torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g))
    config = {"name": "vgg", "seeds": [0, 1], "data": {"name": "cifar10"},
              "model": {"name": "vgg", "config": [[4], [4]], "activation": "relu1"},
              "train": {"epochs": 2, "batch_size": 8, "lr": 0.01, "momentum": 0.9,
                        "schedule": "cosine"},
              "plan": {"when": {"name": "every", "interval": 2, "count": 1},
                       "where": {"name": "stage_order", "seed": [1, 1], "target": [2, 1]},
                       "how": "block_copy"}}
    record = run_experiment(config, split=split, directory=tmp_path, progress=False,
                            device="cpu")
    assert record["metrics"]["seed"] == [0, 1] and not record["batched_seeds"]
    assert len(record["metrics"]["events"]) == 2  # one growth per seed
    assert record["iterations"] == 4 and record["iterations_per_epoch"] == 2


@pytest.mark.parametrize(("change", "message"), [
    ({"model": {"name": "transformer"}}, "model.name must be one of"),
    ({"data": {"name": "mnist"}}, "'data.name': must be one of"),
    ({"train": {"iterations": 5, "lr": -1.0}}, "'train.lr'"),
    ({"train": {"iterations": 5, "epochs": 2, "lr": 0.1}}, "exactly one of"),
    ({"train": {"iterations": 5, "lr": 0.1, "momentun": 0.9}}, "unknown option(s) ['momentun']"),
    ({"plan": {"when": {"name": "at", "iterations": 3}, "where": "sensli", "how": "gradmax"}},
     "how-initialiser"),
    ({"plan": {"when": {"name": "at", "iterations": 3}, "where": "nagn", "how": "zero"}},
     "hooks on the model"),
    ({"seeds": []}, "'seeds'"),
    ({"extra": 1}, "unknown section"),
])
def test_bad_configuration_is_refused_before_any_compute(tmp_path, change, message):
    with pytest.raises(ParameterError) as error:
        run_experiment(_spiral_config(**change), directory=tmp_path, progress=False,
                       device="cpu")
    assert message in str(error.value)
    assert not list(tmp_path.iterdir()), "nothing may be written"


def test_command_line_runs_a_yaml_file_and_reports_errors(tmp_path, capsys):
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(_spiral_config(seeds=[0])))
    assert main([str(path), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    (saved,) = (tmp_path / "out").glob("*.json")
    assert json.loads(saved.read_text())["name"] == "spiral sensli"
    path.write_text(yaml.safe_dump(_spiral_config(model={"name": "nope"})))
    assert main([str(path), "--out", str(tmp_path / "bad")]) == 2
    assert "model.name must be one of" in capsys.readouterr().err


def test_teacher_student_data_is_drawn_per_seed():
    """``data.per_seed``: seed s's data (the GradMax chapter's teacher and points) is that of
    growcore.data.teacher_student with seed s."""
    spec = {"name": "teacher_student", "per_seed": True, "teacher": [20, 10, 10],
            "n_points": 50}
    direct, _ = teacher_student([20, 10, 10], 50, seed=4)
    drawn = load_data(spec, seed=4)
    assert torch.equal(drawn.X_train, direct.X_train) and torch.equal(drawn.y_test, direct.y_test)
    assert not torch.equal(load_data(spec, seed=5).X_train, direct.X_train)


def test_the_configuration_shown_on_the_rerun_page_is_valid():
    """The YAML example of book/rerun.md checks (data, model, plan) without training."""
    from growcore.paths import repo_root

    text = (repo_root() / "book" / "rerun.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = yaml.safe_load(block)
    config["data"] = {**config["data"], "n_train": 64, "n_val": 16, "n_test": 16}
    checked = run_experiment(config, check_only=True, device="cpu", progress=False)
    assert checked["plan"]["where"]["name"] == "nagn"


@pytest.mark.parametrize(("name", "options", "direct"), [
    ("vgg11", {"width": 0.0625, "batch_norm": True, "activation": "relu1"},
     lambda: vgg11(0.0625, 10, batch_norm=True, activation=MODULE_ACTIVATIONS["relu1"])),
    ("vgg_staged", {"blocks": [1, 1, 1, 1, 2], "widths": [4, 4, 8, 8, 8]},
     lambda: vgg_staged([1, 1, 1, 1, 2], [4, 4, 8, 8, 8], 10)),
    ("resnet", {"blocks": [1, 1], "widths": [4, 8]}, lambda: resnet([1, 1], 10, widths=[4, 8])),
    ("mobilenet_v2", {"blocks": [1, 1, 1, 1, 1], "width": 0.25},
     lambda: MobileNetV2([1, 1, 1, 1, 1], width=0.25, num_classes=10)),
])
def test_models_by_name_are_the_constructors_models(name, options, direct):
    """The factory the driver and the chapters build from gives, under the same seed, the
    very network the model's own constructor gives (same classes, same weights)."""
    torch.manual_seed(3)
    named = build_named(name, (3, 32, 32), 10, **options)
    torch.manual_seed(3)
    reference = direct()
    assert type(named) is type(reference)
    a, b = named.state_dict(), reference.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [type(m) for m in named.modules()] == [type(m) for m in reference.modules()]


def test_observers_by_name_read_nagn_without_a_plan(tmp_path):
    """``train.observe``: NAGN's profile read over the training batches of a fixed network,
    one per reading; its length is the number of layers (the output last); a bad name is
    refused before any compute."""
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g))
    observe = {"after": {"name": "nagn"}, "before": {"name": "nagn",
                                                     "layers": "producer_output"}}
    config = {"name": "observed", "seeds": [0], "data": {"name": "cifar10"},
              "model": {"name": "vgg", "config": [[4], [6]]},
              "train": {"epochs": 2, "batch_size": 8, "lr": 0.01, "observe": observe}}
    record = run_experiment(config, split=split, save=False, progress=False, device="cpu")
    (observed,) = record["metrics"]["observed"]
    assert set(observed) == {"after", "before"}
    assert all(len(profile) == 3 and min(profile) > 0 for profile in observed.values())
    assert observed["after"] != observed["before"]  # BatchNorm rescales the gradients
    config["train"]["observe"] = {"x": {"name": "nagnn"}}
    with pytest.raises(ParameterError, match=r"train\.observe"):
        run_experiment(config, split=split, save=False, progress=False, device="cpu")


def test_a_yaml_error_is_one_line_naming_the_file_and_line(tmp_path, capsys):
    path = tmp_path / "bad.yml"
    path.write_text("name: x\nseeds: [0, 1\ndata: {name: spiral}\n")
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}, line " in err and "YAML error" in err and "Traceback" not in err


def test_the_chapter_launcher_checks_every_run_and_says_so(capsys):
    assert main(["--chapter", "sensli", "--preset", "smoke", "--check", "--device", "cpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out and all(line.endswith("configuration, data, model and plan are valid")
                       for line in out)
    assert any(line.startswith("FNN[4,4] LI:") for line in out)
