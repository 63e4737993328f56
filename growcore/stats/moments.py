"""Moving averages of the parameters, for moment growth (Li et al. 2022; FRAGrow's Table 10).
"""

from __future__ import annotations

import torch
from torch import nn

from growcore.models.staged import unwrap


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
