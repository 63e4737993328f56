"""Seed-batched feedforward and residual networks of the SensLI paper.

Every parameter carries a leading *seed* dimension ``S``: the model holds S independent
networks, one per random seed, and evaluates them as one batched tensor program (``bmm``).
On a CPU this is several times faster than a loop over seeds, and because each seed's
network is initialised from its own generator and its slice of every tensor is computed
independently, a batched run reproduces the runs one seed at a time.

A network is a list of *layers*; a layer is a small dict of tensors (``W``, ``b``, ...).
Growth operators (:mod:`growcore.ops`) work on these lists seed by seed and stack the
result, so different seeds may insert at different positions as long as the resulting
shapes agree.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from growcore.activations import ACTIVATIONS
from growcore.models.sites import DepthSite, WidthSite

Layer = dict[str, torch.Tensor]


def default_uniform(shape: tuple[int, ...], fan_in: int, generator: torch.Generator,
                    dtype: torch.dtype) -> torch.Tensor:
    """PyTorch's default ``nn.Linear`` initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * bound


class SeedBatchedNet(nn.Module):
    """Base class: a stack of named layers, each tensor of shape ``[S, ...]``.

    Subclasses define ``layer_groups`` (the names of the layer lists, in forward order),
    ``forward`` and the insertion hooks used by :func:`growcore.ops.insert_layers`.
    """

    def __init__(self, groups: dict[str, list[Layer]], seeds: list[int], activation: str):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.seeds = list(seeds)
        self.activation = activation
        self.sigma = ACTIVATIONS[activation]
        for group, layers in groups.items():
            setattr(self, group, nn.ModuleList(_as_module(layer) for layer in layers))

    # -- structure -----------------------------------------------------------------------
    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def layers(self, group: str) -> list[Layer]:
        """The layers of ``group`` as plain dicts of (detached) tensors."""
        return [{k: p.detach() for k, p in m.named_parameters()} for m in getattr(self, group)]

    def groups(self) -> dict[str, list[Layer]]:
        return {group: self.layers(group) for group in self.layer_groups}

    def num_parameters(self) -> int:
        """Trainable parameters of one seed's network."""
        return sum(p[0].numel() for p in self.parameters())

    def widths(self) -> list[int]:
        """Widths ``h_1..h_L`` of the hidden layers."""
        raise NotImplementedError

    def insertion_positions(self) -> list[int]:
        """Positions ``k`` (insert after hidden layer k, 1-based) where a layer may go."""
        raise NotImplementedError

    def spec(self) -> dict:
        """A JSON-able description of the architecture."""
        return {"kind": self.kind, "widths": self.widths(), "activation": self.activation,
                "in_features": self.in_features, "out_features": self.out_features}

    def like(self, groups: dict[str, list[Layer]]) -> SeedBatchedNet:
        """A model of the same class and seeds with new layer lists."""
        return type(self)(groups, self.seeds, self.activation)

    # -- cost ----------------------------------------------------------------------------
    def flops_per_example(self) -> int:
        """Forward floating-point operations for one example of one seed (2 per multiply-add)."""
        return sum(2 * p[0].numel() for name, p in self.named_parameters() if name.endswith("W"))


def _as_module(layer: Layer) -> nn.Module:
    module = nn.Module()
    for name, tensor in layer.items():
        module.register_parameter(name, nn.Parameter(tensor.clone()))
    return module


def _linear(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """Seed-batched affine map: x [S, N, in], W [S, out, in], b [S, out] -> [S, N, out]."""
    if b is None:
        return torch.bmm(x, W.transpose(1, 2))
    return torch.baddbmm(b.unsqueeze(1), x, W.transpose(1, 2))


def _seed_inputs(x: torch.Tensor, n_seeds: int) -> torch.Tensor:
    """Inputs shared by all seeds ([N, d]) or given per seed ([S, N, d]) -> [S, N, d]."""
    return x.expand(n_seeds, *x.shape) if x.dim() == 2 else x


class SeedBatchedFNN(SeedBatchedNet):
    """Feedforward network of SensLI eq. (2.2): ``x^k = sigma(W^k x^{k-1} + b^k)``, linear output.

    Layer groups: ``hidden`` (L layers with ``W`` [S, h_k, h_{k-1}] and ``b`` [S, h_k]) and
    ``output`` (one layer with ``W`` and ``b``).
    """

    kind = "fnn"
    layer_groups = ("hidden", "output")

    @classmethod
    def initial(cls, widths: list[int], seeds: list[int], in_features: int = 2,
                out_features: int = 2, activation: str = "relu",
                dtype: torch.dtype = torch.float32) -> SeedBatchedFNN:
        """S networks with PyTorch's default initialisation, seed ``s`` from its own generator."""
        _check_widths(widths)
        sizes = [in_features, *widths, out_features]
        per_seed = []
        for seed in seeds:
            g = torch.Generator().manual_seed(int(seed))
            per_seed.append([{"W": default_uniform((o, i), i, g, dtype),
                              "b": default_uniform((o,), i, g, dtype)}
                             for i, o in itertools.pairwise(sizes)])
        layers = stack_seeds(per_seed)
        return cls({"hidden": layers[:-1], "output": layers[-1:]}, seeds, activation)

    @property
    def in_features(self) -> int:
        return self.hidden[0].W.shape[2] if len(self.hidden) else self.output[0].W.shape[2]

    @property
    def out_features(self) -> int:
        return self.output[0].W.shape[1]

    def widths(self) -> list[int]:
        return [layer.W.shape[1] for layer in self.hidden]

    def insertion_positions(self) -> list[int]:
        # SensLI eq. (2.6): the identity layer reproduces x^k only if x^k >= 0, i.e. after a
        # ReLU hidden layer, so k runs over the hidden layers 1..L.
        return list(range(1, len(self.hidden) + 1))

    def width_sites(self) -> list[WidthSite]:
        """Every hidden layer, named as in each seed's :meth:`seed_module` (``layers.k``
        produces, ``layers.k+1`` consumes; ``layers.k`` is ``hidden.k`` here): width growth
        works seed by seed on those MLPs (:func:`growcore.ops.widen_seeds`), where these
        names are module paths."""
        return [WidthSite(f"layers.{k}", None, f"layers.{k + 1}")
                for k in range(len(self.hidden))]

    def growth_sites(self) -> list:
        """Width sites, then a plain depth site after every hidden layer (SensLI's
        positions ``k``)."""
        return [*self.width_sites(),
                *(DepthSite("hidden", self.insertion_index(k), "plain", self.width_at(k),
                            activation=self.activation, position=k)
                  for k in self.insertion_positions())]

    def seed_module(self, i: int):
        """Seed ``i``'s network as a :class:`growcore.models.mlp.MLP` with biases (the same
        function; ``hidden.k`` is its ``layers.k``, ``output.0`` its last layer)."""
        from growcore.models.mlp import MLP

        layers = [*self.hidden, *self.output]
        net = MLP([self.in_features, *self.widths(), self.out_features], self.activation,
                  bias=True).to(layers[0].W.dtype)
        with torch.no_grad():
            for linear, layer in zip(net.layers, layers):
                linear.weight.copy_(layer.W[i])
                linear.bias.copy_(layer.b[i])
        return net

    def from_seed_modules(self, nets: list) -> SeedBatchedFNN:
        """The seed-batched net of one MLP per seed (as :meth:`seed_module` gives them)."""
        layers = stack_seeds([[{"W": linear.weight.detach(), "b": linear.bias.detach()}
                               for linear in net.layers] for net in nets])
        return self.like({"hidden": layers[:-1], "output": layers[-1:]})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every seed: x [N, d] or [S, N, d] -> [S, N, c]."""
        x = _seed_inputs(x, self.n_seeds)
        for layer in self.hidden:
            x = self.sigma(_linear(x, layer.W, layer.b))
        out = self.output[0]
        return _linear(x, out.W, out.b)

    def hidden_states(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[x^0, x^1, ..., x^L]`` for every seed (each [S, N, h_k])."""
        states = [_seed_inputs(x, self.n_seeds)]
        for layer in self.hidden:
            states.append(self.sigma(_linear(states[-1], layer.W, layer.b)))
        return states

    # -- insertion hooks (growcore.ops.insert_layers) --------------------------------------
    insertion_group = "hidden"

    def insertion_index(self, k: int) -> int:
        """List index in ``hidden`` at which a layer inserted after hidden layer k goes."""
        return k

    def width_at(self, k: int) -> int:
        return self.widths()[k - 1]

    merit_weight = "W"


class SeedBatchedResNet(SeedBatchedNet):
    """Residual network of SensLI eq. (2.3).

    ``x^1 = W^1 x^0``; ``x^k = x^{k-1} + W_2^k sigma(W_1^k x^{k-1} + b^k)`` for k = 2..L;
    ``x^{L+1} = W^{L+1} x^L``. The input and output maps have no bias, which gives the
    parameter counts of the paper's Table 3.1 (ResNet1: 33, ResNet2: 54).

    Layer groups: ``input`` (``W`` [S, h, d]), ``blocks`` (L - 1 blocks with ``W1``, ``b``,
    ``W2``) and ``output`` (``W`` [S, c, h]).
    """

    kind = "resnet"
    layer_groups = ("input", "blocks", "output")

    @classmethod
    def initial(cls, widths: list[int], seeds: list[int], in_features: int = 2,
                out_features: int = 2, activation: str = "tanh",
                dtype: torch.dtype = torch.float32) -> SeedBatchedResNet:
        """``widths`` lists the L hidden layers, all of the same width h (L - 1 blocks)."""
        _check_widths(widths)
        if len(set(widths)) != 1:
            raise ValueError(f"widths of a ResNet must all be equal (eq. 2.3), got {widths}")
        h, n_blocks = widths[0], len(widths) - 1
        per_seed = [cls._draw(h, n_blocks, in_features, out_features,
                              torch.Generator().manual_seed(int(seed)), dtype) for seed in seeds]
        layers = stack_seeds(per_seed)
        return cls({"input": layers[:1], "blocks": layers[1:-1], "output": layers[-1:]},
                   seeds, activation)

    @staticmethod
    def _draw(h: int, n_blocks: int, in_features: int, out_features: int,
              g: torch.Generator, dtype: torch.dtype) -> list[Layer]:
        """One seed's layers, PyTorch's default distribution, drawn in forward order."""
        layers = [{"W": default_uniform((h, in_features), in_features, g, dtype)}]
        for _ in range(n_blocks):
            layers.append({"W1": default_uniform((h, h), h, g, dtype),
                           "b": default_uniform((h,), h, g, dtype),
                           "W2": default_uniform((h, h), h, g, dtype)})
        layers.append({"W": default_uniform((out_features, h), h, g, dtype)})
        return layers

    @property
    def in_features(self) -> int:
        return self.input[0].W.shape[2]

    @property
    def out_features(self) -> int:
        return self.output[0].W.shape[1]

    def widths(self) -> list[int]:
        return [self.input[0].W.shape[1]] * (len(self.blocks) + 1)

    def insertion_positions(self, include_last: bool = False) -> list[int]:
        # As in the paper's section 3.3, a block goes *between* two hidden layers
        # (k = 1..L-1); ``include_last`` also allows k = L (before the output map).
        L = len(self.blocks) + 1
        return list(range(1, L + (1 if include_last else 0)))

    def growth_sites(self) -> list[DepthSite]:
        """A residual depth site between every two hidden layers (SensLI's positions ``k``,
        section 3.3); the seed-batched nets do not grow in width."""
        return [DepthSite("blocks", self.insertion_index(k), "residual", self.width_at(k),
                          position=k) for k in self.insertion_positions()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every seed: x [N, d] or [S, N, d] -> [S, N, c]."""
        return self._output_map(self.hidden_states(x)[-1])

    def hidden_states(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[x^0, x^1, ..., x^L]`` for every seed (each [S, N, h_k])."""
        states = [_seed_inputs(x, self.n_seeds)]
        states.append(self._input_map(states[0]))
        for block in self.blocks:
            x = states[-1]
            states.append(x + _linear(self.sigma(_linear(x, block.W1, block.b)), block.W2))
        return states

    def _input_map(self, x: torch.Tensor) -> torch.Tensor:
        return _linear(x, self.input[0].W)                       # eq. (2.3a)

    def _output_map(self, x: torch.Tensor) -> torch.Tensor:
        return _linear(x, self.output[0].W)                      # eq. (2.3c)

    insertion_group = "blocks"

    def insertion_index(self, k: int) -> int:
        # x^k is produced by the input map (k = 1) or by block k - 2; the new block follows it.
        return k - 1

    def width_at(self, k: int) -> int:
        return self.widths()[k - 1]

    merit_weight = "W2"


class SeedBatchedAuthorsResNet(SeedBatchedResNet):
    """The residual network of the SensLI authors' public code (``nets.two_weight_resnet``),
    which differs from eq. (2.3) at both ends.

    ``x^1 = sigma(W^1 x^0 + b^1)``; ``x^k = x^{k-1} + W_2^k sigma(W_1^k x^{k-1} + b^k)`` for
    k = 2..L; ``x^{L+1} = W^{L+1} x^L + b^{L+1}``: the first layer has a bias and the
    activation, the output layer a bias (ResNet1: 38 parameters, ResNet2: 59, against Table
    3.1's 33 and 54). Blocks, insertion positions (between two hidden layers, as the code of
    2023 and the paper; the code's HEAD also tries after the last block) and the merit (the
    gradient of the virtual ``W2``) are those of :class:`SeedBatchedResNet`.

    Seed ``s`` draws the weights of eq. (2.3)'s net of seed ``s`` first, then ``b^1`` and
    ``b^{L+1}``: the two architectures share their weight matrices seed by seed, so runs on
    them pair by seed.

    Layer groups: ``input`` (``W`` [S, h, d], ``b`` [S, h]), ``blocks``, ``output`` (``W``
    [S, c, h], ``b`` [S, c]).
    """

    @staticmethod
    def _draw(h: int, n_blocks: int, in_features: int, out_features: int,
              g: torch.Generator, dtype: torch.dtype) -> list[Layer]:
        layers = SeedBatchedResNet._draw(h, n_blocks, in_features, out_features, g, dtype)
        layers[0]["b"] = default_uniform((h,), in_features, g, dtype)
        layers[-1]["b"] = default_uniform((out_features,), h, g, dtype)
        return layers

    def spec(self) -> dict:
        return {**super().spec(), "architecture": "authors' code (biases in and out, "
                                                  "activation after the first layer)"}

    def _input_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.sigma(_linear(x, self.input[0].W, self.input[0].b))

    def _output_map(self, x: torch.Tensor) -> torch.Tensor:
        return _linear(x, self.output[0].W, self.output[0].b)


def _check_widths(widths: list[int]) -> None:
    if not widths or any(int(w) != w or w < 1 for w in widths):
        raise ValueError(f"widths must be a non-empty list of positive integers, got {widths}")


class SeedShapeMismatch(ValueError):
    """Seeds of a seed-batched model grew into different shapes and cannot share tensors."""


def stack_seeds(per_seed: list[list[Layer]]) -> list[Layer]:
    """Stack per-seed layer lists into one list of seed-batched layers.

    Raises a ValueError naming the layer when seeds disagree on a shape (e.g. when
    different seeds inserted layers of different widths).
    """
    n_layers = {len(layers) for layers in per_seed}
    if len(n_layers) != 1:
        raise ValueError(f"seeds have different numbers of layers: {sorted(n_layers)}")
    stacked = []
    for j in range(n_layers.pop()):
        names = per_seed[0][j].keys()
        layer = {}
        for name in names:
            shapes = {tuple(layers[j][name].shape) for layers in per_seed}
            if len(shapes) != 1:
                raise SeedShapeMismatch(
                    f"layer {j} tensor {name!r} has different shapes across seeds "
                    f"{sorted(shapes)}; "
                    "a seed-batched model needs equal shapes: run these seeds separately")
            layer[name] = torch.stack([layers[j][name] for layers in per_seed])
        stacked.append(layer)
    return stacked
