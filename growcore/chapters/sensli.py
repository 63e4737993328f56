"""The SensLI chapter (``notebooks/sensli.ipynb``): parameters and experiments.

The experiments are those of the paper's section 3, by the names of its public code:
Exp8 (Fig. 3.2), Exp6 (Fig. 3.3a), Exp11 (Fig. 3.3b), Exp9 (Fig. 3.4a), Exp14 (Fig. 3.4b).
"""

from __future__ import annotations

from growcore.experiments import spiral_config
from growcore.params import Spec, require
from growcore.params import validate as validate_all
from growcore.runtime import DEVICES
from growcore.stats import NORMALISATIONS

PRESETS = ("smoke", "cpu", "gpu")

PARAMETERS = {
    "preset": Spec(str, choices=PRESETS),
    "n_seeds": Spec(int, minimum=1),
    "iterations": Spec(int, minimum=2),
    "insertion_iteration": Spec(int, minimum=1),
    "insertion_sweep": Spec(list, item=int, minimum=1, min_length=1),
    "lr_fnn": Spec(float, minimum=0),
    "lr_resnet": Spec(float, minimum=0),
    "lr_factor_after_insertion": Spec(float, minimum=0),
    "merit_normalisation": Spec(str, choices=NORMALISATIONS),
    "resnet_W1_scale": Spec(float),
    "device": Spec(str, choices=DEVICES),
    "threads": Spec(int, minimum=1),
    "progress": Spec(bool),
}


def validate(namespace: dict) -> dict:
    """Check the notebook's parameters (picked by name from ``namespace``) before compute."""
    params = validate_all({k: namespace[k] for k in PARAMETERS if k in namespace}, PARAMETERS)
    last = params["iterations"] - 1
    require(params["insertion_iteration"] <= last, "insertion_iteration",
            f"must be below iterations ({params['iterations']}); got "
            f"{params['insertion_iteration']}")
    require(max(params["insertion_sweep"]) <= last, "insertion_sweep",
            f"every entry must be below iterations ({params['iterations']}); got "
            f"{params['insertion_sweep']}")
    require(params["lr_fnn"] > 0 and params["lr_resnet"] > 0, "lr_fnn/lr_resnet",
            "learning rates must be positive")
    return params


def experiments(p: dict) -> dict[str, dict]:
    """All runs of the chapter, name -> configuration (see :func:`spiral_config`)."""
    seeds = list(range(p["n_seeds"]))
    common = {"seeds": seeds, "iterations": p["iterations"],
              "normalisation": p["merit_normalisation"], "resnet_W1_scale": p["resnet_W1_scale"]}
    fnn = {**common, "model": "fnn", "lr": p["lr_fnn"]}
    resnet = {**common, "model": "resnet", "lr": p["lr_resnet"]}
    at = p["insertion_iteration"]
    runs = {
        # Fig. 3.2 (Exp8) and Fig. 3.3a (Exp6)
        "FNN1": spiral_config(widths=[5], **fnn),
        "FNN2": spiral_config(widths=[5, 5], **fnn),
        **{f"FNN1+insert@{t}": spiral_config(widths=[5], insert_at=t, **fnn)
           for t in sorted(set(p["insertion_sweep"]) | {at})},
        # Fig. 3.3b (Exp11): ResNet1 has two hidden layers (one block)
        "ResNet1": spiral_config(widths=[3, 3], **resnet),
        "ResNet2": spiral_config(widths=[3, 3, 3], **resnet),
        "ResNetLI": spiral_config(widths=[3, 3], insert_at=at, **resnet),
        # Ablation: the larger net with the identity-initialised layer from the start
        # (insertion at iteration 0) separates the effect of the initialisation from that of
        # the insertion time
        "FNN1+insert@0": spiral_config(widths=[5], insert_at=0, **fnn),
        "ResNet1+insert@0": spiral_config(widths=[3, 3], insert_at=0, **resnet),
        # Fig. 3.4a (Exp9): where to insert into FNN [4, 4]
        "FNN[4,4] LI": spiral_config(widths=[4, 4], insert_at=at, select="max", **fnn),
        "FNN[4,4] LI_other": spiral_config(widths=[4, 4], insert_at=at, select="min", **fnn),
    }
    # Fig. 3.4b (Exp14): ResNet [3, 3, 3]; the paper multiplies the lr by 0.8 after insertion
    # (the public code by 0.7): both factors are run, the parameter's first
    for factor in dict.fromkeys([p["lr_factor_after_insertion"], 0.7, 0.8]):
        for select, label in (("max", "LI"), ("min", "LI_other")):
            runs[f"ResNet[3,3,3] {label} x{factor}"] = spiral_config(
                widths=[3, 3, 3], insert_at=at, select=select, lr_factor=factor, **resnet)
    # Normalisation: with unequal widths 1/h_k^2 can change the choice (FNN [8, 3])
    for normalisation in NORMALISATIONS:
        runs[f"FNN[8,3] LI {normalisation}"] = spiral_config(
            widths=[8, 3], insert_at=at, select="max",
            **{**fnn, "normalisation": normalisation})
    return runs
