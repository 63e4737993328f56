"""The training loop and the driver on a streamed ImageFolder tree the tests generate: the loop
trains on the stream's batches, validates on its hold-out and tests on its streamed test set; a
killed and resumed streamed run equals the uninterrupted one bit for bit across a growth;
MobileNet-v1 at 224 px grows through a driver run with two decoding workers; bad streamed
configurations are refused by name before compute."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from test_checkpoint import Killed, killer

from growcore import checkpoint, driver
from growcore.how import GradMax
from growcore.images import DataNotFoundError
from growcore.models.catalog import RELU1
from growcore.models.mobilenet import MobileNetV1
from growcore.models.vgg import VGG
from growcore.params import ParameterError
from growcore.plan import GrowthPlan
from growcore.streaming import ImageFolderStream, Streamed, evaluation_transform
from growcore.train import evaluate, evaluate_batches, train
from growcore.when import AtIterations
from growcore.where import GrowToWidths

CLASSES = ("ant", "bee", "cat")
N_TRAIN_PER_CLASS, N_TEST_PER_CLASS = 4, 2
N_VAL = 3  # training images held out for validation
N_KEPT = N_TRAIN_PER_CLASS * len(CLASSES) - N_VAL  # streamed for training: 9
BATCH = 4  # 3 batches per epoch (4, 4, 1)
SIZE = 16  # pixels of the small runs
PAPER_SIZE = 224  # MobileNet-v1's ImageNet resolution (GradMax section 4.3)
TINY_WIDTH = 0.0625  # MobileNet-v1 width multiplier: 2 to 64 channels, a CPU-sized net


def write_tree(root):
    """3 classes x 4 noise training JPEGs and x 2 test JPEGs under ``root`` (``train/``,
    ``val/``), landscape and portrait, each larger than 224 px on its shorter side after the
    evaluation resize would need it. Returns ``root``."""
    rng = np.random.default_rng(0)
    for part, n in (("train", N_TRAIN_PER_CLASS), ("val", N_TEST_PER_CLASS)):
        for label, name in enumerate(CLASSES):
            (root / part / name).mkdir(parents=True)
            for i in range(n):
                shape = (232 + 9 * i, 250 + 5 * label) if i % 2 else (250 + 5 * label, 240)
                pixels = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / part / name / f"{i:02d}.jpg")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The tree of :func:`write_tree`, once per module."""
    return write_tree(tmp_path_factory.mktemp("imagefolder"))


def small_stream(root, seed: int = 0, **options) -> ImageFolderStream:
    return ImageFolderStream(root, SIZE, BATCH, seed=seed, n_val=N_VAL,
                             **{"num_workers": 0, **options})


def small_vgg() -> VGG:
    torch.manual_seed(0)
    return VGG([[4], [4, 6]], len(CLASSES), activation=RELU1, input_shape=(3, SIZE, SIZE))


# ---------------------------------------------------------------- the stream's new parts
def test_the_hold_out_is_never_streamed_and_the_sample_is_the_split_seed_s(tree):
    """The hold-out and the training order are disjoint and together every training image;
    the sample (training images and the whole hold-out, evaluation transform) does not depend
    on the training seed, and two ranks' samples together are the one-process sample."""
    one, other = small_stream(tree, seed=0), small_stream(tree, seed=1)
    trained = set(one.epoch_indices(0).tolist())
    assert len(trained) == one.n_examples == N_KEPT
    assert trained.isdisjoint(one.validation.tolist())
    assert trained | set(one.validation.tolist()) == set(range(len(one.train)))
    sample, again = one.sample(6), other.sample(6)
    assert sample.X_train.shape == (6, 3, SIZE, SIZE) and sample.X_train.dtype == torch.uint8
    assert torch.equal(sample.X_train, again.X_train) and torch.equal(sample.X_val, again.X_val)
    centre = evaluation_transform(SIZE)
    first_held = one.train.samples[int(one.validation[0])][0]
    assert torch.equal(sample.X_val[0], centre(Image.open(first_held).convert("RGB")))
    ranks = [small_stream(tree, rank=r, world=2).sample(6) for r in range(2)]
    assert torch.equal(torch.stack([ranks[0].X_train, ranks[1].X_train], 1).flatten(0, 1),
                       sample.X_train)
    assert small_stream(tree, split_seed=1).sample(6).X_train.ne(sample.X_train).any()


def test_the_loop_trains_on_the_stream_and_evaluates_on_its_sample_and_test_set(tree):
    """Over two epochs the loop's training batches are the stream's, in its order; its first
    evaluation's validation error is the seed network's on the sample's hold-out and its test
    error the seed network's on the streamed test images."""
    seen = []
    model = small_vgg()
    seed_network = copy.deepcopy(model)
    data = Streamed.of(small_stream(tree), 6)
    _, history = train(model, data, iterations=6, lr=0.05, eval_every=3, progress=False,
                       augment=lambda X, generator: seen.append(X.clone()) or X)
    reference = small_stream(tree)
    expected = [batch for _ in range(2) for batch in reference.batches()]
    assert len(seen) == len(expected) == 6
    assert all(torch.equal(X, X_expected) for X, (X_expected, _) in zip(seen, expected))
    first = history.evals[0]
    assert torch.equal(first["val_error"], evaluate(seed_network, data.sample.X_val,
                                                    data.sample.y_val))
    assert torch.equal(first["test_error"],
                       evaluate_batches(seed_network, small_stream(tree).test_batches()))
    assert len(history.test_error) == 6


def test_a_batch_size_other_than_the_stream_s_is_refused(tree):
    with pytest.raises(ValueError, match="batch_size=8"):
        train(small_vgg(), small_stream(tree), iterations=1, lr=0.1, batch_size=8,
              progress=False)


# ---------------------------------------------------------------- resume
def streamed_gradmax(root, path, kill=None, num_workers=1):
    """A VGG trained on the stream (fresh objects every call, as a new process would build
    them), widened by GradMax from the sample's gradients at iteration 5, mid epoch 1."""
    plan = GrowthPlan(AtIterations(5), GrowToWidths(2.0, 1), GradMax(batch_size=4))
    data = Streamed.of(small_stream(root, num_workers=num_workers), 6)
    return train(small_vgg(), data, iterations=10, lr=0.05, momentum=0.9, plan=plan,
                 eval_every=2, step_metrics=killer(kill), progress=False, checkpoint=path,
                 checkpoint_every=2)


def test_a_killed_and_resumed_streamed_run_equals_the_uninterrupted_one(tree, tmp_path):
    """Killed during update 5 (mid epoch 1, before the growth), the run's checkpoint holds
    the stream at epoch 1, position 4 (3 + 1 batches done); resumed, it ends with the
    weights, buffers and history of the run never interrupted, bit for bit."""
    reference_model, reference = streamed_gradmax(tree, tmp_path / "reference.pt")
    assert [e["iteration"] for e in reference.events] == [5]
    path = tmp_path / "killed.pt"
    with pytest.raises(Killed):
        streamed_gradmax(tree, path, kill=4)
    saved = checkpoint.load(path)
    assert saved["iteration"] == 4
    assert {k: saved["batches"]["stream"][k] for k in ("epoch", "position")} == {
        "epoch": 1, "position": BATCH}
    model, history = streamed_gradmax(tree, path)
    assert history.resumed_at == [4]
    state, expected = checkpoint.tensors(model), checkpoint.tensors(reference_model)
    assert list(state) == list(expected)
    assert all(torch.equal(state[name], expected[name]) for name in state)
    assert comparable(history) == comparable(reference)


def comparable(history) -> dict:
    """Everything a history records but the clock and the resumptions."""
    h = history.as_dict()
    h["events"] = [{k: v for k, v in e.items() if k != "seconds"} for e in h["events"]]
    return {k: v for k, v in h.items() if k not in ("wall_time", "resumed_at")}


# ---------------------------------------------------------------- the driver
def mobilenet_config(root, **data) -> dict:
    """MobileNet-v1 (ImageNet stem, relu'(0) = 1) at 224 px on the streamed tree, widened x2
    by GradMax at iteration 2 of 4 (the GradMax chapter's where and how)."""
    return {"name": "mobilenet 224 streamed", "seeds": [0],
            "data": {"name": "imagefolder", "root": str(root), "image_size": PAPER_SIZE,
                     "stream": True, "num_workers": 2, "n_val": N_VAL, "n_sample": 6, **data},
            "model": {"name": "mobilenet_v1", "width": TINY_WIDTH, "stem": "imagenet",
                      "activation": "relu1"},
            "train": {"iterations": 4, "batch_size": BATCH, "lr": 0.05, "momentum": 0.9,
                      "eval_every": 2, "eval_batch_size": 4},
            "plan": {"when": {"name": "every", "interval": 2, "start": 2, "count": 1},
                     "where": {"name": "grow_to_widths", "factor": 2.0, "growths": 1},
                     "how": {"name": "gradmax", "batch_size": 4}}}


def test_mobilenet_at_224_px_grows_on_a_stream_read_by_two_workers(tree, tmp_path):
    """The driver streams the tree at 224 px with two worker processes into MobileNet-v1,
    which GradMax widens once; the record's test error is the grown network's on the streamed
    test images, its validation error that of the hold-out, an epoch is the stream's."""
    record = driver.run_experiment(mobilenet_config(tree), directory=tmp_path, device="cpu",
                                   progress=False, keep_models=True)
    metrics = record["metrics"]
    assert record["status"] == "complete" and record["iterations_per_epoch"] == 3
    (event,) = metrics["events"]
    assert event["iteration"] == 2 and event["n_params_after"] > event["n_params_before"]
    final = record["final_models"][0]
    assert final.stem[0].out_channels == 2 * MobileNetV1(TINY_WIDTH, 3).stem[0].out_channels
    test = evaluate_batches(final, ImageFolderStream(tree, PAPER_SIZE, BATCH, num_workers=0,
                                                     n_val=N_VAL).test_batches())
    assert metrics["final_test"] == test.tolist()
    assert all("val_error" in e for e in metrics["evals"][0])


@pytest.mark.parametrize(("data", "train", "name"), [
    ({"num_workers": -1}, {}, "data.num_workers"),
    ({"num_workers": 1.5}, {}, "data.num_workers"),
    ({"n_train": 6}, {}, "'data'"),
    ({"augment": False}, {}, "data.augment"),
    ({"stream": "yes"}, {}, "data.stream"),
    ({"name": "cifar10"}, {}, "data.name"),
    ({}, {"batch_size": None}, "train.batch_size"),
    ({"n_val": 12}, {}, "n_val"),
])
def test_a_bad_streamed_configuration_is_refused_by_name(tree, data, train, name):
    config = mobilenet_config(tree, **data)
    config["train"] = {k: v for k, v in {**config["train"], **train}.items() if v is not None}
    with pytest.raises(ParameterError, match=name):
        driver.run_experiment(config, device="cpu", check_only=True)


def test_a_missing_tree_is_named_before_compute(tmp_path):
    with pytest.raises(DataNotFoundError, match=str(tmp_path / "absent")):
        driver.run_experiment(mobilenet_config(tmp_path / "absent"), device="cpu",
                              check_only=True)
