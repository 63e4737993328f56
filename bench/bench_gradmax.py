"""GradMax benchmarks, printed as ratios measured in one run (this machine is noisy: compare
within a run, not across runs).

1. One GradMax growth step of VGG11 x0.25 at batch 128 (the statistics of every site from one
   forward-backward pass, the SVDs, and the widening of every layer by its share of the first
   of 12 growths to full width) vs one training step (forward, backward, SGD update). The paper
   (section 4.1, Fig. 3c) says a growth step costs less than one training step.
2. The size of every convolution's GradMax matrix (Appendix B) and the time of its SVD.

Run: ``make bench`` or ``.venv/bin/python bench/bench_gradmax.py``.
"""

from __future__ import annotations

import functools

import torch

from growcore.activations import ReLUWithSlopeAtZero
from growcore.data import Split
from growcore.how import GradMax
from growcore.models.sites import width_sites
from growcore.models.vgg import vgg11
from growcore.ops import widen
from growcore.runtime import best_seconds, resolve_device
from growcore.stats import Probe, TargetNorm, collect, gradient_matrix
from growcore.where import GrowToWidths

BATCH = 128  # paper: batch 128 on CIFAR, also for the GradMax statistic
WIDTH = 0.25  # paper: VGG11 grown from x0.25 to x1 in 12 growths
GROWTHS = 12




def main() -> None:
    torch.manual_seed(0)
    device = resolve_device("auto")
    model = vgg11(WIDTH, activation=functools.partial(ReLUWithSlopeAtZero, 1.0)).to(device)
    X = torch.randint(0, 256, (BATCH, 3, 32, 32), dtype=torch.uint8, device=device)
    y = torch.randint(0, 10, (BATCH,), device=device)
    split = Split(X, y)
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)  # lr 0: model unchanged

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X), y).backward()
        opt.step()

    def growth(conv_matrix="exact"):
        proposals, _ = GrowToWidths(1 / WIDTH, GROWTHS)(model, width_sites(model))
        how = GradMax(batch_size=BATCH, norm=TargetNorm(value=1e-4), conv_matrix=conv_matrix)
        widen(model, proposals, how, Probe(split))

    step()  # warm-up
    t_step, t_growth = best_seconds(step), best_seconds(growth)
    t_aux = best_seconds(functools.partial(growth, "auxiliary"))
    print(f"VGG11 x{WIDTH}, batch {BATCH}, {device}, {torch.get_num_threads()} CPU threads")
    print(f"  one training step           {1000 * t_step:8.1f} ms")
    print(f"  one GradMax growth step     {1000 * t_growth:8.1f} ms  "
          f"(ratio growth / step = {t_growth / t_step:.2f}; paper: < 1)")
    print(f"  the same, auxiliary kernel  {1000 * t_aux:8.1f} ms  "
          f"(ratio growth / step = {t_aux / t_step:.2f}; Appendix B's construction, exact "
          "without padding)")

    sites = model.width_sites()
    data = collect(model, sites, split, "cross_entropy")
    t_collect = best_seconds(lambda: collect(model, sites, split, "cross_entropy"))
    t_matrices = best_seconds(lambda: [gradient_matrix(model, s, data[s]) for s in sites])
    t_svds = best_seconds(lambda: [torch.linalg.svd(gradient_matrix(model, s, data[s]),
                                               full_matrices=False) for s in sites]) - t_matrices
    print(f"\n  parts of the exact growth step, in training steps: statistics (one "
          f"forward-backward) {t_collect / t_step:.2f}, matrices {t_matrices / t_step:.2f}, "
          f"SVDs {t_svds / t_step:.2f}")
    print("\n  site (producer -> consumer)                 matrix size       SVD ms")
    for site in sites:
        G = gradient_matrix(model, site, data[site])
        t = best_seconds(lambda G=G: torch.linalg.svd(G, full_matrices=False))
        print(f"  {site.producer:>18s} -> {site.consumer:<20s} "
              f"{G.shape[0]:6d} x {G.shape[1]:<6d} {1000 * t:10.2f}")


if __name__ == "__main__":
    main()
