"""FedAID / FedDRA's plot of a finished run (:attr:`~flare_vlp.methods.registry.MethodSpec.plots`): the DRO site
weights lambda per round, the telling diagnostic of the robust aggregation."""

from __future__ import annotations

from pathlib import Path

from flare_vlp.experiments.plots import plot_site_weights
from flare_vlp.experiments.run_folder import read_events

__all__ = ["dro_trajectories", "plot_dro_weights"]


def dro_trajectories(metrics: str | Path) -> dict[str, list[float]]:
    """Site -> lambda per round, from a FedDRA / FedAID run's ``dro`` events (empty for other methods)."""
    out: dict[str, list[float]] = {}
    for event in read_events(metrics, "dro"):
        for site, weight in event["lmbda"].items():
            out.setdefault(site, []).append(float(weight))
    return out


def plot_dro_weights(run_dir: str | Path, method: str) -> list[Path]:
    """``plots/dro_weights.png`` of the run in ``run_dir``: lambda per round, one line per site (none without ``dro``
    events)."""
    run_dir = Path(run_dir)
    lambdas = dro_trajectories(run_dir / "metrics.jsonl")
    if not lambdas:
        return []
    path = run_dir / "plots" / "dro_weights.png"
    title, ylabel = f"{method}: site weights lambda", "lambda (aggregation weight)"
    return [plot_site_weights(lambdas, path, title=title, ylabel=ylabel)]
