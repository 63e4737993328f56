"""A growing run on two gloo processes (DistributedDataParallel on the CPU) matches the same
run in one process: same growth steps, same grown network, same losses. The driver's chapter
launcher under torchrun records its world size."""

import os
import subprocess
import sys

import pytest
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


def assert_as_one_process(ranks: list[dict], single: dict, tolerance: float) -> None:
    """Every rank's final weights equal the single process's, and the ranks' mean loss curve
    (each rank's loss is on its shard) equals the single process's, to ``tolerance``."""
    for result in ranks:
        for name, tensor in single["state"].items():
            assert torch.allclose(result["state"][name], tensor, atol=tolerance), name
    mean_loss = torch.tensor([r["loss"] for r in ranks], dtype=torch.float64).mean(dim=0)
    assert torch.allclose(mean_loss, torch.tensor(single["loss"], dtype=torch.float64),
                          rtol=tolerance)


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
    assert_as_one_process(ranks, single, SAME)


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


# ---------------------------------------------------------------- widening on two processes
WIDEN_AT = [3, 7]  # growth iterations of the widening runs
WIDEN_ITERATIONS = 10


def widening_plan(method: str) -> GrowthPlan:
    """GradMax (where: the largest singular value; how: the SVD units, both from full-data
    gradient matrices) or NAGN (where: increments from the activation-gradient profile of
    the last two batches; how: NAGN's eq. (1) from its own seeded generator)."""
    from growcore.how import GradMax, KaimingNew
    from growcore.stats import NAGNObserver
    from growcore.when import AtIterations
    from growcore.where import NAGN, LargestSingularValue

    if method == "gradmax":
        return GrowthPlan(AtIterations(WIDEN_AT), LargestSingularValue(k=2, n_sites=2),
                          GradMax())
    return GrowthPlan(AtIterations(WIDEN_AT), NAGN(NAGNObserver(window=2), tau=0.0,
                                                   delta_max=3), KaimingNew(seed=5))


def widen_run(rank: int, world: int, store: str, out: str, method: str,
              synchronise: bool = True, kill: int | None = None) -> None:
    """A VGG widened twice, on one process (``world == 1``) or as one of ``world`` ranks;
    ``synchronise=False``: the control, each rank on its own shard's statistics (only the
    decision to grow agreed, the DDP rebuild taking rank 0's new weights). With ``kill``
    the run writes a checkpoint per rank every 2 iterations and every rank stops during
    update ``kill + 1``; run again, it continues from its checkpoint."""
    from growcore.distributed import synchronised
    from growcore.models.catalog import RELU1
    from growcore.models.vgg import VGG

    torch.set_num_threads(1)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        if world > 1:
            dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                                    world_size=world)
        split = problem()
        torch.manual_seed(0)
        model = VGG([[4], [4, 6]], 10, batch_norm=False, activation=RELU1)
        torch.manual_seed(100 + rank)  # nothing may depend on a rank's own random draws
        plan = widening_plan(method)
        if world > 1:
            model, split = wrap(model), shard(split, rank, world)
            plan = (synchronised(plan) if synchronise else
                    GrowthPlan(Agreed(plan.when), plan.where, plan.how,
                               op=distributed_op(apply_growth)))
        calls = [0]

        def stop(model):
            calls[0] += 1
            if kill is not None and calls[0] > kill:
                raise RuntimeError("killed")
            return torch.zeros(1)

        path = f"{out}/checkpoint-rank{rank}.pt" if kill is not None else None
        try:
            final, history = train(model, split, iterations=WIDEN_ITERATIONS, lr=0.05,
                                   momentum=0.9, plan=plan, eval_every=2, progress=False,
                                   step_metrics={"stop": stop}, checkpoint=path,
                                   checkpoint_every=2)
        except RuntimeError as error:
            if kill is None or str(error) != "killed":
                raise
            return
        torch.save({"state": unwrap(final).state_dict(), "widths": unwrap(final).config,
                    "loss": [float(value) for value in history.loss],
                    "events": [(e["iteration"], e["proposals"]) for e in history.events],
                    "resumed_at": history.resumed_at}, f"{out}/rank{rank}.pt")
        if world > 1:
            dist.destroy_process_group()
    finally:
        torch.set_default_dtype(default_dtype)


@pytest.mark.parametrize("method", ["gradmax", "nagn"])
def test_two_processes_widen_as_one(tmp_path, method):
    """GradMax's and NAGN's widening on two gloo ranks (each rank its half of the data, the
    statistics all-reduced) choose the same sites and units as one process on all the data
    and give the same network: weights equal to float64 rounding, the ranks' mean loss equal
    to the single process's at every step."""
    (tmp_path / "single").mkdir()
    widen_run(0, 1, "", str(tmp_path / "single"), method)
    mp.spawn(widen_run, args=(WORLD, str(tmp_path / "store"), str(tmp_path), method),
             nprocs=WORLD)
    single = torch.load(tmp_path / "single" / "rank0.pt")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    assert [e[0] for e in single["events"]] == WIDEN_AT
    assert single["widths"] != [[4], [4, 6]], "the run must widen"
    for result in ranks:
        assert result["events"] == single["events"] and result["widths"] == single["widths"]
    assert_as_one_process(ranks, single, SAME)


def test_unreduced_widening_diverges(tmp_path):
    """The control: without :func:`growcore.distributed.synchronised` (each rank its own
    shard's statistics, the DDP rebuild taking rank 0's new weights) GradMax's widening
    differs from one process's, so the test above can fail."""
    (tmp_path / "single").mkdir()
    widen_run(0, 1, "", str(tmp_path / "single"), "gradmax")
    mp.spawn(widen_run, args=(WORLD, str(tmp_path / "store"), str(tmp_path), "gradmax",
                              False), nprocs=WORLD)
    single = torch.load(tmp_path / "single" / "rank0.pt")
    rank0 = torch.load(tmp_path / "rank0.pt")
    differ = [name for name, tensor in single["state"].items()
              if rank0["state"][name].shape != tensor.shape
              or not torch.allclose(rank0["state"][name], tensor, atol=1e-6)]
    assert differ


def test_a_killed_distributed_run_resumes_from_its_ranks_checkpoints(tmp_path):
    """Two ranks widening with NAGN (reduced profile, rank 0's decision, DDP rebuilt), each
    writing its own checkpoint, killed after the first growth: restarted, they rebuild the
    grown network inside a new DDP wrapper and the synchronised plan's state, and end as the
    uninterrupted two-rank run, bit for bit."""
    (tmp_path / "whole").mkdir()
    mp.spawn(widen_run, args=(WORLD, str(tmp_path / "store-a"), str(tmp_path / "whole"),
                              "nagn"), nprocs=WORLD)
    for attempt, kill in (("b", 5), ("c", None)):  # killed during update 6, then continued
        mp.spawn(widen_run, args=(WORLD, str(tmp_path / f"store-{attempt}"), str(tmp_path),
                                  "nagn", True, kill if kill is not None else 10**6),
                 nprocs=WORLD)
    for r in range(WORLD):
        whole = torch.load(tmp_path / "whole" / f"rank{r}.pt")
        resumed = torch.load(tmp_path / f"rank{r}.pt")
        assert resumed["resumed_at"] == [4] and whole["resumed_at"] == []
        assert resumed["events"] == whole["events"] and resumed["loss"] == whole["loss"]
        for name, tensor in whole["state"].items():
            assert torch.equal(resumed["state"][name], tensor), name
