"""Multi-label classification metrics of a personalized site model: balanced accuracy at per-finding thresholds
chosen on the site's val split, and macro ROC AUC (findings with one class only in the test split are skipped)."""

from __future__ import annotations

import numpy as np

from flare_vlp.evaluation.metrics import nanmean, safe_auc

__all__ = ["balanced_accuracy", "best_threshold", "classification_metrics"]


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """``(TPR + TNR) / 2`` of one binary column; NaN when the column has one class only (undefined)."""
    y, pred = np.asarray(y).astype(bool), np.asarray(pred).astype(bool)
    if y.all() or not y.any():
        return float("nan")
    return float(0.5 * (pred[y].mean() + (~pred[~y]).mean()))


def best_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """The score threshold maximising balanced accuracy on ``(y, score)`` (0.5 when it is undefined there)."""
    y = np.asarray(y).astype(bool)
    if y.all() or not y.any():
        return 0.5
    candidates = np.unique(np.concatenate([score, [0.5]]))
    values = [balanced_accuracy(y, score >= t) for t in candidates]
    return float(candidates[int(np.argmax(values))])


def classification_metrics(
    test: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray] | None
) -> dict[str, float]:
    """``test_bacc`` (thresholds from ``val``; 0.5 without one) and ``test_auc`` (macro), each the mean over the
    findings where it is defined; ``n_test``."""
    y, s = test
    bacc, auc = [], []
    for j in range(y.shape[1]):
        t = best_threshold(val[0][:, j], val[1][:, j]) if val is not None else 0.5
        bacc.append(balanced_accuracy(y[:, j], s[:, j] >= t))
        auc.append(safe_auc(y[:, j], s[:, j]))
    return {"test_bacc": nanmean(bacc), "test_auc": nanmean(auc), "n_test": int(len(y))}
