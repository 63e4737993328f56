"""HOW: initialisers for the weights of new layers or neurons.

An initialiser for layer insertion is a callable ``init(model, k, seed_index) -> layer``
returning the new layer's tensors (without the seed dimension) for a layer inserted after
hidden layer ``k`` of ``model``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from growcore.activations import RELUS
from growcore.models.seed_batched import Layer, SeedBatchedNet


@dataclass(frozen=True)
class IdentityLayer:
    """The identity initialisations of SensLI section 2.3.

    * FNN, eq. (2.6): ``W = I``, ``b = 0`` -- the identity after a ReLU layer, because
      ``ReLU(x) = x`` for ``x >= 0`` (the Net2Net construction).
    * ResNet, eq. (2.4): ``W2 = 0`` makes the block the identity for any ``W1, b``; the paper
      uses ``W1 = 0.8 I`` and ``b = 0`` (section 3) so that ``sigma(W1 x)`` is not
      systematically zero and the gradient (2.5c) with respect to ``W2`` is informative.

    Parameters
    ----------
    resnet_W1_scale : float
        The factor c in ``W1 = c I`` for ResNet blocks (paper: 0.8).
    """

    resnet_W1_scale: float = 0.8

    def __call__(self, model: SeedBatchedNet, k: int, seed_index: int) -> Layer:
        h = model.width_at(k)
        like = next(model.parameters())
        eye = torch.eye(h, dtype=like.dtype, device=like.device)
        zeros = torch.zeros(h, dtype=like.dtype, device=like.device)
        if model.kind == "fnn":
            if model.activation not in RELUS:
                raise ValueError("the identity FNN layer (SensLI eq. 2.6) needs a ReLU activation "
                                 f"{RELUS}; the model uses {model.activation!r}")
            return {"W": eye, "b": zeros}
        if model.kind == "resnet":
            return {"W1": self.resnet_W1_scale * eye, "b": zeros, "W2": torch.zeros_like(eye)}
        raise ValueError(f"IdentityLayer knows models 'fnn' and 'resnet', got {model.kind!r}")
