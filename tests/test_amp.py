"""Mixed precision, memory layout and compilation of the training step, tested on the CPU:
growth statistics and operators stay correct under bfloat16 autocast (the growth step runs in
float32; GradMax's matrix computed inside autocast is float32's to bf16 precision; NAGN's
profile collected in a bf16 backward pass is float32's to bf16 precision), a growth keeps the
function in a bf16 run, the float16 loss scale is hidden from the step metrics, channels-last
survives growth, a compiled model is compiled again after each growth, and the driver picks
the settings by device."""

from __future__ import annotations

import copy

import pytest
import torch

from growcore import checkpoint, driver
from growcore.data import Split
from growcore.how import BlockInit, GradMax, KaimingNew
from growcore.models.catalog import RELU1
from growcore.models.mlp import MLP
from growcore.models.resnet import resnet
from growcore.models.sites import width_sites
from growcore.models.vgg import VGG
from growcore.plan import GrowthPlan
from growcore.stats import NAGNObserver
from growcore.stats.gradmax import GradientMatrices
from growcore.train import grow, train
from growcore.when import AtIterations
from growcore.where import NAGN, GrowToWidths, StageOrder

IMAGE = (3, 16, 16)
# bfloat16 keeps 8 significant bits: 2^-8 = 0.4 % per rounding. Tolerances of quantities
# computed under autocast (several roundings, sums in bf16 outputs), against float32:
BF16_MATRIX = 3e-2   # relative Frobenius error of GradMax's matrix (measured: about 1e-2)
BF16_PROFILE = 2e-2  # relative error of each layer's NAGN value
BF16_LOGITS = 5e-2   # relative error of a network's outputs
BF16_LOSS = 1e-2     # relative error of the first training loss
FLOAT32_SAME = 1e-5  # what a function-preserving growth may change in float32 (sum order)


def image_split(n: int = 48) -> Split:
    g = torch.Generator().manual_seed(0)
    X = torch.randint(0, 256, (n + 16, *IMAGE), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n + 16,), generator=g)
    return Split(X[:n], y[:n], X[n:], y[n:])


def vgg() -> VGG:
    torch.manual_seed(0)
    return VGG([[8], [8, 12]], 10, activation=RELU1, input_shape=IMAGE, batch_norm=False)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


class Grown:
    """An observer that keeps a copy of every network the loop attaches it to: the seed
    network, then each grown one right after its growth."""

    def __init__(self):
        self.models = []

    def attach(self, model):
        self.models.append(copy.deepcopy(model))

    def detach(self):
        pass


def test_gradmax_matrix_inside_autocast_is_float32s_to_bf16_precision():
    """Computed inside a bf16 autocast region, GradMax's matrix is bfloat16 and within
    BF16_MATRIX of float32's: usable as an estimate, not for an SVD (which float32 needs).
    The loop's growth step, even when called inside autocast, computes it in float32:
    exactly float32's singular values."""
    model, split = vgg(), image_split()
    site = width_sites(model)[1]
    exact = GradientMatrices(None, "exact", torch.Generator())(model, site, split,
                                                                "cross_entropy")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = GradientMatrices(None, "exact", torch.Generator())(model, site, split,
                                                                  "cross_entropy")
    assert low.dtype == torch.bfloat16
    assert 0 < relative(low, exact) < BF16_MATRIX

    def plan():
        return GrowthPlan(AtIterations(0), GrowToWidths(2.0, 1), GradMax())

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reference = plan()
    grow(model, opt, split, reference)
    inside = plan()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grown, _, _ = grow(model, opt, split, inside)
    assert inside.how.singular_values.keys() == reference.how.singular_values.keys()
    for key, values in reference.how.singular_values.items():
        assert values.dtype == torch.float32
        assert torch.equal(inside.how.singular_values[key], values)
    assert all(p.dtype == torch.float32 for p in grown.parameters())


def test_nagn_profile_of_a_bf16_backward_pass_is_float32s_to_bf16_precision():
    model, split = vgg(), image_split()
    profiles = []
    for dtype in (None, torch.bfloat16):
        observer = NAGNObserver(window=1)
        observer.attach(model)
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(split.X_train), split.y_train)
        loss.float().backward()
        observer.detach()
        profiles.append(observer.nagn())
    exact, low = profiles
    assert ((low - exact).abs() / exact).max() < BF16_PROFILE


@pytest.mark.parametrize("kind", ["width", "depth"])
def test_a_growth_in_a_bf16_run_keeps_the_function(kind):
    """GradMax's widening of a VGG and a zero-branch block appended to a ResNet stage, in a
    run trained under bf16 autocast: right after the growth the network computes what it
    computed before, in float32 (to FLOAT32_SAME) and under autocast (to BF16_LOGITS)."""
    split = image_split()
    if kind == "width":
        model = vgg()
        plan = GrowthPlan(AtIterations(3), GrowToWidths(2.0, 1), GradMax())
    else:
        torch.manual_seed(0)
        model = resnet((1, 1), 10, widths=(4, 6), input_shape=IMAGE)
        plan = GrowthPlan(AtIterations(3), StageOrder([1, 1], [2, 1]),
                          BlockInit("kaiming", preserve=True))
    before, after = [], Grown()
    final, history = train(model, split, iterations=5, lr=0.05, momentum=0.9, batch_size=16,
                           plan=plan, precision="bfloat16", observers=[after],
                           before_growth=lambda m: before.append(copy.deepcopy(m)),
                           progress=False)
    assert len(history.events) == 1 and all(p.dtype == torch.float32
                                            for p in final.parameters())
    old, new = before[0].eval(), after.models[1].eval()
    X = split.X_test
    with torch.no_grad():
        assert relative(new(X), old(X)) < FLOAT32_SAME
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert relative(new(X), old(X)) < BF16_LOGITS


def test_bf16_training_keeps_float32_weights_and_follows_float32():
    runs = {}
    for precision in ("float32", "bfloat16"):
        final, history = train(vgg(), image_split(), iterations=4, lr=0.05, batch_size=16,
                               precision=precision, progress=False)
        runs[precision] = (final, history)
    (_, exact), (low_model, low) = runs["float32"], runs["bfloat16"]
    assert all(p.dtype == torch.float32 for p in low_model.parameters())
    assert all(value.dtype == torch.float32 for value in low.loss)
    first = float(exact.loss[0])
    assert 0 < abs(float(low.loss[0]) - first) / first < BF16_LOSS


def test_float16_with_a_loss_scale_gives_the_step_metrics_true_gradients():
    """The gradient scaler multiplies the loss by 2^16; the step metric (GradMax Fig. 2b's
    gradient norm) reads the unscaled gradient, float32's to fp16 precision."""
    norms = {}
    for precision in ("float32", "float16"):
        _, history = train(vgg(), image_split(), iterations=1, lr=0.05, batch_size=16,
                           precision=precision, progress=False,
                           step_metrics={"grad_norm": driver.gradient_norm})
        norms[precision] = float(history.extra["grad_norm"][0][0])
    assert abs(norms["float16"] - norms["float32"]) / norms["float32"] < BF16_LOSS


def test_a_float16_run_resumes_bit_for_bit_with_its_loss_scale(tmp_path):
    def run(path, kill=None):
        calls = [0]

        def metric(model):
            calls[0] += 1
            if kill is not None and calls[0] > kill:
                raise RuntimeError("killed")
            return torch.zeros(1)
        plan = GrowthPlan(AtIterations(3), GrowToWidths(2.0, 1), GradMax(batch_size=16))
        return train(vgg(), image_split(), iterations=6, lr=0.05, momentum=0.9,
                     batch_size=16, plan=plan, precision="float16", progress=False,
                     step_metrics={"m": metric}, checkpoint=path, checkpoint_every=2)

    reference = run(tmp_path / "a.pt")
    with pytest.raises(RuntimeError, match="killed"):
        run(tmp_path / "b.pt", kill=4)
    assert checkpoint.load(tmp_path / "b.pt")["scaler"]["scale"] == 2.0 ** 16
    resumed = run(tmp_path / "b.pt")
    a, b = checkpoint.tensors(reference[0]), checkpoint.tensors(resumed[0])
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert [float(v) for v in reference[1].loss] == [float(v) for v in resumed[1].loss]


def test_float16_refuses_nagn_and_unknown_precisions_are_refused():
    plan = GrowthPlan(AtIterations(2), NAGN(NAGNObserver(window=2)), KaimingNew())
    with pytest.raises(ValueError, match="bfloat16"):
        train(vgg(), image_split(), iterations=3, lr=0.05, plan=plan, precision="float16",
              progress=False)
    with pytest.raises(ValueError, match="precision must be one of"):
        train(vgg(), image_split(), iterations=3, lr=0.05, precision="half", progress=False)


def test_channels_last_survives_growth_and_follows_the_contiguous_run():
    runs = {}
    for layout in (False, True):
        grown = Grown()
        plan = GrowthPlan(AtIterations(2), GrowToWidths(2.0, 1), GradMax())
        final, history = train(vgg(), image_split(), iterations=4, lr=0.05, batch_size=16,
                               plan=plan, channels_last=layout, observers=[grown],
                               progress=False)
        runs[layout] = (final, history)
    final = runs[True][0]
    convs = [m.weight for m in final.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
               for w in convs)
    losses = [torch.stack(runs[layout][1].loss) for layout in (False, True)]
    assert torch.allclose(losses[0], losses[1], rtol=FLOAT32_SAME)


def test_a_compiled_model_is_compiled_again_after_each_growth():
    """With a backend that counts the graphs it is given: one graph for the seed network
    and one for each of the two grown ones, the losses those of the eager run."""
    graphs = []

    def counting(graph_module, example_inputs):
        graphs.append(tuple(tuple(x.shape) for x in example_inputs
                            if isinstance(x, torch.Tensor)))
        return graph_module.forward

    losses = {}
    for backend in (False, counting):
        plan = GrowthPlan(AtIterations([2, 4]), GrowToWidths(2.0, 2), GradMax())
        _, history = train(vgg(), image_split(), iterations=6, lr=0.05, batch_size=16,
                           plan=plan, compile=backend, progress=False)
        losses[backend] = torch.stack(history.loss)
    assert len(set(graphs)) == 3, graphs
    assert torch.allclose(losses[False], losses[counting], rtol=FLOAT32_SAME)


def test_the_driver_sets_precision_and_layout_by_device():
    conv, dense = vgg(), MLP([4, 5, 3])
    assert driver.gpu_settings({}, "cpu", conv) == {"precision": "float32",
                                                    "channels_last": False, "compile": "none"}
    assert driver.gpu_settings({}, "cuda:0", conv) == {"precision": "bfloat16",
                                                       "channels_last": True,
                                                       "compile": "none"}
    assert driver.gpu_settings({}, "cuda", dense)["precision"] == "float32"
    given = {"precision": "float16", "channels_last": False, "compile": "inductor"}
    assert driver.gpu_settings(given, "cuda", conv) == given


def test_a_driver_run_in_bf16_records_how_it_ran():
    config = {"name": "bf16 vgg", "seeds": [0], "data": {"name": "cifar10"},
              "model": {"name": "vgg", "config": [[4], [4]], "activation": "relu1"},
              "train": {"iterations": 3, "batch_size": 8, "lr": 0.05,
                        "precision": "bfloat16"}}
    g = torch.Generator().manual_seed(0)
    X = torch.randint(0, 256, (24, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (24,), generator=g)
    record = driver.run_experiment(config, split=Split(X[:16], y[:16], X[16:], y[16:]),
                                   save=False, progress=False)
    assert record["execution"] == {"precision": "bfloat16", "channels_last": False,
                                   "compile": "none", "checkpoint_every": None}
    with pytest.raises(Exception, match="precision"):
        driver.validate({**config, "train": {**config["train"], "precision": "fp8"}})
