"""The spiral experiments of SensLI section 3 as driver configurations.

:func:`spiral_config` describes one run in the plain configuration of :mod:`growcore.driver`
(which runs it and writes its record); :func:`chosen_sites` reads a record's choices.
"""

from __future__ import annotations

# SensLI's nets by the driver's names: eqs. (2.2), (2.3), and the ResNet of the authors' code
MODELS = {"fnn": "fnn", "resnet": "resnet_seed_batched",
          "resnet_authors": "resnet_seed_batched_authors"}


def spiral_config(model: str, widths: list[int], seeds: list[int], iterations: int, lr: float,
                  insert_at: int | None = None, select: str = "max",
                  normalisation: str = "paper", lr_factor: float = 1.0,
                  resnet_W1_scale: float = 0.8, activation: str | None = None,
                  optimizer: str = "sgd", momentum: float = 0.0, batch_size: int | None = None,
                  split_seed: int = 0, dtype: str = "float32", eval_every: int = 1,
                  name: str = "spiral") -> dict:
    """The driver configuration of one spiral experiment (SensLI section 3).

    ``model`` is ``"fnn"`` (eq. 2.2), ``"resnet"`` (eq. 2.3) or ``"resnet_authors"`` (the
    authors' code: biases in the first and the output layer, the activation after the first,
    :class:`growcore.models.seed_batched.SeedBatchedAuthorsResNet`), trained full batch (SGD, the
    paper's setting) with the test error measured every ``eval_every`` iterations.
    ``insert_at=None`` trains the fixed architecture; otherwise one layer is inserted at that
    iteration where the SensLI merit selects (``select="max"``: LI, ``"min"``: LI_other),
    filled as the identity (``W1 = c I`` with ``c = resnet_W1_scale`` in a residual block),
    and the learning rate is multiplied by ``lr_factor`` after it.
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {model!r}")
    plan = None
    if insert_at is not None:
        plan = {"when": {"name": "at", "iterations": insert_at},
                "where": {"name": "sensli", "select": select, "normalisation": normalisation,
                          "resnet_W1_scale": resnet_W1_scale},
                "how": {"name": "identity", "resnet_W1_scale": resnet_W1_scale},
                "lr_factor": lr_factor}
    train = {"iterations": iterations, "lr": lr, "optimizer": optimizer, "momentum": momentum,
             "eval_every": eval_every}
    if batch_size is not None:
        train["batch_size"] = batch_size
    return {"name": name, "seeds": list(seeds),
            "data": {"name": "spiral", "n_per_class": 300, "test_fraction": 0.25,
                     "split_seed": split_seed, "dtype": dtype},
            "model": {"name": MODELS[model], "widths": list(widths),
                      "activation": activation or ("relu" if model == "fnn" else "tanh"),
                      "dtype": dtype},
            "train": train, "plan": plan}


def chosen_sites(record: dict, iteration: int | None = None) -> dict[int, object]:
    """Seed -> the site chosen at the growth step at ``iteration`` (default: the first)."""
    events = record["metrics"]["events"]
    if iteration is None:
        iteration = min(e["iteration"] for e in events)
    return {seed: site for e in events if e["iteration"] == iteration
            for seed, site in zip(e["seeds"], e["chosen"])}
