"""SensLI's statistic: gradients of virtual identity layers at every insertion position.

SensLI (section 2.4) scores every possible insertion position by the Lagrange multiplier of
the constraint that keeps a *virtual* identity layer at its initial value. Since
``lambda = -grad_{theta_new} f_ext`` (eq. 2.12b), one forward-backward pass through the
fully extended network (identity layers at all positions) gives every multiplier at once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from growcore.data import Split
from growcore.losses import LOSSES, as_seed_batch
from growcore.models.seed_batched import SeedBatchedNet
from growcore.models.sites import DepthSite, Proposal
from growcore.ops.insert import (
    LayerInsertion,
    at_positions,
    identity_layer,
    identity_module,
    insert_layers,
    insert_modules,
)
from growcore.stats.probe import FULL_CHUNK

NORMALISATIONS = ("paper", "code")


def extended_gradients(model: SeedBatchedNet, split: Split, resnet_W1_scale: float = 0.8,
                       batch_size: int | None = None,
                       generator: torch.Generator | None = None,
                       loss: str = "cross_entropy") -> tuple[LayerInsertion, dict]:
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
    extended = insert_layers(model, at_positions(model, [positions] * model.n_seeds),
                             lambda m, p, stats: identity_layer(m, p.site.position,
                                                                resnet_W1_scale))
    n = len(split.y_train)
    extended.model.zero_grad(set_to_none=True)
    for X, y in split.minibatches(batch_size, generator):
        value = LOSSES[loss](extended.model(X), y).sum() * (len(y) / n)
        value.backward()
    grads = {name: p.grad.detach().clone() for name, p in extended.model.named_parameters()}
    return extended, grads


def module_merits(model: nn.Module, sites: list[DepthSite], split: Split,
                  loss: str = "cross_entropy", normalisation: str = "paper",
                  batch_size: int | None = None,
                  generator: torch.Generator | None = None,
                  reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """SensLI's merit of every depth site of an ``nn.Module`` (section 2.4, any loss).

    A virtual identity layer goes to every site at once
    (:func:`growcore.ops.insert.identity_module`); one pass over the training data gives the
    gradient of the loss with respect to each virtual layer's constrained weights, which is
    minus the Lagrange multiplier (eq. 2.12b). The merit is its squared norm, divided by
    the site's width squared for ``normalisation="paper"`` (eqs. 2.14-2.15). The model is
    evaluated in its current mode (train mode during training, as a training step would).

    Parameters
    ----------
    batch_size : int, optional
        None: the whole training set (in chunks of :data:`FULL_CHUNK`); an int: one epoch of
        minibatches of that size. Both are weighted to the full-data mean loss.
    reduce : callable, optional
        Applied to the virtual layers' gradients (all sites' in one flat tensor) before they
        are squared: under torchrun :func:`growcore.distributed.mean_over_ranks`, so that with
        equal shards every rank has the gradient of the whole training set's mean loss
        (eq. 2.12b) and the merits a single process would compute.

    Returns
    -------
    Tensor [P]: the merit of ``sites[p]``.
    """
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    merit_names: list[list[str]] = []

    def identity(m, proposal, stats):
        module, names = identity_module(m, proposal.site)
        merit_names.append(names)
        return module

    extended = insert_modules(model, [Proposal(site) for site in sites], identity)
    net = extended.model
    net.train(model.training)
    net.zero_grad(set_to_none=True)
    n = len(split.y_train)
    batches = (split.minibatches(batch_size, generator) if batch_size is not None else
               split.chunks(FULL_CHUNK))
    for X, y in batches:
        value = LOSSES[loss](as_seed_batch(net(X)), y).sum() * (len(y) / n)
        value.backward()
    params = dict(net.named_parameters())
    grads = [[params[f"{path}.{name}"].grad for name in names]
             for path, names in zip(extended.inserted, merit_names)]
    flat = torch.cat([g.flatten() for site_grads in grads for g in site_grads])
    if reduce is not None:
        flat = reduce(flat)
    per_site = flat.split([sum(g.numel() for g in site_grads) for site_grads in grads])
    merits = [g.double().pow(2).sum() / (site.width ** 2 if normalisation == "paper" else 1)
              for site, g in zip(sites, per_site)]
    return torch.stack(merits)
