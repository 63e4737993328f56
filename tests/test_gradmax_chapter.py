"""The GradMax chapter's own helpers (growcore.chapters.gradmax): comparisons paired by seed on
the book's convention (growcore.uncertainty), the cost of a growth step in training steps, the
figures' summaries, the method colours and the lab preset."""

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from growcore.chapters import gradmax as chapter
from growcore.how import GradMax
from growcore.runner import notebook_parameters
from growcore.stats import TargetNorm
from growcore.uncertainty import mean_interval, paired_difference

matplotlib.use("Agg")


def _record(seeds, values, key="final_train"):
    return {"seeds": list(seeds), "metrics": {key: list(values)}}


def test_paired_matches_runs_by_seed_not_by_position():
    """Run b lists its seeds in another order and lacks seed 3: the pairs are seed by seed,
    in a's order, and the estimate is paired_difference of those pairs."""
    records = {"a": _record([0, 1, 2, 3], [1.0, 2.0, 3.0, 4.0]),
               "b": _record([2, 0, 1], [3.5, 1.25, 2.5])}
    va, vb = chapter.paired(records, "a", "b", "final_train")
    assert va.tolist() == [1.0, 2.0, 3.0] and vb.tolist() == [1.25, 2.5, 3.5]
    estimate = chapter.paired_estimate(records, "a", "b", "final_train", scale=100.0)
    assert estimate == paired_difference([100.0, 200.0, 300.0], [125.0, 250.0, 350.0])
    assert estimate.mean == pytest.approx(-100 * (0.25 + 0.5 + 0.5) / 3)
    assert chapter.paired(records, "a", "b", "final_train", n=2)[0].tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="share no seed"):
        chapter.paired({**records, "c": _record([7], [1.0])}, "a", "c", "final_train")


def test_paired_frame_gives_the_interval_and_the_seeds_where_a_is_lower():
    records = {"a": _record(range(4), [1.0, 2.0, 3.0, 4.0]),
               "b": _record(range(4), [2.0, 3.1, 2.9, 5.2])}
    frame = chapter.paired_frame(records, {"a vs b": ("a", "b", "final_train", None, 1.0)})
    row = frame.iloc[0]
    expected = paired_difference([1.0, 2.0, 3.0, 4.0], [2.0, 3.1, 2.9, 5.2])
    assert row["a - b"] == expected.format(".3g").split(" (n")[0]
    assert row["n"] == 4 and row["a lower"] == "3 of 4"


def test_per_seed_summaries_of_figs_2a_2b_and_3c():
    draws = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)  # [seed][growth][repeat]
    assert chapter.per_seed_mean(draws).tolist() == [draws[0].mean(), draws[1].mean()]
    loss = np.full((2, 5), 2.0)
    grad = np.array([[1.0, 1.0, 2.0, 2.0, 2.0], [4.0, 4.0, 4.0, 8.0, 8.0]])
    record = {"metrics": {"grad_norm": grad.tolist(), "loss": loss.tolist()}}
    # from step 2: seed 0 has gradient / loss 1, 1, 1; seed 1 has 2, 4, 4
    assert chapter.adjusted_gradient_log(record, after=2) == pytest.approx(
        [0.0, 5 * np.log(2) / 3])
    cost = {"metrics": {"growth_time": [[1.0, 3.0], [2.0, 2.0]], "step_time": [0.5, 1.0]}}
    assert chapter.growth_step_ratios(cost).tolist() == [4.0, 2.0]


def test_growth_step_cost_times_without_changing_the_model():
    split, student = chapter.theory_student(n_points=50, steps=3, lr=0.1)
    before = [p.detach().clone() for p in student.parameters()]
    ratios = chapter.growth_step_cost(student, split, GradMax("mse", norm=TargetNorm(0.5)),
                                      repeats=3)
    assert ratios.shape == (3,) and (ratios > 0).all()
    assert all(torch.equal(a, b) for a, b in zip(before, student.parameters()))
    assert student.widths == [20, 5, 10]


def test_theory_student_is_the_same_network_every_call():
    (split, a), (_, b) = (chapter.theory_student(n_points=40, steps=2, lr=0.1)
                          for _ in range(2))
    assert a.widths == [20, 5, 10] and split.X_train.shape == (40, 20)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_every_method_has_one_colour_and_the_other_side_is_dashed():
    methods = set(chapter.TS_METHODS) | set(chapter.CIFAR_METHODS)
    assert methods == set(chapter.COLORS) and len(set(chapter.COLORS.values())) == len(methods)
    marked = "GradMax" + chapter.side_label("outgoing")
    assert chapter.color_of(marked) == chapter.COLORS["GradMax"]
    assert chapter.style_of(marked) == "--" and chapter.style_of("GradMax") == "-"


@pytest.mark.parametrize("units, band", [(3, False), (6, True)])
def test_points_draw_the_t_interval_or_the_units_themselves(units, band):
    """With at least MIN_BAND units a group gets its 95 % t interval; with fewer, its units
    as points and no interval."""
    import matplotlib.pyplot as plt

    values = np.linspace(1.0, 2.0, units) ** 2
    frame = pd.DataFrame({"x": ["g"] * units, "y": values, "method": ["GradMax"] * units})
    fig, ax = plt.subplots()
    chapter.points(ax, frame, "x", "y")
    e = mean_interval(values)
    spans = [sorted(line.get_ydata()) for line in ax.lines if len(line.get_ydata()) == 2]
    found = any(np.allclose(s, [e.low, e.high]) for s in spans)
    assert found is band
    strip = [c for c in ax.collections if len(c.get_offsets()) == units]
    assert bool(strip) is not band
    plt.close(fig)


def test_lab_preset_keeps_the_papers_teacher_student_schedule_with_fewer_seeds():
    lab, cpu = (chapter.validate(notebook_parameters("gradmax", p)) for p in ("lab", "cpu"))
    assert lab["preset"] == "lab" and "lab" in chapter.PRESETS
    for name in ("ts_small_steps", "ts_large_steps", "n_seeds", "cifar_seeds", "cifar_growths"):
        assert lab[name] == cpu[name], name
    assert 5 < lab["ts_paired_seeds"] < cpu["ts_paired_seeds"]
    assert lab["cifar_steps"] < cpu["cifar_steps"] and lab["cifar_both_sides"]


# ---------------------------------------------------------------- ImageNet streamed from disk
@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The streaming tests' ImageFolder tree: 3 classes, 12 training and 6 test JPEGs."""
    from test_streaming_train import write_tree

    return write_tree(tmp_path_factory.mktemp("imagefolder"))


def _streamed(tree, **overrides) -> dict:
    """The chapter's parameters for MobileNet-v1 on the tree at 224 px, streamed by two
    workers: width x0.0625 widened x2 by one growth at step 2 of 4, batch 4, one seed."""
    tiny = {"image_dataset": "imagenet", "data_root": str(tree), "cifar_models": ["mobilenet_v1"],
            "stream": True, "num_workers": 2, "image_size": 224, "cifar_train": 0,
            "cifar_test": 0, "cifar_seeds": 1, "cifar_width": 0.0625, "cifar_factor": 2.0,
            "cifar_steps": 4, "cifar_first_growth": 2, "cifar_interval": 2, "cifar_growths": 1,
            "cifar_batch_size": 4, "cifar_both_sides": False, "progress": False}
    return notebook_parameters("gradmax", "smoke", **{**tiny, **overrides})


def test_stream_builds_the_drivers_streamed_imagenet_config(tree):
    """With stream the image runs' data section is the driver's streamed one (the tree under
    data_root at image_size, num_workers decoding processes, no subset sizes), which the
    driver accepts and opens as a stream of every training image in batches of
    cifar_batch_size; without it, the in-memory subsets as before."""
    from growcore import driver

    p = chapter.validate(_streamed(tree))
    data = {"name": "imagenet", "root": str(tree), "image_size": 224, "stream": True,
            "num_workers": 2}
    configs = chapter.cifar_experiments(p)
    assert len(configs) == len(chapter.CIFAR_METHODS)
    assert all(config["data"] == data for config in configs.values())
    config = driver.validate(configs["mobilenet_v1 GradMax"])
    assert driver.is_streamed(config["data"]) and set(data) <= set(driver.STREAM_DATA)
    source = driver.open_stream(config, 0, "cpu")
    stream = source.stream
    assert (stream.n_examples, stream.n_test, stream.size) == (12, 6, 224)
    assert (stream.batch_size, stream.num_workers, len(stream.validation)) == (4, 2, 0)
    assert source.sample.X_train.shape == (12, 3, 224, 224)
    images, about = chapter.load_images(p)
    assert images is None and (about["n_train"], about["n_test"]) == (12, 6)
    assert about["batch"].X_train.shape == (4, 3, 224, 224)
    in_memory = chapter.image_data(chapter.validate(_streamed(tree, stream=False)))
    assert "stream" not in in_memory and in_memory["image_size"] == 224
    assert {"n_train", "n_test", "augment"} <= set(in_memory)


@pytest.mark.parametrize(("changes", "name", "fragment"), [
    ({"image_dataset": "cifar10", "cifar_models": ["vgg11"]}, "stream", "image_dataset 'imagenet'"),
    ({"image_dataset": "cifar100", "cifar_models": []}, "stream", "got image_dataset 'cifar100'"),
    ({"cifar_train": 8}, "cifar_train", "must be 0 with stream"),
    ({"cifar_test": 4}, "cifar_test", "must be 0 with stream"),
    ({"cifar_augment": False}, "cifar_augment", "always augments"),
    ({"num_workers": -1}, "num_workers", ">= 0"),
    ({"stream": "yes"}, "stream", "bool"),
])
def test_bad_streamed_parameters_are_refused_by_name(tree, changes, name, fragment):
    """Refused by chapter.validate, before any image is decoded or any run starts."""
    from growcore.params import ParameterError

    with pytest.raises(ParameterError, match=f"parameter '{name}'") as error:
        chapter.validate(_streamed(tree, **changes))
    assert fragment in str(error.value)


def test_the_imagenet_mobilenet_run_streams_at_224_px_through_one_growth(tree, tmp_path):
    """As the notebook runs it (no split: the driver streams): MobileNet-v1 at 224 px, two
    decoding workers, 4 steps of 4 images (3 steps an epoch), widened once by GradMax at
    step 2; the test error is the grown network's on the 6 streamed test images."""
    from growcore.driver import run_experiment

    p = chapter.validate(_streamed(tree))
    images, _ = chapter.load_images(p)
    record = run_experiment(chapter.cifar_experiments(p)["mobilenet_v1 GradMax"], split=images,
                            directory=tmp_path, device="cpu", progress=False)
    metrics = record["metrics"]
    assert record["status"] == "complete" and record["iterations_per_epoch"] == 3
    assert record["config"]["data"]["stream"] is True
    (event,) = metrics["events"]
    assert event["iteration"] == 2 and event["n_params_after"] > event["n_params_before"]
    assert metrics["n_params"][0][-1] == event["n_params_after"] > metrics["n_params"][0][0]
    (test,) = metrics["final_test"]
    assert round(6 * test) == pytest.approx(6 * test, abs=1e-6)  # a count of the 6 images
