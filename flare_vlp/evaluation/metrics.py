"""Scalar metrics with explicit handling of degenerate cases (a site test set with no positives gives NaN, not 0.5)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
from sklearn.metrics import roc_auc_score

__all__ = ["safe_auc", "per_finding_auc", "nanmean"]


def safe_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC, or NaN when only one class is present or a score is NaN (e.g. a probe column fitted on one class):
    AUC is undefined there."""
    y_true, score = np.asarray(y_true), np.asarray(score, dtype=float)
    if y_true.size == 0 or y_true.min() == y_true.max() or np.isnan(score).any():
        return float("nan")
    return float(roc_auc_score(y_true, np.asarray(score)))


def per_finding_auc(labels: np.ndarray, scores: np.ndarray, findings: Iterable[str]) -> dict[str, float]:
    """AUC per column plus ``macro`` (mean over the findings whose AUC is defined)."""
    out = {f: safe_auc(labels[:, j], scores[:, j]) for j, f in enumerate(findings)}
    out["macro"] = nanmean(out.values())
    return out


def nanmean(values: Iterable[float] | Mapping) -> float:
    vals = [float(v) for v in (values.values() if isinstance(values, Mapping) else values)]
    vals = [v for v in vals if not math.isnan(v)]
    return float(sum(vals) / len(vals)) if vals else float("nan")
