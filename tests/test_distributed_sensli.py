"""SensLI on two gloo processes: the merits of an ``nn.Module``'s virtual identity layers,
from gradients all-reduced over the ranks' shards, equal those of one process on all the
data, and a run that inserts a layer where they are largest grows as the one process does
(each rank alone would score other merits: the control)."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_distributed import assert_as_one_process

from growcore.data import spiral
from growcore.distributed import mean_over_ranks, shard, synchronised, wrap
from growcore.how import IdentityLayer
from growcore.models.mlp import MLP
from growcore.models.staged import unwrap
from growcore.plan import GrowthPlan
from growcore.stats.virtual import module_merits
from growcore.train import train
from growcore.when import AtIterations
from growcore.where import SensLI

WORLD = 2
GROW_AT, ITERATIONS = 3, 8
SAME = 1e-10  # float64: sums over two halves differ from one sum by rounding only
DIFFERENT = 1e-3  # relative gap of one shard's merits from the whole data's (the control)


def network() -> MLP:
    torch.manual_seed(0)
    return MLP([2, 6, 6, 2], activation="relu").double()


def sensli_run(rank: int, world: int, store: str, out: str) -> None:
    """Merits (all-reduced and, on a shard, not) and a SensLI run of full-batch gradient
    descent, on one process (``world == 1``) or as one of ``world`` ranks."""
    torch.set_num_threads(1)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the inserted layers are made in it
    try:
        if world > 1:
            dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                                    world_size=world)
        split = spiral(40, dtype=torch.float64)
        assert len(split.y_train) % WORLD == 0, "equal shards"
        model, plan = network(), GrowthPlan(AtIterations(GROW_AT), SensLI(), IdentityLayer())
        if world > 1:
            split = shard(split, rank, world)
        sites = model.depth_sites()
        merits = {"own": module_merits(model, sites, split)}
        if world > 1:
            merits["reduced"] = module_merits(model, sites, split, reduce=mean_over_ranks)
            model, plan = wrap(model), synchronised(plan)
        final, history = train(model, split, iterations=ITERATIONS, lr=0.1, plan=plan,
                               progress=False)
        torch.save({**merits, "state": unwrap(final).state_dict(),
                    "widths": unwrap(final).widths,
                    "loss": [float(value) for value in history.loss],
                    "events": [(e["iteration"], e["chosen"], e["merits"])
                               for e in history.events]}, f"{out}/rank{rank}.pt")
        if world > 1:
            dist.destroy_process_group()
    finally:
        torch.set_default_dtype(default_dtype)


def test_two_processes_score_and_insert_as_one(tmp_path):
    (tmp_path / "single").mkdir()
    sensli_run(0, 1, "", str(tmp_path / "single"))
    mp.spawn(sensli_run, args=(WORLD, str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD)
    single = torch.load(tmp_path / "single" / "rank0.pt")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    assert len(single["events"]) == 1 and len(single["widths"]) == 5, "one layer inserted"
    for result in ranks:
        assert torch.allclose(result["reduced"], single["own"], rtol=SAME, atol=0)
        assert not torch.allclose(result["own"], single["own"], rtol=DIFFERENT, atol=0)
        assert [e[:2] for e in result["events"]] == [e[:2] for e in single["events"]]
        assert result["events"][0][2] == pytest.approx(single["events"][0][2], rel=SAME)
        assert result["widths"] == single["widths"]
    assert_as_one_process(ranks, single, SAME)
