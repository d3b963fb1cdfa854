"""The run evaluator of FedOPAL and its baselines: a personalized method has no global model, so the summary is
built from the metrics the sites reported for their own model on their own test split in the last round
(``metrics.jsonl`` ``site`` records): per-site balanced accuracy and macro AUC, their mean and the worst site."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

from flare_vlp.experiments.federated_eval import Evaluated, RunEvaluation

__all__ = ["evaluate_personalized", "personalized_summary"]


def _site_records(metrics_file: Path) -> Iterable[Mapping]:
    for line in metrics_file.read_text().splitlines():
        record = json.loads(line)
        if record.get("event") == "site" and "test_bacc" in record:
            yield record


def personalized_summary(metrics_file: Path) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """``(summary, per_site)`` from the last ``test_bacc`` / ``test_auc`` each site reported.

    Raises:
        RuntimeError: no site reported test metrics (the run did not reach its last round).
    """
    per_site: dict[str, dict[str, float]] = {}
    for record in _site_records(metrics_file):
        per_site[record["site"]] = {
            k: math.nan if record[k] is None else float(record[k])
            for k in ("test_bacc", "test_auc", "orth_active_step")
            if k in record
        }
    if not per_site:
        raise RuntimeError(f"{metrics_file}: no site reported test metrics (did the run finish its last round?)")
    summary: dict[str, float] = {}
    for key, name in (("test_bacc", "bacc"), ("test_auc", "auc")):
        values = [m[key] for m in per_site.values() if not math.isnan(m.get(key, math.nan))]
        summary[f"{name}_mean"] = sum(values) / len(values) if values else math.nan
        summary[f"{name}_worst"] = min(values) if values else math.nan
    return summary, per_site


def evaluate_personalized(run: RunEvaluation) -> Evaluated:
    """The :class:`~flare_vlp.experiments.federated_eval.Evaluated` of a personalized run (see the module)."""
    summary, per_site = personalized_summary(run.metrics_file)
    return Evaluated(summary, {"per_site": per_site})
