"""GradMax (growcore.how.width, growcore.stats.gradmax) against closed-form theory and autograd.

* eq. (9)/(11): with zero incoming weights the new units' incoming gradient is ``G^T W_out``;
  the SVD initialisation reaches ``c (sigma_1^2 + ... + sigma_k^2)^(1/2)`` and no random
  orthogonal set of directions of the same norm does better.
* Appendix B: the convolution matrix maps outgoing filters to the incoming-filter gradient that
  autograd computes in the grown network (padding, stride, flatten and pooling included), and
  the auxiliary-kernel construction agrees with it where it is exact (no padding).
"""

import functools

import pytest
import torch
from torch import nn

from growcore.activations import ReLUWithSlopeAtZero
from growcore.data import Split
from growcore.driver import run_experiment
from growcore.how import FireflyOpt, GradMax, GradMaxOpt, Random, Zero
from growcore.losses import LOSSES
from growcore.models.mlp import MLP, teacher
from growcore.models.sites import Proposal, WidthSite, width_sites
from growcore.ops import NewUnits, widen
from growcore.params import ParameterError
from growcore.stats import (
    Probe,
    TargetNorm,
    auxiliary_kernel_matrix,
    collect,
    gradient_matrix,
    incoming_gradient_norm,
)
from growcore.where import FixedSites, GrowToWidths, LargestSingularValue

DTYPE = torch.float64
GRAD_TOL = 1e-9  # relative: two float64 computations of the same gradient
N_RANDOM = 1000  # random directions that GradMax must beat (issue 3)


def _teacher_student(widths_teacher=(8, 6, 4), widths_student=(8, 3, 4), n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, widths_teacher[0], generator=g, dtype=DTYPE)
    y = teacher(list(widths_teacher), g).to(DTYPE)(X)
    torch.manual_seed(seed)
    student = MLP(list(widths_student)).to(DTYPE)
    return student, Split(X, y)


def _incoming_gradient(model, site, k, split, loss="mse"):
    """Autograd: gradient of the loss w.r.t. the new units' incoming weights [k, D]."""
    model.zero_grad()
    LOSSES[loss](model(split.X_train).unsqueeze(0), split.y_train).sum().backward()
    return model.get_submodule(site.producer).weight.grad[-k:].flatten(1)


@pytest.mark.parametrize("k", [1, 2])
def test_svd_gradient_norm_matches_singular_values_and_beats_random(k):
    student, split = _teacher_student()
    site = student.width_sites()[0]
    how = GradMax(loss="mse", norm=TargetNorm(value=0.7))
    grown = widen(student, [Proposal(site, k)], how, Probe(split, "mse")).model
    sigma = how.singular_values[site]
    predicted = 0.7 * sigma[:k].norm()
    measured = _incoming_gradient(grown, site, k, split).norm()
    assert abs(measured - predicted) <= GRAD_TOL * predicted
    G = gradient_matrix(student, site, collect(student, [site], split, "mse")[site])
    # random orthonormal frames at GradMax's norm (for k > 1 the SVD maximises over
    # orthogonal units, Ky Fan; non-orthogonal units may all copy the top direction)
    W = 0.7 * torch.linalg.qr(torch.randn(N_RANDOM, G.shape[0], k, dtype=DTYPE)).Q
    random_norms = (G.T @ W).flatten(1).norm(dim=1)
    assert random_norms.max() <= predicted * (1 + GRAD_TOL)
    # the same formula, checked by autograd on one random draw
    rand = Random(TargetNorm(value=0.7), seed=3)
    new = rand(student, Proposal(site, k), Probe(split, "mse"))
    grown = widen(student, [Proposal(site, k)], lambda *a: new).model
    assert torch.allclose(_incoming_gradient(grown, site, k, split).norm(),
                          incoming_gradient_norm(G, new.outgoing), rtol=GRAD_TOL)


def test_gradmax_opt_does_not_beat_svd():
    student, split = _teacher_student()
    site = student.width_sites()[0]
    svd = GradMax(loss="mse", norm=TargetNorm(value=1.0))
    opt = GradMaxOpt(loss="mse", norm=TargetNorm(value=1.0), steps=50)
    G = gradient_matrix(student, site, collect(student, [site], split, "mse")[site])
    probe = Probe(split, "mse")
    best = incoming_gradient_norm(G, svd(student, Proposal(site, 1), probe).outgoing)
    found = incoming_gradient_norm(G, opt(student, Proposal(site, 1), probe).outgoing)
    assert found <= best * (1 + GRAD_TOL)


def test_pytorch_relu_kills_the_gradient_of_zero_incoming_weights():
    """Why the models use relu1: with relu'(0) = 0, eq. (7) has the factor f'(0) = 0."""
    student, split = _teacher_student()
    site = student.width_sites()[0]
    for activation, vanishes in (("relu", True), ("relu1", False)):
        student.activation = activation
        grown = widen(student, [Proposal(site, 1)], GradMax(loss="mse"),
                      Probe(split, "mse")).model
        assert (_incoming_gradient(grown, site, 1, split).norm() == 0) == vanishes


def test_minibatch_of_all_data_equals_full_statistic():
    student, split = _teacher_student()
    site = student.width_sites()[0]
    full = GradMax(loss="mse").matrix(student, site, split)
    mini = GradMax(loss="mse", batch_size=len(split.y_train)).matrix(student, site, split)
    assert torch.allclose(full, mini, rtol=GRAD_TOL, atol=0)


class TinyConv(nn.Module):
    """conv1 (producer) -> relu1 -> [pool] -> conv2 (stride 2) -> relu1 -> head."""

    def __init__(self, padding=1, stride=2, pool=None, head="flatten"):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=padding, bias=False)
        self.conv2 = nn.Conv2d(3, 4, 3, padding=padding, stride=stride)
        self.pool, self.head_kind = pool, head
        self.f = ReLUWithSlopeAtZero(1.0)
        self.conv3 = nn.Conv2d(4, 2, 1)  # reads conv2's channels (a 1x1 consumer)
        side = self._side()
        self.fc = nn.Linear(2 * (side * side if head == "flatten" else 1), 3)

    def _side(self):
        with torch.no_grad():
            return self._features(torch.zeros(1, 2, 8, 8)).shape[-1]

    def _features(self, x):
        x = self.f(self.conv1(x))
        if self.pool == "avg":
            x = nn.functional.avg_pool2d(x, 2)
        return self.f(self.conv3(self.f(self.conv2(x))))

    def forward(self, x):
        x = self._features(x)
        x = x.flatten(1) if self.head_kind == "flatten" else x.mean(dim=(2, 3))
        return self.fc(x)

    def width_sites(self):
        spatial = self.fc.in_features // 2
        return [WidthSite("conv1", None, "conv2"), WidthSite("conv2", None, "conv3"),
                WidthSite("conv3", None, "fc", spatial)]


CONV_CASES = {
    "padding, stride": {"padding": 1, "stride": 2},
    "no padding": {"padding": 0, "stride": 1},
    "average pooling": {"padding": 1, "stride": 1, "pool": "avg"},
    "global average head": {"padding": 1, "stride": 2, "head": "mean"},
}


@pytest.mark.parametrize("case", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_conv_matrix_matches_brute_force_gradient(case):
    torch.manual_seed(0)
    net = TinyConv(**case).to(DTYPE)
    X = torch.randn(5, 2, 8, 8, dtype=DTYPE)
    split = Split(X, torch.randn(5, 3, dtype=DTYPE))
    for site in net.width_sites():
        G = gradient_matrix(net, site, collect(net, [site], split, "mse")[site])
        new = Random(TargetNorm(value=1.0), seed=1)(net, Proposal(site, 2))
        grown = widen(net, [Proposal(site, 2)], lambda *a, new=new: new).model
        autograd = _incoming_gradient(grown, site, 2, split)
        o, k, R = new.outgoing.shape
        predicted = (G.T @ new.outgoing.permute(0, 2, 1).reshape(o * R, k)).T
        assert torch.allclose(autograd, predicted, rtol=1e-8, atol=1e-12), site


def test_auxiliary_kernel_equals_exact_matrix_without_padding():
    torch.manual_seed(0)
    net = TinyConv(padding=0, stride=1).to(DTYPE)
    X = torch.randn(5, 2, 8, 8, dtype=DTYPE)
    split = Split(X, torch.randn(5, 3, dtype=DTYPE))
    site = net.width_sites()[0]
    data = collect(net, [site], split, "mse")[site]
    assert auxiliary_kernel_matrix(net, site, data).shape == (4 * 9, 2 * 9)
    assert torch.allclose(auxiliary_kernel_matrix(net, site, data),
                          gradient_matrix(net, site, data), rtol=1e-10, atol=1e-14)


def test_auxiliary_kernel_falls_back_to_the_exact_matrix_across_pooling():
    torch.manual_seed(0)
    net = TinyConv(padding=0, stride=1, pool="avg").to(DTYPE)
    X = torch.randn(5, 2, 8, 8, dtype=DTYPE)
    split = Split(X, torch.randn(5, 3, dtype=DTYPE))
    site = net.width_sites()[0]  # conv1 -> average pooling -> conv2
    data = collect(net, [site], split, "mse")[site]
    with pytest.raises(ValueError, match="no pooling between them"):
        auxiliary_kernel_matrix(net, site, data)
    exact, auxiliary = GradMax(loss="mse"), GradMax(loss="mse", conv_matrix="auxiliary")
    assert torch.equal(auxiliary.matrix(net, site, split), exact.matrix(net, site, split))


def test_every_initialiser_keeps_the_function_except_firefly_by_epsilon():
    student, split = _teacher_student()
    site = student.width_sites()[0]
    before = student(split.X_train)
    for how in (GradMax(loss="mse"), GradMaxOpt(loss="mse", steps=5), Random(), Zero(),
                GradMaxOpt(loss="mse", steps=5, inverse=True), Random(inverse=True)):
        grown = widen(student, [Proposal(site, 2)], how, Probe(split, "mse")).model
        # equal up to float64 rounding: the wider matmul may sum in another order
        assert torch.allclose(grown(split.X_train), before, rtol=1e-12, atol=1e-14), \
            type(how).__name__
    firefly = FireflyOpt(loss="mse", batch_size=50, epsilon=1e-4, steps=5)
    new = firefly(student, Proposal(site, 2), Probe(split, "mse"))
    assert torch.allclose(new.outgoing.norm(dim=(0, 2)), torch.full((2,), 1e-4, dtype=DTYPE))
    grown = widen(student, [Proposal(site, 2)], lambda *a: new).model
    loss = LOSSES["mse"]
    assert loss(grown(split.X_train)[None], split.y_train) < loss(before[None], split.y_train)


def test_where_criteria():
    student, split = _teacher_student(widths_student=(8, 3, 3, 4))
    probe = Probe(split, "mse")
    sites, info = LargestSingularValue(k=2, loss="mse")(student, width_sites(student), probe)
    assert len(sites) == 1 and sites[0].amount == 2
    assert info["chosen"][0] == max(info["scores"], key=info["scores"].get)
    grow = GrowToWidths(factor=3, growths=2)
    for _ in range(3):  # a third call adds nothing: the target is reached
        sites, _ = grow(student, width_sites(student), probe)
        student = widen(student, sites, Zero()).model
    assert student.widths == [8, 9, 9, 4]
    sites, _ = FixedSites({"layers.1": 2})(student, width_sites(student), probe)
    assert sites == [Proposal(student.width_sites()[1], 2)]


def test_new_units_layout_for_conv():
    net = TinyConv().to(DTYPE)
    site = net.width_sites()[0]
    new = NewUnits(torch.arange(18.0, dtype=DTYPE).view(1, 18),
                   torch.arange(36.0, dtype=DTYPE).view(4, 1, 9))
    grown = widen(net, [Proposal(site, 1)], lambda *a: new).model
    assert torch.equal(grown.conv1.weight[3].flatten(), new.incoming[0])
    assert torch.equal(grown.conv2.weight[:, 3].flatten(1), new.outgoing[:, 0])


def _image_parameters(**overrides):
    from growcore.chapters import gradmax as chapter
    from growcore.runner import notebook_parameters

    tiny = {"cifar_seeds": 1, "cifar_width": 0.25, "cifar_factor": 2.0, "cifar_train": 0,
            "cifar_test": 0, "cifar_steps": 4, "cifar_first_growth": 1, "cifar_interval": 1,
            "cifar_growths": 2, "cifar_batch_size": 4, "image_size": 16, "progress": False}
    return chapter.validate(notebook_parameters("gradmax", **{**tiny, **overrides}))


@pytest.mark.parametrize("dataset, classes", [("cifar100", 100), ("imagenet", 3)])
def test_image_runs_on_generated_cifar100_and_imagenet(tmp_path, dataset, classes):
    from test_images import write_cifar100, write_image_folder

    from growcore.chapters import gradmax as chapter

    root = tmp_path / dataset
    if dataset == "cifar100":
        write_cifar100(root, n_train=8, n_test=4)
    else:
        write_image_folder(root, classes=("n01", "n02", "n03"), per_class=4)
    p = _image_parameters(image_dataset=dataset, data_root=str(root),
                          cifar_models=["mobilenet_v1"])
    images, about = chapter.load_images(p)
    assert len(about["classes"]) == classes
    assert images.X_train.shape[2:] == ((16, 16) if dataset == "imagenet" else (32, 32))
    config = chapter.cifar_experiments(p)["mobilenet_v1 GradMax"]
    record = run_experiment(config, split=images, directory=tmp_path, progress=False,
                            device="cpu")
    n_params = record["metrics"]["n_params"][0]
    assert len(record["metrics"]["events"]) == 2 and n_params[-1] > n_params[0]
    assert 0 <= record["metrics"]["final_test"][0] <= 1
    assert record["config"]["data"]["name"] == dataset and chapter.method_of(record) == "GradMax"
    assert list(tmp_path.glob("mobilenet_v1 GradMax--*.json")), "the record is written"


def _teacher_student_run(method: str, tmp_path) -> dict:
    from growcore.chapters import gradmax as chapter

    config = chapter.ts_config(method, [6, 4, 3], 2, interval=3, steps=12, seeds=[0, 1],
                               growths=2, n_points=40, opt_steps=3)
    return run_experiment({**config, "name": f"tiny {method}"}, directory=tmp_path,
                          progress=False, device="cpu", keep_models=True)


def test_teacher_student_runs_keep_the_models_that_figs_2a_and_2c_grow_from(tmp_path):
    import numpy as np

    from growcore.chapters import gradmax as chapter

    record = _teacher_student_run("Random", tmp_path)
    metrics = record["metrics"]
    # one model per growth (at steps 3 and 6), before it: hidden widths 2 and 3, final 4
    assert [[m.widths for m in models] for models in record["models_at_growth"]] == [
        [[6, 2, 3], [6, 3, 3]]] * 2
    assert [m["widths"]["layers.0"] for m in metrics["final_model"]] == [4, 4]
    assert [e["seeds"] for e in metrics["events"]] == [[0], [0], [1], [1]]
    assert all(len(row) == 12 for key in ("loss", "test_error", "grad_norm")
               for row in metrics[key])
    fig2a = chapter.fig2a(record, repeats=2, norm_scale=0.5, opt_steps=3)
    assert np.shape(fig2a["GradMax"]) == (2, 2) and np.shape(fig2a["Random"]) == (2, 2, 2)
    assert np.shape(chapter.fig2c(record, steps=4, norm_scale=0.5, lr=0.1)) == (2, 2, 4)
    # every method of a seed starts from the same teacher, data and student; the seeds differ
    static = _teacher_student_run("Baseline-Small", tmp_path)["metrics"]["loss"]
    assert [row[:3] for row in static] == [row[:3] for row in metrics["loss"]]
    assert static[0][0] != static[1][0]


def test_image_parameters_that_do_not_fit_stop_before_compute(tmp_path):
    with pytest.raises(ParameterError, match=r"parameter 'cifar_models'.*valid: \['mobilenet_v1'"):
        _image_parameters(image_dataset="imagenet", data_root=str(tmp_path),
                          cifar_models=["vgg11"])
    with pytest.raises(ParameterError, match="parameter 'data_root': no cifar100 folder at"):
        _image_parameters(image_dataset="cifar100", data_root=str(tmp_path / "absent"),
                          cifar_models=["wrn28"])


def test_epsilon_sides_follow_the_public_code_or_the_paper():
    """Issue 11, item 1: by default epsilon is on the incoming side (0, the public code's
    grow_epsilon) with the configs' outgoing scale (VGG 'fixed' 0.5 per unit, WRN and
    MobileNet 0.5 x the mean norm); the paper's sentence (outgoing norm epsilon) is one
    parameter away and, with cifar_both_sides, runs beside it under its own name. The
    outgoing-side configuration is the earlier chapter's (its records stay reproducible)."""
    from growcore.chapters import gradmax as chapter

    p = _image_parameters(cifar_models=["vgg11"], cifar_epsilon=1e-4)
    assert p["cifar_epsilon_side"] == "incoming" and p["cifar_both_sides"]
    assert chapter.cifar_how("GradMax", p, "vgg11") == {"name": "gradmax", "batch_size": 4,
                                                         "value": 0.5}
    assert chapter.cifar_how("Random", p, "wrn28") == {"name": "random", "scale": 0.5}
    assert chapter.cifar_how("GradMax", p, "vgg11", "outgoing") == {
        "name": "gradmax", "batch_size": 4, "value": 1e-4}  # as before issue 11
    assert chapter.cifar_how("Firefly-Opt", p, "vgg11", "incoming") == chapter.cifar_how(
        "Firefly-Opt", p, "vgg11", "outgoing")
    assert chapter.cifar_how("GradMax", {**p, "cifar_statistics": "virtual"}, "vgg11")[
        "statistics"] == "virtual"
    runs = chapter.cifar_experiments(p)
    assert set(runs) == {f"vgg11 {m}" for m in chapter.CIFAR_METHODS} | {
        "vgg11 Random [epsilon outgoing]", "vgg11 GradMax [epsilon outgoing]"}
    paper = runs["vgg11 GradMax [epsilon outgoing]"]
    assert paper["plan"]["how"] == {"name": "gradmax", "batch_size": 4, "value": 1e-4}
    assert chapter.paper_method(chapter.method_of(paper)) == "GradMax"
    flipped = chapter.cifar_experiments({**p, "cifar_epsilon_side": "outgoing"})
    assert flipped["vgg11 GradMax"]["plan"]["how"]["value"] == 1e-4
    assert flipped["vgg11 GradMax [epsilon incoming]"]["plan"]["how"]["value"] == 0.5
    assert set(chapter.cifar_experiments({**p, "cifar_both_sides": False})) == {
        f"vgg11 {m}" for m in chapter.CIFAR_METHODS}
    assert chapter.side_norm("vgg11", "outgoing", p) == TargetNorm(value=1e-4)


def test_teacher_student_pairs_random_and_gradmax_over_many_batched_seeds():
    from growcore.chapters import gradmax as chapter
    from growcore.runner import notebook_parameters

    p = chapter.validate(notebook_parameters("gradmax", n_seeds=5, ts_paired_seeds=100))
    runs = chapter.ts_experiments(p)
    for size in ("small", "large"):
        for method in chapter.TS_METHODS:
            config = runs[f"{size} {method}"]
            paired = method in chapter.PAIRED_METHODS
            assert config["seeds"] == list(range(100 if paired else 5))
            assert config["model"].get("seed_batched", False) is paired
    assert runs["public GradMax"]["seeds"] == list(range(5))


def test_site_report_measures_what_theory_predicts():
    """On a small VGG11 with train-mode BatchNorm: the new units' incoming gradient is
    linear in their outgoing norm (the two epsilon sides differ by the ratio of the norms),
    the used directions reach at most the best gradient norm, and the exact statistic is
    aligned with itself (alignment 1, fraction 1)."""
    from growcore.chapters import gradmax as chapter
    from growcore.models.vgg import vgg11

    torch.manual_seed(0)
    relu1 = functools.partial(ReLUWithSlopeAtZero, 1.0)
    model = vgg11(0.0625, 10, batch_norm=True, activation=relu1).to(DTYPE)
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randn(8, 3, 32, 32, generator=g, dtype=DTYPE),
                  torch.randint(0, 10, (8,), generator=g))
    proposals = GrowToWidths(2.0, 2)(model, width_sites(model))[0]
    sides = {"incoming": TargetNorm(value=0.5), "outgoing": TargetNorm(value=1e-4)}
    rows = chapter.site_report(model, split, proposals, sides)
    assert len(rows) == 8 and sum(r["pooling"] for r in rows) == 5  # 4 stage ends, the head
    for row in rows:
        ratio = row["gradient incoming"] / row["gradient outgoing"]
        assert ratio == pytest.approx(0.5 / 1e-4, rel=1e-6), row["site"]
        assert 0 <= row["alignment"] <= 1 + 1e-9 and 0 < row["fraction"] <= 1 + 1e-9
    assert min(r["fraction"] for r in rows if r["pooling"]) < 1 - 1e-3  # pass-through misses
    exact = chapter.site_report(model, split, proposals[:2], sides, statistics="virtual")
    assert all(r["alignment"] == pytest.approx(1) and r["fraction"] == pytest.approx(1)
               for r in exact)
