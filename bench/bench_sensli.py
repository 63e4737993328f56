"""SensLI benchmarks, printed as ratios measured in one run (this machine is noisy: compare
within a run, not across runs).

1. 30 seeds as one seed-batched tensor program vs a loop over the seeds (same total work).
2. The SensLI merit evaluation (one forward-backward pass of the fully extended network)
   vs one training step of the baseline network.

Run: ``make bench`` or ``.venv/bin/python bench/bench_sensli.py``.
"""

from __future__ import annotations

import torch

from growcore.data import spiral
from growcore.losses import per_seed_cross_entropy
from growcore.models import build
from growcore.runtime import best_seconds
from growcore.train import train
from growcore.where import sensli_merits

SEEDS = list(range(30))
ITERATIONS = 200   # per timing of the training loop
REPEATS = 200      # merit evaluations / training steps timed




def batched_vs_loop(kind: str, widths: list[int], data) -> float:
    def batched():
        train(build(kind, widths, SEEDS), data, iterations=ITERATIONS, lr=0.1, progress=False)

    def loop():
        for seed in SEEDS:
            train(build(kind, widths, [seed]), data, iterations=ITERATIONS, lr=0.1,
                  progress=False)

    t_batched, t_loop = best_seconds(batched), best_seconds(loop)
    print(f"{kind} {widths}: {len(SEEDS)} seeds x {ITERATIONS} iterations: "
          f"batched {t_batched:.2f} s, loop {t_loop:.2f} s, "
          f"loop/batched = {t_loop / t_batched:.1f}x")
    return t_loop / t_batched


def merit_vs_step(kind: str, widths: list[int], data) -> float:
    model = build(kind, widths, SEEDS)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step():
        opt.zero_grad()
        per_seed_cross_entropy(model(data.X_train), data.y_train).sum().backward()
        opt.step()

    t_merit = best_seconds(lambda: sensli_merits(model, data), REPEATS) / REPEATS
    t_step = best_seconds(step, REPEATS) / REPEATS
    print(f"{kind} {widths}: merit evaluation {1e3 * t_merit:.2f} ms, training step "
          f"{1e3 * t_step:.2f} ms, merit/step = {t_merit / t_step:.1f}")
    return t_merit / t_step


def main() -> None:
    torch.set_num_threads(1)
    data = spiral()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print("-- seed-batched training vs a loop over seeds")
    for kind, widths in [("fnn", [5]), ("resnet", [3, 3, 3])]:
        batched_vs_loop(kind, widths, data)
    print("-- SensLI merit evaluation vs one training step (30 seeds batched)")
    for kind, widths in [("fnn", [4, 4]), ("resnet", [3, 3, 3])]:
        merit_vs_step(kind, widths, data)


if __name__ == "__main__":
    main()
