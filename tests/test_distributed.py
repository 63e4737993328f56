"""A growing run on two gloo processes (DistributedDataParallel on the CPU) matches the same
run in one process: same growth steps, same grown network, same losses. The driver's chapter
launcher under torchrun records its world size."""

import os
import subprocess
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from growcore.data import Split
from growcore.distributed import Agreed, distributed_op, shard, wrap
from growcore.how import BlockInit
from growcore.models.staged import is_shape_preserving, unwrap
from growcore.models.vgg import vgg_staged
from growcore.plan import GrowthPlan, apply_growth
from growcore.train import train
from growcore.when import FRAGrow
from growcore.where import StageOrder

WORLD = 2
ITERATIONS = 12
# float64: a gradient summed over two halves differs from one sum by rounding only. (In
# float32 that rounding, amplified by a few momentum steps at lr 0.05, reaches 1e-3 in the
# weights, which would hide a real mismatch.)
SAME = 1e-8
SEED, TARGET = [1, 1, 1, 1, 1], [2, 2, 1, 1, 1]


def problem() -> Split:
    generator = torch.Generator().manual_seed(0)
    X = torch.randint(0, 256, (48, 3, 32, 32), generator=generator, dtype=torch.uint8)
    y = torch.randint(0, 10, (48,), generator=generator)
    return Split(X[:32], y[:32], X_val=X[32:], y_val=y[32:])


def run(rank: int, world: int, store: str, out: str) -> None:
    """One rank (``world > 1``) or the single-process reference (``world == 1``)."""
    torch.set_num_threads(1)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # new blocks are made in the default dtype
    try:
        _run(rank, world, store, out)
    finally:
        torch.set_default_dtype(default_dtype)


def _run(rank: int, world: int, store: str, out: str) -> None:
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                                world_size=world)
    split = problem()
    torch.manual_seed(0)
    model = vgg_staged(SEED, widths=(4, 8, 8, 8, 8), batch_norm=False)
    assert next(model.parameters()).dtype == torch.float64
    torch.manual_seed(100 + rank)  # the ranks draw different new blocks unless synchronised
    where = StageOrder(SEED, TARGET)
    policy = FRAGrow(iterations_per_epoch=2, n_blocks=where.n_blocks, total_epochs=6,
                     finetune_min=2)
    plan = GrowthPlan(policy, where, BlockInit())
    if world > 1:
        model, split = wrap(model), shard(split, rank, world)
        plan = GrowthPlan(Agreed(policy), where, BlockInit(), op=distributed_op(apply_growth))
    final, history = train(model, split, iterations=ITERATIONS, lr=0.05, momentum=0.9,
                           plan=plan, eval_every=2, progress=False)
    torch.save({"state": unwrap(final).state_dict(),
                "loss": [float(value) for value in history.loss],
                "events": [e["iteration"] for e in history.events]}, f"{out}/rank{rank}.pt")
    if world > 1:
        dist.destroy_process_group()


def test_two_processes_match_one(tmp_path):
    template = vgg_staged(SEED, widths=(4, 8, 8, 8, 8)).stages[0][0]
    assert not is_shape_preserving(template), "stage 0 must get a random (He) block"
    (tmp_path / "single").mkdir()
    run(0, 1, "", str(tmp_path / "single"))
    mp.spawn(run, args=(WORLD, str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD)
    single = torch.load(tmp_path / "single" / "rank0.pt")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    assert len(single["events"]) == 2
    for result in ranks:
        assert result["events"] == single["events"]
        for name, tensor in single["state"].items():
            assert torch.allclose(result["state"][name], tensor, atol=SAME), name
    mean_loss = torch.tensor([r["loss"] for r in ranks], dtype=torch.float64).mean(dim=0)
    assert torch.allclose(mean_loss, torch.tensor(single["loss"], dtype=torch.float64),
                          rtol=SAME)


def test_chapter_launcher_under_torchrun_records_its_world_size(tmp_path, monkeypatch):
    """``torchrun -m growcore.driver --chapter fragrow`` on two gloo processes writes a record
    with its world size, under a configuration hash of its own; the notebook (one process,
    ``reuse=True``) takes it instead of training. A one-process launch of the same run then
    writes a second record, the newest, which reuse takes from then on."""
    from growcore import driver, results
    from growcore.chapters import fragrow
    from growcore.runner import REPO_ROOT

    name = "resnet overfitting FRAGrow s0"
    launch = ["--chapter", "fragrow", "--preset", "smoke", "--experiment", name,
              "--device", "cpu"]
    env = {**os.environ, "GROWCORE_RESULTS": str(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={WORLD}", "-m", "growcore.driver", *launch],
                          env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "fragrow" / "smoke"
    config = fragrow.experiments(fragrow.notebook_parameters("smoke"))[name]
    (launched,) = [results.load_record(path) for path in out.glob("*.json")]
    assert launched["world_size"] == launched["config"]["world_size"] == WORLD
    assert driver.run_experiment(config, directory=out, reuse=True) == launched

    monkeypatch.setenv("GROWCORE_RESULTS", str(tmp_path))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert driver.main(launch) == 0
    hashes = {results.load_record(path)["world_size"]: path.name.split("--")[1]
              for path in out.glob("*.json")}
    assert set(hashes) == {1, WORLD}
    assert hashes[1] == results.config_hash(driver.validate(config)) != hashes[WORLD]
    assert driver.run_experiment(config, directory=out, reuse=True)["world_size"] == 1
