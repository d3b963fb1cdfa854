"""Compare run folders: one markdown table of headline numbers (with the untrained floor) and a bar plot."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from flare_vlp.experiments.plots import plot_comparison
from flare_vlp.experiments.run_folder import load_summary

__all__ = ["HEADLINE", "compare_runs", "comparison_table"]

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


def _cell(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def comparison_table(rows: dict[str, dict], metrics: Sequence[str] = HEADLINE) -> str:
    """Markdown: one row per run, one column per metric."""
    lines = ["| run | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for name, summary in rows.items():
        lines.append(f"| {name} | " + " | ".join(_cell(summary.get(m)) for m in metrics) + " |")
    return "\n".join(lines)


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
    if plot_path is not None:
        plot_comparison(rows, [m for m in HEADLINE if not m.startswith("chance")], plot_path)
    return comparison_table(rows)
