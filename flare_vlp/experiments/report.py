"""Compare run folders: one markdown table of headline numbers (with the untrained floor) and a bar plot.

The columns are the global model's :data:`HEADLINE` plus the columns a run's method adds (its registry entry's
``report_columns``, handed in by the caller: this layer knows no method) when some run has them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from flare_vlp.experiments.plots import plot_comparison
from flare_vlp.experiments.run_folder import load_summary, read_events

__all__ = ["HEADLINE", "compare_runs", "comparison_table", "per_site_scores", "site_weights_by_round"]

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


def _columns(rows: dict[str, dict], extra: Sequence[str] = ()) -> list[str]:
    """HEADLINE (unless no run has any of it but some has an ``extra`` column), then ``extra`` when some run has it."""
    has = lambda metrics: any(m in r for r in rows.values() for m in metrics)  # noqa: E731
    extra = [m for m in dict.fromkeys(extra) if m not in HEADLINE]
    return [*(HEADLINE if has(HEADLINE) or not has(extra) else []), *(extra if has(extra) else [])]


def _cell(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def comparison_table(rows: dict[str, dict], metrics: Sequence[str] | None = None, extra: Sequence[str] = ()) -> str:
    """Markdown: one row per run, one column per metric (default: the headline the runs have and the ``extra``
    columns of their methods, see ``_columns``)."""
    metrics = _columns(rows, extra) if metrics is None else metrics
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


def compare_runs(
    run_dirs: Sequence[str | Path],
    plot_path: str | Path | None = None,
    columns: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """Table of the runs' summaries (plus a row for the first run's untrained floor) and an optional bar plot.

    ``columns``: method -> the columns its runs add (``methods.registry.report_columns()``); a run's method is the
    ``method`` its ``summary.json`` records.
    """
    rows: dict[str, dict] = {}
    extra: list[str] = []
    floor = None
    for run_dir in run_dirs:
        data = load_summary(run_dir)
        extra += (columns or {}).get(data.get("method"), ())
        name = Path(run_dir).name
        if name in rows:
            name = f"{name} ({Path(run_dir).parent.name})"
        rows[name] = data["summary"]
        floor = floor or data.get("floor")
    if floor:
        rows["untrained floor"] = floor
    metrics = _columns(rows, extra)
    if plot_path is not None:
        plot_comparison(rows, [m for m in metrics if not m.startswith("chance")], plot_path)
    return comparison_table(rows, metrics)


def site_weights_by_round(metrics: str | Path) -> dict[str, list[float]]:
    """Site -> its aggregation weight per round (normalised over the round's sites), from the ``round`` events of the
    round's first task in a run's ``metrics.jsonl``: the weights any weight-averaging strategy combined with (n_k / n
    for FedAvg-style averaging, the robust weights of a DRO strategy). Empty when the run logged none."""
    first: dict[int, dict[str, float]] = {}
    for event in read_events(metrics, "round"):
        if isinstance(event.get("weights"), dict) and int(event["round"]) not in first:
            first[int(event["round"])] = event["weights"]
    out: dict[str, list[float]] = {}
    for rnd in sorted(first):
        total = sum(float(w) for w in first[rnd].values())
        for site, weight in first[rnd].items():
            out.setdefault(site, []).append(float(weight) / total if total > 0 else math.nan)
    return out
