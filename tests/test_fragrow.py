"""FRAGrow's formulas and the when-policies on synthetic accuracy histories."""

import math

import pytest
import torch
from torch import nn

from growcore.driver import load_data, run_experiment
from growcore.models.vgg import vgg_staged
from growcore.ops import GrowThenCosine
from growcore.train import History
from growcore.when import (
    Convergent,
    FRAGrow,
    LipGrow,
    Periodic,
    TrainState,
    average_training_epochs,
    block_epochs,
    growth_interval,
    lipschitz_bound,
    max_interval,
    overfitting_risk_level,
)

EXACT = 1e-12  # closed-form arithmetic in double precision
SPECTRAL = 1e-6  # matrix 2-norm by an SVD


def test_max_interval_is_eq_4():
    assert max_interval(180, 30, 24) == pytest.approx(6.25, abs=EXACT)  # ResNet 2222 -> 8888
    assert max_interval(180, 30, 10) == pytest.approx(15.0, abs=EXACT)  # VGG 11112 -> 22444
    with pytest.raises(ValueError):
        max_interval(30, 30, 3)


@pytest.mark.parametrize("orl, expected", [
    (4.0, 2.5),                            # ORL = alpha: half of I_max
    (0.0, 5 / (1 + math.e ** 4)),          # no gap: 0.0899 epochs
    (8.0, 5 / (1 + math.e ** -4)),         # 8-point gap: 4.9101 epochs
    (-2.0, 5 / (1 + math.e ** 6)),         # validation better than training
])
def test_growth_interval_is_eq_3(orl, expected):
    assert growth_interval(orl, alpha=4.0, i_max=5.0) == pytest.approx(expected, abs=EXACT)


def test_orl_is_in_percentage_points():
    assert overfitting_risk_level(train_error=0.02, val_error=0.07) == pytest.approx(5.0)


def test_alpha_4_needs_percentage_points():
    """As a fraction ORL lies in [-1, 1]: the factor I / I_max would stay below 5 % for every
    possible accuracy, so the policy could not slow down; in percentage points it spans
    (almost) the whole range (0, 1) over the gaps 0 to 8 points."""
    as_fraction = [growth_interval(orl, 4.0, 1.0) for orl in (-1.0, 0.0, 1.0)]
    assert max(as_fraction) < 0.05
    in_points = [growth_interval(orl, 4.0, 1.0) for orl in (0.0, 8.0)]
    assert in_points[0] < 0.02 and in_points[1] > 0.98


def simulate(policy, iterations, ipe, errors, blocks_per_growth=1):
    """Drive a policy as the spine's loop does (growcore.train.train): evaluate at epoch
    boundaries first, then ask ``when``; ``errors(epoch)`` gives (train error since the last
    evaluation, val error)."""
    history = History()
    for t in range(iterations):
        if t % ipe == 0:
            record = {"iteration": t}
            if t > 0:
                train_error, val_error = errors(t // ipe)
                record.update(train_error=torch.tensor([train_error]),
                              val_error=torch.tensor([val_error]))
            history.evals.append(record)
        if policy(TrainState(t, history)):
            history.events.append({"iteration": t, "blocks_added": blocks_per_growth})
    return history


def growths(history):
    return [e["iteration"] for e in history.events]


def test_periodic_grows_every_i_max_and_e_bar_is_closed_form():
    ipe, total, finetune, n = 5, 10, 4, 3  # I_max = 2 epochs = 10 iterations
    history = simulate(Periodic(ipe, n, total, finetune), total * ipe, ipe,
                       lambda epoch: (0.1, 0.1))
    assert growths(history) == [10, 20, 30]
    # E-bar of periodic growth: E_T - I_max (n + 1) / 2
    i_max = max_interval(total, finetune, n)
    expected = total - i_max * (n + 1) / 2
    assert average_training_epochs(history.events, ipe, total) == pytest.approx(expected)
    assert block_epochs(history.events, ipe, total) == [8.0, 6.0, 4.0]


def test_fragrow_grows_fast_when_underfitting_and_slowly_when_overfitting():
    ipe, total, finetune, n = 5, 10, 4, 3
    under = simulate(FRAGrow(ipe, n, total, finetune), total * ipe, ipe,
                     lambda epoch: (0.3, 0.3))   # ORL = 0
    over = simulate(FRAGrow(ipe, n, total, finetune), total * ipe, ipe,
                    lambda epoch: (0.0, 0.2))    # ORL = 20 points
    # ORL = 0: I = 2 / (1 + e^4) = 0.036 epochs, less than one iteration; the evaluation at
    # iteration 5 is seen at 5 (the loop evaluates before it asks), and each later growth
    # waits for an evaluation after the previous one (at 10, 15)
    assert growths(under) == [5, 10, 15]
    # ORL = 20: I = I_max (1 - 1e-7): the periodic schedule
    assert growths(over) == [10, 20, 30]
    assert (average_training_epochs(under.events, ipe, total)
            > average_training_epochs(over.events, ipe, total))


def test_fragrow_interval_follows_the_latest_orl():
    ipe, total, finetune, n = 4, 40, 10, 3     # I_max = 10 epochs
    policy = FRAGrow(ipe, n, total, finetune, alpha=4.0)
    history = simulate(policy, total * ipe, ipe, lambda epoch: (0.1, 0.14))
    _, orls, intervals = zip(*policy.trace)
    assert orls[0] == pytest.approx(4.0)        # ORL = alpha: I = I_max / 2 = 5 epochs
    assert intervals[0] == pytest.approx(5.0)
    assert growths(history) == [20, 40, 60]


def test_convergent_waits_for_a_plateau():
    ipe, total, finetune, n = 2, 40, 10, 1
    plateau = [0.5, 0.4, 0.3, 0.3, 0.3, 0.3]
    history = simulate(Convergent(ipe, n, total, finetune, patience=2), total * ipe, ipe,
                       lambda epoch: (0.0, plateau[min(epoch, 5)]))
    # evaluations after epochs 1..4 give 0.4, 0.3, 0.3, 0.3: at epoch 4 (the loop evaluates
    # before it asks) the best of the last two (0.3) is no better than the best before (0.3)
    assert growths(history) == [4 * ipe]


def test_convergent_meets_the_deadline_when_it_never_converges():
    ipe, total, finetune, n = 2, 20, 5, 3
    history = simulate(Convergent(ipe, n, total, finetune, patience=2), total * ipe, ipe,
                       lambda epoch: (0.0, 1.0 / (1 + epoch)))  # always improving
    # deadline rule: the last block at E_T - E_F_min = 15, one epoch apart
    assert growths(history) == [13 * ipe, 14 * ipe, 15 * ipe]


def test_lipschitz_bound_of_diagonal_weights():
    first, second = nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        first.weight.copy_(torch.diag(torch.tensor([0.5, -2.0, 1.5])))
        second.weight.copy_(torch.diag(torch.tensor([3.0, 1.0, 0.0])))
    # product of the spectral norms: 2 * 3
    assert lipschitz_bound(nn.Sequential(first, nn.ReLU(), second)) == pytest.approx(
        6.0, rel=SPECTRAL)


def _scale_convs(model, factor):
    with torch.no_grad():
        for stage in model.stages:
            for block in stage:
                block.conv.weight.mul_(factor)


def test_lipgrow_fires_when_the_estimate_rises_by_the_tolerance():
    """Scaling every conv by c scales every block's bound by c (one conv per VGG block)."""
    model = vgg_staged((1, 1, 1, 1, 1), widths=(4, 4, 4, 4, 4))
    policy = LipGrow(iterations_per_epoch=1, n_blocks=5, total_epochs=100, finetune_min=10,
                     tolerance=1.1)
    history = History()
    assert not policy(TrainState(1, history, model))  # first estimate: the base
    _scale_convs(model, 1.05)
    assert not policy(TrainState(2, history, model))  # 5 % above the base: below tolerance
    _scale_convs(model, 1.1)
    assert policy(TrainState(3, history, model))      # 15.5 % above the base
    assert policy.tolerance == pytest.approx(1.05)
    assert policy.trace[2][1] / policy.trace[0][1] == pytest.approx(1.05 * 1.1, rel=SPECTRAL)


def test_grow_then_cosine():
    total = 100
    fixed = GrowThenCosine(total, n_blocks=0)  # no growth: plain cosine decay
    assert fixed(0, History()) == pytest.approx(1.0)
    assert fixed(50, History()) == pytest.approx(0.5)
    history = History(events=[{"iteration": 20, "blocks_added": 1}])
    schedule = GrowThenCosine(total, n_blocks=2)
    assert schedule(30, history) == 1.0        # still growing: constant
    history.events.append({"iteration": 40, "blocks_added": 1})
    assert schedule(40, history) == pytest.approx(1.0)
    assert schedule(70, history) == pytest.approx(0.5)   # half way from 40 to 100


def _chapter_parameters(**overrides):
    from growcore.chapters import fragrow as chapter
    from growcore.runner import notebook_parameters

    tiny = {"seed_blocks": [1, 1], "target_blocks": [2, 1], "widths": [4, 8],
            "regimes": ["tiny"], "n_train": [16], "epochs": [3], "finetune_min": [1],
            "augment": [False], "n_val": 4, "n_test": 4, "batch_size": 8, "tables": [5],
            "n_seeds": 1, "image_size": 32, "progress": False}
    return chapter.validate(notebook_parameters("fragrow", **{**tiny, **overrides}))


@pytest.mark.parametrize("dataset, architecture, classes", [
    ("cifar100", "resnet", 100), ("cifar100", "vgg", 100), ("imagenet", "resnet", 3),
    ("imagenet", "mobilenetv2", 3)])
def test_fragrow_grows_on_generated_cifar100_and_imagenet(tmp_path, dataset, architecture,
                                                          classes):
    from test_images import write_cifar100, write_image_folder

    from growcore.chapters import fragrow as chapter

    root = tmp_path / dataset
    if dataset == "cifar100":
        write_cifar100(root, n_train=20, n_test=4)
    else:
        write_image_folder(root, classes=("n01", "n02", "n03"), per_class=7)
    widths = [16, 24, 32, 64, 96] if architecture == "mobilenetv2" else [4, 8]
    blocks = {"seed_blocks": [1] * len(widths), "target_blocks": [2] + [1] * (len(widths) - 1)}
    p = _chapter_parameters(dataset=dataset, data_root=str(root), architecture=architecture,
                            widths=widths, **blocks)
    runs = chapter.experiments(p)
    config = runs[f"{architecture} tiny FRAGrow s0"]
    assert config["data"]["root"] == str(root)
    split = load_data(config["data"])
    assert len(split.classes) == classes
    record = run_experiment(config, directory=tmp_path, split=split, progress=False)
    assert chapter.final_depths(record) == chapter.stage_counts(architecture,
                                                                p["target_blocks"])
    assert 0 <= record["metrics"]["final_test"][0] <= 1


def test_missing_data_folder_and_vgg_on_imagenet_stop_before_compute(tmp_path):
    from growcore.params import ParameterError

    with pytest.raises(ParameterError, match="parameter 'data_root': no cifar100 folder at"):
        _chapter_parameters(dataset="cifar100", data_root=str(tmp_path / "absent"))
    with pytest.raises(ParameterError, match=r"parameter 'architecture'.*resnet or mobilenetv2"):
        _chapter_parameters(dataset="imagenet", data_root=str(tmp_path), architecture="vgg")


def test_the_methods_are_registry_plans():
    from growcore.chapters import fragrow

    p = _chapter_parameters(tables=[1, 5, 6, 8, 9, 10], alphas=[2.0])
    runs = fragrow.experiments(p)
    assert len(runs) == len(fragrow.methods(p["tables"], p["alphas"]))  # one regime and seed

    def plan(method):
        return runs[f"resnet tiny {method} s0"]["plan"]

    assert plan("small") is None and plan("large") is None
    assert runs["resnet tiny large s0"]["model"]["blocks"] == p["target_blocks"]
    assert runs["resnet tiny small s0"]["model"]["blocks"] == p["seed_blocks"]
    frame = {"n_blocks": 1, "finetune_min": 1}  # 1-1 -> 2-1, E_F_min of the regime
    assert plan("FRAGrow")["when"] == {"name": "fragrow", "alpha": 4.0, **frame}
    assert plan("FRAGrow a=2")["when"] == {"name": "fragrow", "alpha": 2.0, **frame}
    assert plan("periodic")["when"] == {"name": "periodic", **frame}
    # fast: periodic at I_max / fast_factor, I_max = (E_T - E_F_min) / n = 2 epochs
    assert plan("fast")["when"] == {"name": "periodic", "interval": 2 / 4, **frame}
    assert plan("convergent")["when"] == {"name": "convergent", "patience": 2, **frame}
    assert plan("LipGrow")["when"] == {"name": "lipgrow", "tolerance": 1.1, **frame}
    assert plan("LipGrow")["where"]["per_growth"] == "double"
    assert plan("FRAGrow")["where"] == {"name": "stage_order", "seed": [1, 1],
                                        "target": [2, 1], "order": "stagewise",
                                        "per_growth": "one"}
    assert plan("convergent circulating")["where"]["order"] == "circulating"
    assert plan("FRAGrow")["how"] == {"name": "block_copy"}
    assert plan("periodic moment")["how"] == {"name": "block_moment", "moment_decay": 0.9}


@pytest.mark.parametrize("preset", ["lab", "cpu", "gpu"])
def test_every_run_is_a_driver_configuration_whose_plan_fits_its_model(preset):
    from growcore.chapters import fragrow
    from growcore.driver import validate
    from growcore.models.factory import build_named
    from growcore.registry import build_plan

    p = fragrow.notebook_parameters(preset)
    models = {}
    for name, config in fragrow.experiments(p).items():
        config = validate(config)  # the driver refuses unknown sections and options
        assert config["name"] == name and name.endswith(f" s{config['seeds'][0]}")
        if config["plan"] is None:
            continue
        blocks = tuple(config["model"]["blocks"])
        if blocks not in models:  # one model per seed network: gpu nets are large
            options = {k: v for k, v in config["model"].items() if k != "name"}
            models[blocks] = build_named(config["model"]["name"], (3, 32, 32), 10, **options)
        context = {"iterations_per_epoch": 4, "total_epochs": config["train"]["epochs"],
                   "loss": "cross_entropy", "seed": 0}  # what the driver adds
        build_plan(config["plan"], context).check(models[blocks])


# The notebook's helpers, now in the library: growcore.train.replay_when and the chapter's
# blocks_over_time and show_table.


def test_replay_when_grows_periodically_and_counts_blocks_per_event():
    from growcore.train import replay_when

    ipe, total, finetune, n = 4, 10, 1, 3  # I_max = 3 epochs = 12 iterations
    history = replay_when(Periodic(ipe, n, total, finetune), total * ipe)
    assert growths(history) == [12, 24, 36]
    assert all(e["blocks_added"] == 1 for e in history.events)
    # two blocks per event: block 3 is due at 3 I_max (36), and then the target is reached
    doubled = replay_when(Periodic(ipe, n, total, finetune), total * ipe, blocks_added=2)
    assert growths(doubled) == [12, 36]


def test_replay_when_asks_the_policy_before_recording_the_growth():
    from growcore.train import replay_when

    seen = []

    def policy(state):
        seen.append((state.iteration, len(state.history.events), state.iterations_per_epoch,
                     state.model))
        return state.iteration in (2, 3)

    marker = object()
    history = replay_when(policy, 5, iterations_per_epoch=7, model=marker)
    # at t = 3 the policy sees the growth of t = 2 but not its own
    assert seen == [(0, 0, 7, marker), (1, 0, 7, marker), (2, 0, 7, marker),
                    (3, 1, 7, marker), (4, 2, 7, marker)]
    assert history.events == [{"iteration": 2, "blocks_added": 1},
                              {"iteration": 3, "blocks_added": 1}]


def test_replay_when_reproduces_the_schedule_of_the_training_loop():
    from growcore.data import Split
    from growcore.how import Zero
    from growcore.models.mlp import MLP
    from growcore.ops import widen
    from growcore.plan import GrowthPlan
    from growcore.train import replay_when, train
    from growcore.where import FixedSites

    def periodic():  # I_max = 1.5 epochs of 2 iterations: due at 3, 6, 9
        return Periodic(2, 3, 6, 1.5)

    torch.manual_seed(0)
    split = Split(torch.randn(8, 3), torch.randn(8, 2))
    plan = GrowthPlan(periodic(), FixedSites({"layers.0": 1}), Zero(), op=widen)
    grown, trained = train(MLP([3, 4, 2]), split, iterations=12, lr=0.1, loss="mse",
                           plan=plan, progress=False)
    replayed = replay_when(periodic(), 12, iterations_per_epoch=1)  # train's full batch
    assert growths(trained) == growths(replayed) == [3, 6, 9]
    assert grown.layers[0].out_features == 4 + 3


def test_blocks_over_time_is_a_step_function_of_the_epoch():
    from growcore.chapters import fragrow

    record = {"iterations_per_epoch": 4, "config": {"train": {"epochs": 10}},
              "metrics": {"events": [{"iteration": 6, "blocks_added": 1},
                                     {"iteration": 20, "blocks_added": 2}]}}
    epochs, blocks = fragrow.blocks_over_time(record)
    assert epochs == [0.0, 1.5, 5.0, 10]
    assert blocks == [0, 1, 3, 3]
    empty = {**record, "metrics": {"events": []}}
    assert fragrow.blocks_over_time(empty) == ([0.0, 10], [0, 0])


def _table_record(regime, method, test_error, wall, cost):
    return {"name": f"none {regime} {method} s0", "seeds": [0], "wall_time_s": wall,
            "metrics": {"final_test": [test_error], "total_cost_flops": [cost]}}


def test_show_table_prints_the_title_and_stacks_the_regimes(capsys):
    from growcore.chapters import fragrow

    p = {"tables": [5], "regimes": ["a", "b"], "alphas": [], "alpha": 4.0,
         "architecture": "none"}  # no paper numbers for this architecture
    records = {}
    for regime, scale in (("a", 1.0), ("b", 2.0)):
        for method, error, wall, cost in (("small", 0.3, 1.0, 2.0), ("large", 0.2, 4.0, 8.0),
                                          ("FRAGrow", 0.1234, 3.0, 5.0)):
            records[f"{regime} {method}"] = _table_record(regime, method, error, scale * wall,
                                                          cost)
    frame = fragrow.show_table(5, "Table 5", records, p)
    assert capsys.readouterr().out == "Table 5\n"
    assert list(frame.index) == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("b", 2)]
    assert list(frame["method"]) == ["small", "large", "FRAGrow"] * 2
    # % of the large run, rounded to two decimals: wall 1/4, 3/4; cost 2/8, 5/8
    assert list(frame["time %"]) == [25.0, 100.0, 75.0] * 2
    assert list(frame["cost %"]) == [25.0, 100.0, 62.5] * 2
    assert list(frame["test error %"]) == [30.0, 20.0, 12.34] * 2


def test_show_table_declines_a_table_outside_the_preset(capsys):
    from growcore.chapters import fragrow

    p = {"tables": [5, 6], "regimes": ["a"]}
    assert fragrow.show_table(9, "Table 9", {}, p) is None
    assert capsys.readouterr().out == "Table 9 is not part of the preset's tables [5, 6]\n"


def test_extra_plans_by_registry_names_run_beside_the_tables():
    """``extra_plans``: roles by registry names over FRAGrow's own plan; a when-policy that
    takes FRAGrow's number of growths gets it; an unknown name stops before compute."""
    import pytest

    from growcore.chapters import fragrow
    from growcore.params import ParameterError
    from growcore.runner import notebook_parameters

    raw = notebook_parameters("fragrow", "smoke")
    p = fragrow.validate({**raw, "extra_plans": {
        "random stage": {"where": "random_depth"},
        "window": {"when": {"name": "convergent", "patience": 2}}}})
    runs = fragrow.experiments(p)
    stage = runs["resnet overfitting random stage s0"]["plan"]
    assert stage["where"] == {"name": "random_depth"}
    assert stage["when"]["name"] == "fragrow" and stage["how"]["name"] == "block_copy"
    window = runs["resnet overfitting window s0"]["plan"]["when"]
    assert window["name"] == "convergent" and window["n_blocks"] == stage["when"]["n_blocks"]
    assert "resnet overfitting large s0" in runs
    with pytest.raises(ParameterError, match=r"extra_plans.*random_depth"):
        fragrow.validate({**raw, "extra_plans": {"x": {"where": "randomm"}}})
