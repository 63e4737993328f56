"""Depth growth of staged networks: copies, He initialisation, function preservation, moment
growth, growth order, optimiser state, and the whole loop with a FRAGrow plan."""

import pytest
import torch

from growcore.data import Split
from growcore.how import BlockInit
from growcore.models.mobilenet import MobileNetV2
from growcore.models.resnet import resnet
from growcore.models.sites import Proposal, depth_sites
from growcore.models.staged import depths, is_shape_preserving
from growcore.models.vgg import vgg_staged
from growcore.ops import GrowThenCosine, insert_modules, make_optimizer, rebuild_optimizer
from growcore.plan import GrowthPlan
from growcore.stats import MomentTracker
from growcore.train import train
from growcore.when import FRAGrow
from growcore.where import StageOrder

PRESERVED = 1e-5  # float32 forward passes of the same function through more modules
HE_STD = 0.05  # relative error of a sample standard deviation over > 1000 weights
SMALL_RESNET = (4, 8, 8, 8)
SMALL_VGG = (4, 8, 8, 8, 8)


def at_stage_ends(model, stages):
    """Proposals of one block appended to stage ``s`` for every ``s`` of ``stages`` (a stage
    may repeat): the model's depth site at the end of each stage."""
    sites = {site.container: site for site in depth_sites(model)}
    return [Proposal(sites[f"stages.{s}"]) for s in stages]


def images(n=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=generator, dtype=torch.uint8)


@pytest.mark.parametrize("build", [
    lambda: resnet((1, 2, 1, 1), widths=SMALL_RESNET),
    lambda: MobileNetV2((1, 1, 2, 1, 1), width=0.25),
], ids=["resnet", "mobilenetv2"])
@pytest.mark.parametrize("mode", ["copy", "kaiming"])
@pytest.mark.parametrize("training", [True, False])
def test_preserve_keeps_the_function(build, mode, training):
    torch.manual_seed(0)
    model = build()
    model.train(training)
    X = images()
    before = model(X)
    grown = insert_modules(model, at_stage_ends(model, range(len(model.stages))),
                           BlockInit(mode, preserve=True))
    grown.model.train(training)
    assert depths(grown.model) == [d + 1 for d in depths(model)]
    assert torch.allclose(grown.model(X), before, atol=PRESERVED, rtol=PRESERVED)


def test_preserve_refuses_plain_blocks():
    model = vgg_staged((1, 1, 1, 1, 2), widths=SMALL_VGG)
    with pytest.raises(ValueError, match="residual"):
        insert_modules(model, at_stage_ends(model, [4]), BlockInit(preserve=True))


def test_copy_after_a_plain_block_and_he_after_a_downsampling_one():
    torch.manual_seed(0)
    model = resnet((1, 2, 1, 1), widths=(16, 64, 64, 64))
    assert not is_shape_preserving(model.stages[1][0])
    assert is_shape_preserving(model.stages[1][1])
    grown = insert_modules(model, at_stage_ends(model, [1, 2]), BlockInit("copy")).model
    copied, template = grown.stages[1][2], model.stages[1][1]
    for (name, new), (_, old) in zip(copied.named_parameters(), template.named_parameters()):
        assert torch.equal(new, old), name
    fresh = grown.stages[2][1].conv1.weight         # stage 2 had only its stride-2 block
    he_std = (2 / (fresh.shape[0] * 9)) ** 0.5       # kaiming_normal_, fan-out, ReLU gain
    assert fresh.std().item() == pytest.approx(he_std, rel=HE_STD)
    assert model.stages[1][1] is template and len(model.stages[1]) == 2  # input unchanged


def test_moment_growth_copies_the_moving_average():
    torch.manual_seed(0)
    model = vgg_staged((1, 2, 1, 1, 1), widths=SMALL_VGG)
    tracker = MomentTracker(decay=0.5)
    tracker.attach(model)
    weight = model.stages[1][1].conv.weight
    values = []
    for step in range(3):
        with torch.no_grad():
            weight.fill_(float(step))
        values.append(float(step))
        model(images(2)).sum().backward()       # training forward: one update of the average
    with torch.no_grad():
        model(images(2))                         # no grad: not an update
    tracker.detach()
    expected = 0.5 * (0.5 * values[0] + 0.5 * values[1]) + 0.5 * values[2]  # 1.25
    average = tracker.ema["stages.1.1.conv.weight"]
    assert torch.allclose(average, torch.full_like(average, expected))
    grown = insert_modules(model, at_stage_ends(model, [1]),
                           BlockInit("moment", tracker=tracker)).model
    assert torch.allclose(grown.stages[1][2].conv.weight, average)


def test_optimizer_state_is_carried():
    torch.manual_seed(0)
    model = resnet((1, 2, 1, 1), widths=SMALL_RESNET)
    opt = make_optimizer("sgd", model.parameters(), 0.1, momentum=0.9)
    model(images()).logsumexp(1).mean().backward()
    opt.step()
    growth = insert_modules(model, at_stage_ends(model, [1]), BlockInit())
    new_opt = rebuild_optimizer(opt, model, growth, lr=0.1)
    old = dict(model.named_parameters())
    for name, param in growth.model.named_parameters():
        if growth.status(name) == "new":
            assert param not in new_opt.state
        else:
            assert torch.equal(new_opt.state[param]["momentum_buffer"],
                               opt.state[old[name]]["momentum_buffer"])
    assert sum(growth.status(n) == "new" for n, _ in growth.model.named_parameters()) == 6


def test_stage_orders():
    seed, target = [1, 1, 1, 1, 2], [2, 2, 4, 4, 4]

    def sequence(order, per_growth="one"):
        where, current, out = StageOrder(seed, target, order, per_growth), list(seed), []
        while sites := where.sites(current):
            out.append(sites)
            for s in sites:
                current[s] += 1
        assert current == target
        return out

    assert StageOrder(seed, target).n_blocks == 10
    def flat(steps):
        return [s for step in steps for s in step]

    assert flat(sequence("stagewise")) == [0, 1, 2, 2, 2, 3, 3, 3, 4, 4]
    assert flat(sequence("circulating")) == [0, 1, 2, 3, 4, 2, 3, 4, 2, 3]
    assert sequence("stagewise", "double") == [[0, 1, 2, 3, 4, 4], [2, 2, 3, 3]]
    resnet_double = StageOrder([2] * 4, [8] * 4, per_growth="double")
    assert [len(s) for s in [resnet_double.sites([2] * 4), resnet_double.sites([4] * 4)]] == [
        8, 16]


def test_the_loop_grows_a_vgg_to_its_target_with_fragrow():
    torch.manual_seed(0)
    n, batch, epochs = 32, 16, 6
    labels = torch.arange(n) % 10
    split = Split(images(n), labels, X_val=images(16, seed=1), y_val=labels[:16])
    where = StageOrder([1, 1, 1, 1, 1], [1, 1, 2, 1, 2])
    ipe = n // batch
    plan = GrowthPlan(FRAGrow(ipe, where.n_blocks, epochs, finetune_min=2), where,
                      BlockInit())
    model, history = train(vgg_staged((1, 1, 1, 1, 1), widths=SMALL_VGG), split,
                           iterations=epochs * ipe, lr=0.05, momentum=0.9, batch_size=batch,
                           plan=plan, eval_every=ipe, progress=False,
                           lr_schedule=GrowThenCosine(epochs * ipe, where.n_blocks))
    assert depths(model) == [1, 1, 2, 1, 2]
    assert [e["stages"] for e in history.events] == [[2], [4]]
    assert max(e["iteration"] for e in history.events) <= (epochs - 2) * ipe
    assert history.lr[-1] < history.lr[0]
