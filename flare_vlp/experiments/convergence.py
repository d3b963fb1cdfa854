"""The convergence criterion every benchmark run reports.

A federated run has converged when the **global held-out loss** (the mean over sites of the received global model's
loss on each site's val split: the ``global_val_loss`` of the round's first task) moved
by less than ``tol`` (1%) of its mean over the last ``window`` (5) rounds: ``(max - min) / mean < tol``. A baseline
(centralized, local) has no rounds; its training loss is cut into as many equal windows of steps and read the same
way, and the report says which series was used.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["WINDOW", "TOL", "convergence", "global_loss_by_round", "train_loss_by_window"]

WINDOW, TOL = 5, 0.01


def convergence(series: Sequence[float], window: int = WINDOW, tol: float = TOL, source: str = "") -> dict:
    """Whether ``series`` (one value per round) met the criterion, with the measured relative change."""
    values = np.asarray([v for v in series if v is not None and np.isfinite(v)], dtype=float)
    out = {"source": source, "window": window, "tol": tol, "rounds": int(values.size)}
    if values.size < window:
        return {**out, "met": False, "relative_change": float("nan"), "last": float("nan")}
    tail = values[-window:]
    change = float((tail.max() - tail.min()) / abs(tail.mean()))
    return {**out, "met": bool(change < tol), "relative_change": change, "last": float(tail[-1])}


def global_loss_by_round(metrics: str | Path) -> list[float]:
    """Per round, the mean ``global_val_loss`` of the sites' replies to the round's first task."""
    path = Path(metrics)
    if not path.is_file():
        return []
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    first_task: dict[int, str] = {}
    rows: dict[int, list[float]] = {}
    for e in events:
        if e.get("event") != "site" or e.get("global_val_loss") is None:
            continue
        rnd = int(e["round"])
        first_task.setdefault(rnd, e.get("task", "train"))
        if e.get("task", "train") == first_task[rnd]:
            rows.setdefault(rnd, []).append(float(e["global_val_loss"]))
    return [float(np.nanmean(rows[rnd])) if np.isfinite(rows[rnd]).any() else float("nan") for rnd in sorted(rows)]


def train_loss_by_window(losses: Sequence[float], windows: int) -> list[float]:
    """A baseline's per-step training losses averaged over ``windows`` equal consecutive chunks."""
    chunks = np.array_split(np.asarray(losses, dtype=float), max(1, min(windows, len(losses))))
    return [float(c.mean()) for c in chunks if c.size]
