"""PNG plots of run folders (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["plot_losses", "plot_comparison", "plot_site_weights", "plot_overview"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _smooth(values: Sequence[float], window: int) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if len(v) < window or window < 2:
        return v
    return np.convolve(v, np.ones(window) / window, mode="valid")


def _label_lines(ax, xlabel: str, ylabel: str, title: str, fontsize: int = 8) -> None:
    """A line plot's labels, grid and legend."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=fontsize)


def _save(plt, fig, path: str | Path) -> Path:
    """Every figure's finish: layout, save, close."""
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_losses(losses: Mapping[str, Sequence[float]], path: str | Path, title: str = "training loss") -> Path:
    """One smoothed loss curve per site (or one for pooled training)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    for name, values in losses.items():
        window = max(1, len(values) // 30)
        smooth = _smooth(values, window)
        ax.plot(np.arange(len(smooth)) + window // 2, smooth, label=name, lw=1.4)
    _label_lines(ax, "optimizer step", "loss", title)
    return _save(plt, fig, path)


def plot_comparison(rows: Mapping[str, Mapping[str, float]], metrics: Sequence[str], path: str | Path) -> Path:
    """Grouped bars: one group per metric, one bar per run."""
    plt = _plt()
    names = list(rows)
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(metrics) * max(1, len(names)) / 2), 3.8), dpi=110)
    width = 0.8 / max(1, len(names))
    x = np.arange(len(metrics))
    for i, name in enumerate(names):
        vals = [rows[name].get(m) for m in metrics]
        vals = [np.nan if v is None else v for v in vals]
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels([m.replace("_", "\n") for m in metrics], fontsize=7)
    ax.set_ylim(0, 1)
    ax.axhline(0.5, color="gray", lw=0.8, ls="--")
    ax.legend(fontsize=8, ncol=min(4, len(names)))
    ax.grid(axis="y", alpha=0.3)
    return _save(plt, fig, path)


def plot_site_weights(
    trajectories: Mapping[str, Sequence[float]],
    path: str | Path,
    title: str = "site weights",
    ylabel: str = "aggregation weight",
) -> Path:
    """A site weight per round, one line per site, with the uniform weight 1/K dashed (e.g. a robust aggregation's
    weights: whom they favour, and whether they settle)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    _weight_lines(ax, trajectories)
    _label_lines(ax, "round", ylabel, title)
    return _save(plt, fig, path)


def _weight_lines(ax, trajectories: Mapping[str, Sequence[float]]) -> None:
    """A weight per round, one line per site, and the uniform weight 1/K dashed."""
    for site, values in sorted(trajectories.items()):
        ax.plot(np.arange(len(values)), values, marker="o", ms=3, lw=1.4, label=site)
    if trajectories:
        ax.axhline(1.0 / len(trajectories), color="grey", ls="--", lw=1, label="uniform")


def plot_overview(
    per_site: Mapping[str, Mapping[str, float]],
    weights: Mapping[str, Sequence[float]],
    path: str | Path,
    metric: str = "zero-shot macro AUC",
    floor: float | None = None,
    weights_title: str = "site weights per round",
) -> Path:
    """One figure to read at a glance: ``metric`` per site side by side for every run (left) and one run's site
    weights per round (right, titled ``weights_title``; omitted when there are none)."""
    plt = _plt()
    ncols = 2 if weights else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.5 * ncols, 3.8), dpi=110, squeeze=False)
    ax = axes[0, 0]
    runs = list(per_site)
    sites = sorted({s for row in per_site.values() for s in row}, key=lambda s: (s.startswith("unseen"), s))
    width = 0.8 / max(1, len(runs))
    x = np.arange(len(sites))
    for i, run in enumerate(runs):
        vals = [per_site[run].get(s, np.nan) for s in sites]
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=run)
    if floor is not None:
        ax.axhline(floor, color="black", lw=0.8, ls=":", label="untrained floor")
    ax.axhline(0.5, color="gray", lw=0.8, ls="--")
    ax.set_xticks(x)
    ax.set_xticklabels(sites, fontsize=8)
    lo = np.nanmin([v for row in per_site.values() for v in row.values()] + [0.5])
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per test site")
    ax.legend(fontsize=7, ncol=min(3, len(runs) + 1))
    ax.grid(axis="y", alpha=0.3)
    if weights:
        ax = axes[0, 1]
        _weight_lines(ax, weights)
        _label_lines(ax, "round", "aggregation weight", weights_title, fontsize=7)
    return _save(plt, fig, path)
