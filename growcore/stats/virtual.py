"""SensLI's statistic: gradients of virtual identity layers at every insertion position.

SensLI (section 2.4) scores every possible insertion position by the Lagrange multiplier of
the constraint that keeps a *virtual* identity layer at its initial value. Since
``lambda = -grad_{theta_new} f_ext`` (eq. 2.12b), one forward-backward pass through the
fully extended network (identity layers at all positions) gives every multiplier at once.
"""

from __future__ import annotations

import torch

from growcore.data import Split
from growcore.losses import per_seed_cross_entropy
from growcore.models.seed_batched import SeedBatchedNet
from growcore.ops.insert import LayerInsertion, identity_layer, insert_layers


def extended_gradients(model: SeedBatchedNet, split: Split, resnet_W1_scale: float = 0.8,
                       batch_size: int | None = None,
                       generator: torch.Generator | None = None) -> tuple[LayerInsertion, dict]:
    """Gradients of the training loss of the fully extended network, without any update.

    ``batch_size=None`` is one full-batch pass; otherwise one epoch of mini-batches is
    accumulated (the mini-batch variant of section 2.4: "an epoch of SGD steps with zero
    learning rate"), weighted so that the result equals the full-batch gradient.

    Returns
    -------
    extended : LayerInsertion
        The extended network (``extended.model``) with ``.grad`` filled in.
    grads : dict
        Parameter name -> gradient, for all parameters of the extended network.
    """
    positions = model.insertion_positions()
    extended = insert_layers(model, [positions] * model.n_seeds,
                             lambda m, k, s: identity_layer(m, k, resnet_W1_scale))
    n = len(split.y_train)
    extended.model.zero_grad(set_to_none=True)
    for X, y in split.minibatches(batch_size, generator):
        loss = per_seed_cross_entropy(extended.model(X), y).sum() * (len(y) / n)
        loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in extended.model.named_parameters()}
    return extended, grads
