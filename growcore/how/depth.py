"""HOW for depth growth: the weights of an inserted layer or block.

Protocol ``how(model, proposal, stats) -> layer``: the new entry at the depth site
``proposal.site`` of ``model`` (the model grown so far). For a seed-batched net the layer is
a dict of one seed's tensors (:func:`growcore.ops.insert.insert_layers`); for an
``nn.Module`` it is a module (:func:`growcore.ops.insert.insert_modules`).

* :class:`IdentityLayer`: SensLI's identity initialisations (section 2.3, eqs. 2.4 and 2.6):
  the Net2Net identity after a ReLU for plain sites (a Dirac kernel for convolutions), a
  residual branch with a zero last layer for residual sites. Always function-preserving.
* :class:`BlockInit`: FRAGrow's new block after the last of a stage: a copy of the preceding
  block, its moving average ("moment growth", Li et al. 2022) or He initialisation;
  ``preserve=True`` zeroes the end of a new residual branch so that the grown network
  computes the same function.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from growcore.models.seed_batched import Layer, SeedBatchedNet
from growcore.models.sites import DepthSite, Proposal
from growcore.models.staged import block_kind, is_shape_preserving, is_staged
from growcore.ops.insert import identity_layer, identity_module
from growcore.stats.moments import MomentTracker

INITS = ("copy", "moment", "kaiming")


@dataclass(frozen=True)
class IdentityLayer:
    """SensLI's identity initialisation of an inserted layer (section 2.3).

    On a seed-batched FNN or ResNet: :func:`growcore.ops.insert.identity_layer` (``W = I`` after
    a ReLU, eq. 2.6; ``W1 = c I, b = 0, W2 = 0`` for a residual block, eq. 2.4). On an
    ``nn.Module``: :func:`growcore.ops.insert.identity_module` (an identity Linear, a Dirac
    convolution, or a fresh residual block whose branch ends at zero).

    Parameters
    ----------
    resnet_W1_scale : float
        The factor c in ``W1 = c I`` for the seed-batched ResNet's blocks (paper: 0.8).
    """

    resnet_W1_scale: float = 0.8

    kind: ClassVar[str] = "depth"

    def __call__(self, model, proposal: Proposal, stats=None) -> Layer | nn.Module:
        if isinstance(model, SeedBatchedNet):
            return identity_layer(model, proposal.site.position, self.resnet_W1_scale)
        return identity_module(model, proposal.site, self.resnet_W1_scale)[0]

    def refuses(self, model, site: DepthSite) -> str | None:
        """Why this initialiser cannot serve ``site`` of ``model`` (None if it can)."""
        if not site.idempotent:
            return (f"an identity layer after {site.activation!r} does not keep the function "
                    "(SensLI eq. 2.6 needs a ReLU form or ReLU6); use a residual site")
        return None

    def describe(self) -> dict:
        return {"how": "IdentityLayer", "resnet_W1_scale": self.resnet_W1_scale}


@dataclass
class BlockInit:
    """HOW a new block appended to a stage starts (FRAGrow, the slides' Tables 4 and 10).

    Parameters
    ----------
    mode : {"copy", "moment", "kaiming"}
        ``"copy"``: the preceding block's current weights (FRAGrow's default);
        ``"moment"``: the preceding block's moving average (kept by ``tracker``);
        ``"kaiming"``: He initialisation. After a shape-changing (downsampling) block the
        first two fall back to He initialisation, as the slides prescribe.
    preserve : bool
        Zero the last layer of the new residual branch: the block is the identity and the
        grown network computes the same function. Only for residual blocks.
    tracker : MomentTracker, optional
        Source of the moving averages for ``mode="moment"``; made with ``moment_decay`` if not
        given. The training loop attaches it (:meth:`observers`).
    moment_decay : float
        Decay of the moving average made when no tracker is given.
    """

    mode: str = "copy"
    preserve: bool = False
    tracker: MomentTracker | None = None
    moment_decay: float = 0.9

    kind: ClassVar[str] = "depth"

    def __post_init__(self):
        if self.mode not in INITS:
            raise ValueError(f"mode must be one of {INITS}, got {self.mode!r}")
        if self.mode == "moment" and self.tracker is None:
            self.tracker = MomentTracker(self.moment_decay)

    def observers(self) -> list:
        return [self.tracker] if self.mode == "moment" else []

    def __call__(self, model: nn.Module, proposal: Proposal, stats=None) -> nn.Module:
        site = proposal.site
        container = model.get_submodule(site.container) if site.container else model
        template = container[site.index - 1]
        return self.block_after(template, f"{site.container}.{site.index - 1}")

    def block_after(self, template: nn.Module, template_name: str) -> nn.Module:
        """A new block to follow ``template`` (named ``template_name`` in the model)."""
        kind = block_kind(template)
        if self.mode == "kaiming" or not is_shape_preserving(template):
            block = kind.fresh(template)
        else:
            block = copy.deepcopy(template)
            if self.mode == "moment":
                self._load_average(block, template_name)
        if self.preserve:
            if kind.branch_end is None:
                raise ValueError(f"preserve=True needs a residual block; {type(template).__name__}"
                                 " is not one (a plain conv block cannot be the identity)")
            with torch.no_grad():
                for param in kind.branch_end(block).parameters(recurse=False):
                    param.zero_()
        return block

    def refuses(self, model, site: DepthSite) -> str | None:
        """Why this initialiser cannot serve ``site`` of ``model`` (None if it can)."""
        if not is_staged(model) or not site.container.startswith("stages."):
            return ("BlockInit builds blocks of a staged model's stages (growcore.models: VGG, "
                    "ResNet, WRN, MobileNet); use IdentityLayer for other depth sites")
        if self.preserve and site.style != "residual":
            return f"preserve=True needs residual blocks; the blocks at {site.name} are plain"
        return None

    @torch.no_grad()
    def _load_average(self, block: nn.Module, template_name: str) -> None:
        for name, param in block.named_parameters():
            average = self.tracker.ema.get(f"{template_name}.{name}")
            if average is not None:
                param.copy_(average)

    def describe(self) -> dict:
        out = {"how": "BlockInit", "mode": self.mode, "preserve": self.preserve}
        return {**out, "moment_decay": self.tracker.decay} if self.mode == "moment" else out


