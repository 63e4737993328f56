"""Width growth (growcore.ops.widen): function preservation of every widening, in train and eval
mode, and the optimiser state carried across it."""

import pytest
import torch
from torch import nn

from growcore.activations import ReLUWithSlopeAtZero
from growcore.how import Random
from growcore.models.mlp import MLP
from growcore.models.sites import Proposal, WidthSite, check_width_sites
from growcore.ops import NewUnits, make_optimizer, rebuild_optimizer, widen
from growcore.stats import TargetNorm

PRESERVE_TOL = 1e-12  # float64: a function-preserving widening changes outputs by rounding only
DTYPE = torch.float64


class ConvNet(nn.Module):
    """conv -> BN -> relu1 -> conv (stride 2) -> BN -> relu1 -> flatten -> linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1, stride=2)
        self.bn2 = nn.BatchNorm2d(5)
        self.fc = nn.Linear(5 * 4 * 4, 3)
        self.f = ReLUWithSlopeAtZero(1.0)

    def forward(self, x):
        x = self.f(self.bn1(self.conv1(x)))
        x = self.f(self.bn2(self.conv2(x)))
        return self.fc(x.flatten(1))

    def width_sites(self):
        return [WidthSite("conv1", "bn1", "conv2"), WidthSite("conv2", "bn2", "fc", spatial=16)]


def _conv_net():
    torch.manual_seed(0)
    net = ConvNet().to(DTYPE)
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        for bn in (net.bn1, net.bn2):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 2)
            bn.bias.uniform_(-1, 1)
    return net


def _inputs():
    return torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=DTYPE)


HOWS = {"incoming zero": Random(TargetNorm(value=1.0)),
        "outgoing zero (inverse)": Random(TargetNorm(value=1.0), inverse=True)}


@pytest.mark.parametrize("how", HOWS.values(), ids=HOWS.keys())
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("which", [[0], [1], [0, 1]], ids=["conv-bn-conv", "conv-flatten-linear",
                                                             "both at once"])
def test_conv_widening_preserves_function(how, mode, which):
    net = _conv_net()
    getattr(net, mode)()
    X = _inputs()
    before = net(X).detach()
    sites = net.width_sites()
    growth = widen(net, [Proposal(sites[i], 2 + i) for i in which], how)
    grown = growth.model
    getattr(grown, mode)()
    check_width_sites(grown)
    for name in ("bn1", "bn2"):
        bn, old = grown.get_submodule(name), net.get_submodule(name)
        new = slice(old.num_features, None)
        assert torch.equal(bn.running_var[new], torch.ones_like(bn.running_var[new]))
        assert torch.equal(bn.running_mean[new], torch.zeros_like(bn.running_mean[new]))
        assert torch.equal(bn.weight[new], torch.ones_like(bn.weight[new]))
        assert torch.equal(bn.bias[new], torch.zeros_like(bn.bias[new]))
    assert (grown(X).detach() - before).abs().max() < PRESERVE_TOL
    assert net.conv1.out_channels == 4, "the old model is unchanged"


@pytest.mark.parametrize("how", HOWS.values(), ids=HOWS.keys())
def test_dense_widening_preserves_function_at_every_site(how):
    torch.manual_seed(0)
    net = MLP([6, 4, 5, 3], bias=True).to(DTYPE)
    X = torch.randn(20, 6, dtype=DTYPE)
    sites = net.width_sites()
    grown = widen(net, [Proposal(sites[0], 3), Proposal(sites[1], 2)], how).model
    assert grown.widths == [6, 7, 7, 3]
    assert (grown(X) - net(X)).abs().max() < PRESERVE_TOL


def test_new_weights_land_where_the_layout_says():
    net = MLP([3, 2, 4]).to(DTYPE)
    site = net.width_sites()[0]
    incoming = torch.arange(3.0, dtype=DTYPE).view(1, 3)
    outgoing = torch.arange(4.0, dtype=DTYPE).view(4, 1, 1)
    grown = widen(net, [Proposal(site, 1)], lambda *args: NewUnits(incoming, outgoing)).model
    assert torch.equal(grown.layers[0].weight[2], incoming[0])
    assert torch.equal(grown.layers[1].weight[:, 2], outgoing[:, 0, 0])


def test_wrong_initialiser_shapes_are_refused():
    net = MLP([3, 2, 4])
    bad = NewUnits(torch.zeros(1, 2), torch.zeros(4, 1, 1))
    with pytest.raises(ValueError, match="incoming \\[1, 3\\]"):
        widen(net, [Proposal(net.width_sites()[0], 1)], lambda *args: bad)


def _train_steps(net, opt, X, steps=3):
    for _ in range(steps):
        opt.zero_grad()
        net(X).pow(2).mean().backward()
        opt.step()


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_optimiser_state_is_carried(optimizer):
    net = _conv_net()
    X = _inputs()
    opt = make_optimizer(optimizer, net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    _train_steps(net, opt, X)
    growth = widen(net, [Proposal(s, 2) for s in net.width_sites()], HOWS["incoming zero"])
    new_opt = rebuild_optimizer(opt, net, growth)
    old_params = dict(net.named_parameters())
    new_params = dict(growth.model.named_parameters())
    assert growth.status("conv2.weight") == "extended" and growth.status("fc.bias") == "old"
    for name, param in new_params.items():
        old_state = opt.state[old_params[name]]
        state = new_opt.state[param]
        for key, value in old_state.items():
            if not (torch.is_tensor(value) and value.dim() > 0):
                assert torch.equal(state[key], value), f"{key} of {name} kept"
                continue
            block = tuple(slice(0, n) for n in value.shape)
            assert torch.equal(state[key][block], value), f"old entries of {key} of {name}"
            rest = state[key].clone()
            rest[block] = 0
            assert not rest.any(), f"new entries of {key} of {name} start at zero"
    _train_steps(growth.model, new_opt, X, steps=1)  # the carried state is usable


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_mobilenet_widening_through_depthwise_preserves_function(mode):
    from growcore.models.mobilenet import MobileNetV1

    torch.manual_seed(0)
    net = MobileNetV1(0.125, num_classes=5, stem="cifar", input_shape=(3, 16, 16),
                      activation=lambda: ReLUWithSlopeAtZero(1.0)).to(DTYPE)
    getattr(net.train(), mode)()
    X = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    before = net(X).detach()
    grown = widen(net, [Proposal(s, 2) for s in net.width_sites()], HOWS["incoming zero"]).model
    getattr(grown, mode)()
    check_width_sites(grown)
    assert (grown(X).detach() - before).abs().max() < PRESERVE_TOL
