"""Plots drawn from result records: mean over seeds with a confidence band."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from scipy import stats

CONFIDENCE = 0.95  # level of the band around the mean over seeds


def mean_band(Y, level: float = CONFIDENCE):
    """Mean over seeds (axis 0) and the half-width of its t confidence interval at ``level``,
    each of shape ``Y.shape[1:]`` (``Y``: e.g. [S] or [S, T]); the half-width is zero with a
    single seed. Vectorised over the other axes; one number's interval:
    :func:`growcore.uncertainty.mean_interval`."""
    Y = np.asarray(Y, dtype=float)
    mean = Y.mean(axis=0)
    n = Y.shape[0]
    if n < 2:
        return mean, np.zeros_like(mean)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * Y.std(axis=0, ddof=1) / np.sqrt(n)
    return mean, half


def band(ax, x, Y, label: str, color=None, level: float = CONFIDENCE, **kwargs):
    """Draw the mean of ``Y`` ([S, T]) against ``x`` with the book's uncertainty convention
    (:mod:`growcore.uncertainty`): its t band over the seeds, computed in log space when the
    axis is already log-scaled (geometric mean, the band of the mean log); with fewer than
    :data:`~growcore.uncertainty.MIN_BAND` seeds the seeds themselves as thin lines instead
    of a band."""
    from growcore.uncertainty import MIN_BAND

    Y = np.atleast_2d(np.asarray(Y, dtype=float))
    log = ax.get_yscale() == "log"
    if log:
        Y = np.log(np.clip(Y, np.finfo(float).tiny, None))
    mean, half = mean_band(Y, level)
    back = np.exp if log else (lambda v: v)
    (line,) = ax.plot(x, back(mean), label=label, color=color, **kwargs)
    if Y.shape[0] < MIN_BAND:
        for y in Y:
            ax.plot(x, back(y), color=line.get_color(), alpha=0.35, lw=0.8)
    else:
        ax.fill_between(x, back(mean - half), back(mean + half), color=line.get_color(),
                        alpha=0.2, lw=0)
    return line


def growth_iterations(record: dict) -> list[int]:
    """Iterations at which the run of ``record`` grew."""
    return sorted({e["iteration"] for e in record["metrics"]["events"]})


def curves(ax, records: dict[str, dict], metric: str = "loss", x: str = "iteration",
           mark_growth: bool = True, colors=None):
    """Plot ``metric`` of several records (label -> record), mean and band over seeds.

    ``x="iteration"`` or ``x="cost_flops"`` (cumulative training cost, growth steps included).
    """
    for i, (label, record) in enumerate(records.items()):
        metrics = record["metrics"]
        Y = np.asarray(metrics[metric])
        # per-seed x values (e.g. cost) are averaged: they differ only if seeds grew differently
        xs = np.arange(Y.shape[1]) if x == "iteration" else np.asarray(metrics[x]).mean(axis=0)
        color = colors[i] if colors else None
        line = band(ax, xs, Y, f"{label} (n={Y.shape[0]})", color=color)
        if mark_growth:
            for t in growth_iterations(record):
                ax.axvline(xs[t], color=line.get_color(), ls=":", lw=1)
    ax.set_xlabel({"iteration": "iteration", "cost_flops": "cumulative training FLOPs"}[x])
    ax.set_ylabel(metric.replace("_", " "))
    ax.legend(fontsize="small")
    return ax


def loss_and_error(records: dict[str, dict], x: str = "iteration", title: str | None = None,
                   colors=None, log_loss: bool = False):
    """Loss (top) and test error (bottom) of several records, as in the paper's figures."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    if log_loss:  # before drawing: the band is then computed in log space (plots.band)
        top.set_yscale("log")
    curves(top, records, "loss", x, colors=colors)
    curves(bottom, records, "test_error", x, colors=colors)
    if title:
        top.set_title(title)
    bottom.get_legend().remove()
    fig.tight_layout()
    return fig


def set_theme() -> None:
    """The book's plotting theme (seaborn), set in this one place by the chapters' setup:
    white grid, colour-blind palette, figures at 150 dpi so that two-panel text stays
    legible at the page's width."""
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 150, "savefig.dpi": 150})
