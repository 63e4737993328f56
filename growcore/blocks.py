"""Depth growth of staged networks: add a block at the end of a stage.

A staged network (:mod:`growcore.models.vgg`, ``resnet``, ``mobilenet``) keeps its blocks in
``model.stages``, a ``ModuleList`` of ``Sequential`` stages. FRAGrow (Wu et al.) grows a seed
such as VGG-1-1-1-1-2 into VGG-2-2-4-4-4 one block at a time:

* WHERE: :class:`StageOrder`, stage by stage or circulating over the stages (slides' Table 9),
  one block per growth or doubling every stage (LipGrow);
* HOW: :class:`BlockInit`, a copy of the preceding block, or He (Kaiming) initialisation when
  the preceding block changes the shape (a downsampling block cannot be copied), or "moment
  growth" (Li et al. 2022, slides' Table 10): a copy of the preceding block's exponential
  moving average, kept by :class:`MomentTracker`; ``preserve=True`` zeroes the last
  BatchNorm of a new residual branch, so the grown network computes the same function;
* the change: :func:`add_blocks`, a growth operator with the spine's signature
  ``op(model, sites, how, split) -> Growth``. New blocks are appended, so every old parameter
  keeps its name and :func:`growcore.optim.rebuild_optimizer` carries its momentum.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from growcore.models.mobilenet import InvertedResidual
from growcore.models.resnet import BasicBlock
from growcore.models.vgg import ConvBlock
from growcore.ops import Growth

STAGES = "stages"  # attribute of a staged model holding its stages
ORDERS = ("stagewise", "circulating")
PER_GROWTH = ("one", "double")
INITS = ("copy", "moment", "kaiming")
NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm)


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a ``DistributedDataParallel`` wrapper (``.module``), else itself."""
    return getattr(model, "module", model)


def stages(model: nn.Module) -> nn.ModuleList:
    """The stages of a staged model (``model.stages``)."""
    found = getattr(model, STAGES, None)
    if not isinstance(found, nn.ModuleList):
        raise TypeError(f"{type(model).__name__} has no ModuleList 'stages': depth growth "
                        "needs a staged model (growcore.models.vgg, resnet, mobilenet)")
    return found


def depths(model: nn.Module) -> list[int]:
    """Blocks per stage, e.g. ``[1, 1, 1, 1, 2]`` for VGG-1-1-1-1-2."""
    return [len(stage) for stage in stages(model)]


def _convs(block: nn.Module) -> list[nn.Conv2d]:
    return [m for m in block.modules() if isinstance(m, nn.Conv2d)]


def is_shape_preserving(block: nn.Module) -> bool:
    """True if the block maps its input shape to itself: no strided convolution, and its
    first convolution's inputs equal its last convolution's outputs. Only such a block can be
    copied to follow itself; a downsampling (or widening) block cannot."""
    convs = _convs(block)
    return (bool(convs) and convs[0].in_channels == convs[-1].out_channels
            and all(max(c.stride) == 1 for c in convs))


@dataclass(frozen=True)
class BlockKind:
    """How to build a fresh shape-preserving block like ``template`` (He initialisation), and
    which BatchNorm ends its residual branch (None for a plain, non-residual block)."""

    fresh: Callable[[nn.Module], nn.Module]
    branch_norm: Callable[[nn.Module], nn.Module] | None = None


BLOCK_KINDS: dict[str, BlockKind] = {}


def register_block_kind(cls: type, kind: BlockKind) -> None:
    """Teach the growth operator a block class (by class name)."""
    BLOCK_KINDS[cls.__name__] = kind


def he_init(block: nn.Module) -> nn.Module:
    """He (Kaiming) normal initialisation, fan-out, of every convolution (He et al. 2015, the
    slides' Table 4); BatchNorm scale 1 and shift 0 with fresh running statistics."""
    for module in block.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, NORMS):
            module.reset_parameters()
    return block


def _like(block: nn.Module, template: nn.Module) -> nn.Module:
    weight = next(template.parameters())
    return he_init(block.to(weight.device, weight.dtype))


def _vgg_fresh(template: ConvBlock) -> nn.Module:
    width = template.conv.out_channels
    return _like(ConvBlock(width, width, template.bn is not None,
                           lambda: copy.deepcopy(template.act)), template)


def _resnet_fresh(template: BasicBlock) -> nn.Module:
    width = template.conv2.out_channels
    return _like(BasicBlock(width, width, 1, lambda: copy.deepcopy(template.act1)), template)


def _mobilenet_fresh(template: InvertedResidual) -> nn.Module:
    hidden = template.dw[0].in_channels
    source = template.expand[0].in_channels if template.expand is not None else hidden
    width = template.project[0].out_channels
    block = InvertedResidual(width, width, 1, hidden // source,
                             lambda: copy.deepcopy(template.dw[2]))
    return _like(block, template)


def _register_known_kinds() -> None:
    register_block_kind(ConvBlock, BlockKind(_vgg_fresh))
    register_block_kind(BasicBlock, BlockKind(_resnet_fresh, lambda block: block.bn2))
    register_block_kind(InvertedResidual,
                        BlockKind(_mobilenet_fresh, lambda block: block.project[1]))


_register_known_kinds()


def _kind(block: nn.Module) -> BlockKind:
    name = type(block).__name__
    if name not in BLOCK_KINDS:
        raise TypeError(f"no BlockKind registered for {name}; known: {sorted(BLOCK_KINDS)} "
                        "(growcore.blocks.register_block_kind)")
    return BLOCK_KINDS[name]


class MomentTracker:
    """Exponential moving average of every parameter, for moment growth (Li et al. 2022).

    An observer for ``train(..., observers=[tracker])``: it hooks the model's forward and
    updates ``ema[name] = decay * ema[name] + (1 - decay) * param`` before every training
    forward pass (grad enabled, training mode), i.e. once per update. After a growth the loop
    re-attaches it to the grown model; parameters seen for the first time start at their value.
    """

    def __init__(self, decay: float = 0.9):
        if not 0 <= decay < 1:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        self.decay, self.ema, self._handle = decay, {}, None

    def attach(self, model: nn.Module) -> None:
        self._handle = unwrap(model).register_forward_pre_hook(self._update)

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _update(self, module: nn.Module, inputs) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return
        with torch.no_grad():
            for name, param in module.named_parameters():
                if name not in self.ema:
                    self.ema[name] = param.detach().clone()
                else:
                    self.ema[name].lerp_(param.detach(), 1 - self.decay)


@dataclass
class BlockInit:
    """HOW a new block starts.

    Parameters
    ----------
    mode : {"copy", "moment", "kaiming"}
        ``"copy"``: the preceding block's current weights (FRAGrow's default);
        ``"moment"``: the preceding block's moving average (needs ``tracker``);
        ``"kaiming"``: He initialisation. After a shape-changing (downsampling) block the
        first two fall back to He initialisation, as the slides prescribe.
    preserve : bool
        Zero the last BatchNorm (scale and shift) of the new residual branch: the block is the
        identity and the grown network computes the same function. Only for residual blocks.
    tracker : MomentTracker, optional
        Source of the moving averages for ``mode="moment"``.
    """

    mode: str = "copy"
    preserve: bool = False
    tracker: MomentTracker | None = None

    def __post_init__(self):
        if self.mode not in INITS:
            raise ValueError(f"mode must be one of {INITS}, got {self.mode!r}")
        if self.mode == "moment" and self.tracker is None:
            raise ValueError("mode 'moment' needs a MomentTracker (tracker=...)")

    def __call__(self, template: nn.Module, template_name: str) -> nn.Module:
        """A new block to follow ``template`` (named ``template_name`` in the model)."""
        kind = _kind(template)
        if self.mode == "kaiming" or not is_shape_preserving(template):
            block = kind.fresh(template)
        else:
            block = copy.deepcopy(template)
            if self.mode == "moment":
                self._load_average(block, template_name)
        if self.preserve:
            if kind.branch_norm is None:
                raise ValueError(f"preserve=True needs a residual block; {type(template).__name__}"
                                 " is not one (a plain conv block cannot be the identity)")
            norm = kind.branch_norm(block)
            with torch.no_grad():
                norm.weight.zero_()
                norm.bias.zero_()
        return block

    @torch.no_grad()
    def _load_average(self, block: nn.Module, template_name: str) -> None:
        for name, param in block.named_parameters():
            average = self.tracker.ema.get(f"{template_name}.{name}")
            if average is not None:
                param.copy_(average)


class BlockGrowth(Growth):
    """Growth by appended blocks: old parameters keep their names, ``new`` names are new."""

    def __init__(self, model: nn.Module, new: set[str], prefix: str = ""):
        self.model, self.new, self.prefix = model, set(new), prefix

    def transport(self, old: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for name, param in self.model.named_parameters():
            out[name] = torch.zeros_like(param) if name in self.new else old[name]
        return out

    def status(self, name: str) -> str:
        return "new" if name in self.new else "old"

    def source_of(self, name: str) -> str | None:
        return None if name in self.new else name


def add_blocks(model: nn.Module, sites: Sequence[int], how: BlockInit,
               split=None) -> BlockGrowth:
    """Append one block to stage ``s`` for every ``s`` in ``sites`` (a stage may repeat).

    Parameters
    ----------
    model : staged network (unchanged by the call; the grown one is a copy)
    sites : list of int
        Stage indices, from a where-rule such as :class:`StageOrder`.
    how : BlockInit
    split : ignored (the spine's operator signature)
    """
    grown = copy.deepcopy(model)
    new: set[str] = set()
    for s in sites:
        stage = stages(grown)[s]
        name = f"{STAGES}.{s}.{len(stage) - 1}"
        block = how(stage[-1], name)
        stage.append(block)
        new |= {f"{STAGES}.{s}.{len(stage) - 1}.{n}" for n, _ in block.named_parameters()}
    return BlockGrowth(grown, new)


@dataclass
class StageOrder:
    """WHERE to add the next block(s) of a staged network.

    Parameters
    ----------
    seed, target : list of int
        Blocks per stage of the seed and of the target network.
    order : {"stagewise", "circulating"}
        ``"stagewise"``: fill the first stage below its target, then the next (the slides'
        layer-wise default); ``"circulating"``: visit the stages in turn, adding to the stage
        that has received the fewest blocks so far (Wen et al. 2020; slides' Table 9).
    per_growth : {"one", "double"}
        One block per growth, or double every stage up to its target (LipGrow).
    """

    seed: list[int]
    target: list[int]
    order: str = "stagewise"
    per_growth: str = "one"

    def __post_init__(self):
        if self.order not in ORDERS or self.per_growth not in PER_GROWTH:
            raise ValueError(f"order must be one of {ORDERS} and per_growth one of "
                             f"{PER_GROWTH}, got {self.order!r}, {self.per_growth!r}")
        if len(self.seed) != len(self.target) or any(
                a > b for a, b in zip(self.seed, self.target)):
            raise ValueError(f"target {self.target} must have as many stages as seed "
                             f"{self.seed} and no fewer blocks in any")

    @property
    def n_blocks(self) -> int:
        """Blocks between seed and target (``n`` of FRAGrow eq. 4)."""
        return sum(self.target) - sum(self.seed)

    def sites(self, current: Sequence[int]) -> list[int]:
        """Stages to grow next, given the current blocks per stage."""
        open_stages = [s for s, (d, t) in enumerate(zip(current, self.target)) if d < t]
        if not open_stages:
            return []
        if self.per_growth == "double":
            return [s for s in open_stages
                    for _ in range(min(current[s], self.target[s] - current[s]))]
        if self.order == "stagewise":
            return [open_stages[0]]
        return [min(open_stages, key=lambda s: (current[s] - self.seed[s], s))]

    def __call__(self, model: nn.Module, split=None) -> tuple[list[int], dict]:
        current = depths(unwrap(model))
        chosen = self.sites(current)
        after = list(current)
        for s in chosen:
            after[s] += 1
        return chosen, {"stages": chosen, "blocks_added": len(chosen), "depths": after}

    def describe(self) -> dict:
        return {"criterion": "StageOrder", "seed": self.seed, "target": self.target,
                "order": self.order, "per_growth": self.per_growth}
