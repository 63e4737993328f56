"""The NAGN chapter's summaries of its records (growcore/chapters/nagn.py): the contrasts at the
explicit bottlenecks, the grown/static ratios paired by seed, when the growth fired, the
accuracy claim's threshold and the lab preset."""

import numpy as np
import pytest
import torch

from growcore.chapters import nagn as chapter
from growcore.claims import Claim
from growcore.uncertainty import mean_interval
from growcore.where import relative_contrast

FIG1 = [[8, 3, 8], [16, 4, 16], [32, 4, 32]]


def _record(seeds, accuracy, time, flops, events=(), per_epoch=10):
    """A minimal record: one evaluation per seed at the end, totals per seed, events."""
    return {"seeds": list(seeds), "iterations_per_epoch": per_epoch,
            "metrics": {"evals": [[{"iteration": 5 * per_epoch, "test_error": 1 - a}]
                                  for a in accuracy],
                        "wall_time": [[0.0, t] for t in time],
                        "cost_flops": [[0.0, f] for f in flops],
                        "events": list(events)}}


def test_ratios_pair_grown_and_static_seed_by_seed():
    grown = _record([0, 1], [0.40, 0.30], [8.0, 9.0], [50.0, 60.0])
    static = _record([0, 1], [0.50, 0.30], [10.0, 10.0], [100.0, 100.0])
    r = chapter.paired_ratios(grown, static)
    assert r["accuracy"] == pytest.approx([0.8, 1.0])
    assert r["time"] == pytest.approx([0.8, 0.9])
    assert r["flops"] == pytest.approx([0.5, 0.6])
    # the seed-mean ratios of the chapter's older summary are not the mean of the pairs
    assert chapter.ratios(grown, static)["accuracy"] == pytest.approx(0.7 / 0.8)
    with pytest.raises(ValueError, match="seeds"):
        chapter.paired_ratios(grown, _record([0, 2], [0.5, 0.3], [1, 1], [1, 1]))


def test_growth_timing_says_when_the_first_growth_came():
    events = [{"iteration": 125, "seeds": [0]}, {"iteration": 140, "seeds": [0]},
              {"iteration": 30, "seeds": [1]}]
    record = _record([0, 1, 2], [0.4] * 3, [1] * 3, [1] * 3, events)
    t = chapter.growth_timing(record, epochs=15)
    assert t["first"] == [12.5, 3.0, None] and t["grew"] == 2 and t["earliest"] == 3.0
    assert not t["late"] and "fired in 2 of 3 seeds" in t["sentence"]
    assert "seed 2: no growth" in t["sentence"] and "leaving 12 of the 15 epochs" in t["sentence"]
    late = chapter.growth_timing(_record([0], [0.4], [1], [1], events[:1]), epochs=15)
    assert late["late"] and "83 % of the run" in late["sentence"]
    assert "down to 7 % of its start" in late["sentence"]  # (1 + cos(pi 12.5 / 15)) / 2
    none = chapter.growth_timing(_record([0, 1], [0.4] * 2, [1] * 2, [1] * 2), epochs=15)
    assert none["late"] and none["earliest"] is None
    assert none["sentence"].startswith("The trigger did not fire within 15 epochs in any of its 2")


def test_contrasts_are_read_at_the_explicit_bottlenecks():
    widths = [n for block in FIG1 for n in block] + [10]
    rng = np.random.default_rng(0)
    rows = {reading: rng.uniform(0.5, 2.0, size=(3, len(widths))).tolist()
            for reading in chapter.READINGS}
    record = {"metrics": {"observed": [{reading: rows[reading][s] for reading in rows}
                                       for s in range(3)],
                          "final_model": [{"config": FIG1, "num_classes": 10}]}}
    r, necks, got_widths = chapter.contrasts(record)
    assert necks == [1, 4, 7] and got_widths == widths
    for reading in chapter.READINGS:
        assert r[reading].shape == (3, 3)
        for s in range(3):
            full = relative_contrast(torch.tensor(rows[reading][s], dtype=torch.float64)).numpy()
            assert r[reading][s] == pytest.approx(full[necks], rel=1e-12)


def test_accuracy_threshold_is_the_papers_mean_minus_two_sd_and_decides_the_verdict():
    mean, sd = chapter.PAPER_RATIOS["accuracy"]
    assert chapter.ACCURACY_FLOOR == pytest.approx(mean - 2 * sd) == pytest.approx(0.976)

    def verdict(values):
        return Claim("accuracy_ratio", "s", "§4.1", "m", mean_interval(values), "above",
                     chapter.ACCURACY_FLOOR).verdict

    assert verdict([1.00, 1.01, 0.99, 1.02]) == "confirmed"
    assert verdict([0.90, 0.92, 0.91, 0.93]) == "contradicted"
    assert verdict([0.80, 1.05, 0.90, 1.02]) == "not resolved"


def test_the_scale_and_the_split_are_described_without_paths():
    p = chapter.notebook_parameters("smoke")
    text = chapter.scale(p)
    assert text.startswith("smoke preset, reduced:") and "bottleneck check over 2 seeds" in text
    split = type("S", (), {"y_train": [0] * 4, "y_val": [0] * 2, "y_test": [0] * 3,
                           "X_train": torch.zeros(4, 3, 32, 32)})()
    described = chapter.describe_split(split)
    assert described.startswith("train 4, val 2, test 3 images") and "/" not in described


def test_lab_preset_keeps_the_cpu_protocol_with_fewer_runs():
    lab, cpu = chapter.notebook_parameters("lab"), chapter.notebook_parameters("cpu")
    assert lab["preset"] == "lab" and "lab" in chapter.PRESETS
    protocol = ("n_train", "n_val", "n_test", "epochs", "batch_size", "lr", "evals_per_epoch",
                "w_acc", "delta_acc", "delta_stop", "tau", "bottleneck_epochs")
    assert {k: lab[k] for k in protocol} == {k: cpu[k] for k in protocol}
    assert lab["bottleneck_seeds"] == cpu["bottleneck_seeds"] == 5
    runs = lambda p: p["fig1_seeds"] + 2 * len(p["configurations"]) * p["n_seeds"]  # noqa: E731
    assert runs(lab) < runs(cpu)
    assert all(c in cpu["configurations"] for c in lab["configurations"])


def test_bottleneck_check_runs_over_its_own_seeds():
    p = {**chapter.notebook_parameters("smoke"), "bottleneck_seeds": 3, "fig1_seeds": 1}
    config = chapter.bottleneck_check(p)
    assert config["seeds"] == [0, 1, 2] and config["plan"] is None
    assert chapter.experiments(p)["fig1"]["seeds"] == [0]
    assert set(config["train"]["observe"]) == set(chapter.READINGS)
