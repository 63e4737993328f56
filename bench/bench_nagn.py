"""NAGN benchmarks, printed as ratios measured in one run (this machine is noisy: compare
within a run, not across runs).

1. The NAGN statistics (hooks adding squared activation-gradient norms during the normal
   backward pass) per epoch, as a fraction of a plain epoch (the paper: "negligible").
2. One growth step (NAGN increments, eq. (1) widening, optimiser state carried) against one
   training step.

The Fig. 1 net [[8, 3, 8], [16, 4, 16], [32, 4, 32]] on random 32x32 images (timing only).
Run: ``make bench`` or ``.venv/bin/python bench/bench_nagn.py``.
"""

from __future__ import annotations

import torch

from growcore.data import Split
from growcore.how import KaimingNew
from growcore.models.sites import width_sites
from growcore.models.vgg import NAGN_EXAMPLE, VGG
from growcore.ops import make_optimizer, rebuild_optimizer, widen
from growcore.runtime import best_seconds
from growcore.stats import NAGNObserver
from growcore.train import train
from growcore.where import NAGN

N_TRAIN, BATCH = 4000, 500   # one "epoch" of 8 batches of the paper's size
REPEATS = 5                  # growth steps timed




def main() -> None:
    torch.manual_seed(0)
    data = Split(torch.randint(0, 256, (N_TRAIN, 3, 32, 32), dtype=torch.uint8),
                 torch.randint(10, (N_TRAIN,)))
    iterations = N_TRAIN // BATCH
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")

    def epoch(observed: bool):
        model = VGG(NAGN_EXAMPLE, head="flatten")
        observers = [NAGNObserver(window=iterations)] if observed else None
        train(model, data, iterations=iterations, lr=1e-3, optimizer="adamw",
              batch_size=BATCH, observers=observers, eval_every=iterations, progress=False)

    plain, observed = best_seconds(lambda: epoch(False)), best_seconds(lambda: epoch(True))
    print(f"-- one epoch of {iterations} batches of {BATCH}: plain {plain:.2f} s, with NAGN "
          f"statistics {observed:.2f} s, overhead = {100 * (observed / plain - 1):+.1f} %")

    model = VGG(NAGN_EXAMPLE, head="flatten")
    observer = NAGNObserver(window=iterations)
    observer.attach(model)
    opt = make_optimizer("adamw", model.parameters(), 1e-3, weight_decay=1e-2)

    def step():
        X, y = data.X_train[:BATCH], data.y_train[:BATCH]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X), y).backward()
        opt.step()

    step()
    where = NAGN(observer)

    def grow():
        proposals, _ = where(model, width_sites(model))
        growth = widen(model, proposals, KaimingNew())
        rebuild_optimizer(opt, model, growth)

    t_grow, t_step = best_seconds(grow, REPEATS) / REPEATS, best_seconds(step, REPEATS) / REPEATS
    print(f"-- growth step {1e3 * t_grow:.1f} ms, training step {1e3 * t_step:.1f} ms, "
          f"growth/step = {t_grow / t_step:.2f}")


if __name__ == "__main__":
    main()
