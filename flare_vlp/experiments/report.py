"""Compare run folders: one markdown table of headline numbers (with the untrained floor) and a bar plot."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from flare_vlp.experiments.plots import plot_comparison
from flare_vlp.experiments.run_folder import load_summary

__all__ = ["HEADLINE", "PERSONALIZED", "compare_runs", "comparison_table", "per_site_scores"]

HEADLINE = [
    "zero_shot_pooled",
    "zero_shot_worst_site",
    "zero_shot_unseen",
    "linear_probe_pooled",
    "linear_probe_worst_site",
    "linear_probe_unseen",
    "i2t_R@5",
    "t2i_R@5",
    "chance_R@5",
]


PERSONALIZED = ["bacc_mean", "bacc_worst", "auc_mean", "auc_worst"]
"""The headline of a personalized method (FedOPAL and its LoRA baselines): each site's own model on its own test
split, mean and worst site of balanced accuracy and macro AUC."""


def _columns(rows: dict[str, dict]) -> list[str]:
    """HEADLINE (unless no run has any of it), then PERSONALIZED when some run has it."""
    has = lambda metrics: any(m in r for r in rows.values() for m in metrics)  # noqa: E731
    return [*(HEADLINE if has(HEADLINE) or not has(PERSONALIZED) else []), *(PERSONALIZED if has(PERSONALIZED) else [])]


def _cell(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def comparison_table(rows: dict[str, dict], metrics: Sequence[str] | None = None) -> str:
    """Markdown: one row per run, one column per metric (default: the headline the runs have, see ``_columns``)."""
    metrics = _columns(rows) if metrics is None else metrics
    lines = ["| run | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for name, summary in rows.items():
        lines.append(f"| {name} | " + " | ".join(_cell(summary.get(m)) for m in metrics) + " |")
    return "\n".join(lines)


def per_site_scores(run_dir: str | Path, metric: str = "zero_shot") -> dict[str, float]:
    """``metric``'s macro AUC per test site of a run (a local-only run: each site's own model on its own site, and
    the mean of the site models on a test-only site)."""
    ev = load_summary(run_dir).get("eval", {})
    out: dict[str, float] = {}
    if "per_site_models" in ev:
        models = ev["per_site_models"]
        for site, model_ev in models.items():
            out[site] = model_ev["groups"][site][metric]["macro"]
        held_out = {g for m in models.values() for g in m["groups"]} - set(models) - {"pooled"}
        for group in held_out:
            out[group] = float(np.nanmean([m["groups"][group][metric]["macro"] for m in models.values()]))
        return out
    for group, values in ev.get("groups", {}).items():
        if group != "pooled" and metric in values:
            out[group] = values[metric]["macro"]
    return out


def compare_runs(run_dirs: Sequence[str | Path], plot_path: str | Path | None = None) -> str:
    """Table of the runs' summaries (plus a row for the first run's untrained floor) and an optional bar plot."""
    rows: dict[str, dict] = {}
    floor = None
    for run_dir in run_dirs:
        data = load_summary(run_dir)
        name = Path(run_dir).name
        if name in rows:
            name = f"{name} ({Path(run_dir).parent.name})"
        rows[name] = data["summary"]
        floor = floor or data.get("floor")
    if floor:
        rows["untrained floor"] = floor
    columns = _columns(rows)
    if plot_path is not None:
        plot_comparison(rows, [m for m in columns if not m.startswith("chance")], plot_path)
    return comparison_table(rows, columns)
