"""How a federated run's result is evaluated once FLARE (or the in-process runner) is done: one evaluator per method.

A method names its evaluator in the registry (:attr:`~flare_vlp.methods.registry.MethodSpec.evaluator`). The
evaluator gets a :class:`RunEvaluation` (the run's working folder with ``metrics.jsonl`` and ``models/``, the
experiment config, the manifest, the method's typed settings, the FLARE client -> data site map) and returns an
:class:`Evaluated`: the headline numbers and the extras to keep in ``summary.json``. The caller
(:func:`flare_vlp.recipes.run.run_federated`) adds what every run has (loss plots, DRO weights, convergence, wall
time) and writes the summary, so ``flare-vlp report`` compares any method with any baseline.

* :func:`evaluate_global_model` (default): the persisted global dual encoder on the pooled test split with the same
  protocol as the centralized and local baselines (FedAvg, FedProx, FedAID, FedDRA).
* A personalized method has no single global model: its sites evaluate their own models on their own test split
  and report metrics (only metrics leave a site); its evaluator reads them from ``metrics.jsonl``.
* A method whose global model is not the experiment's dual encoder (a larger server model) builds it itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flare_vlp.config import ExperimentConfig
from flare_vlp.data.manifest import Manifest

__all__ = ["Evaluated", "RunEvaluation", "evaluate_global_model"]


@dataclass
class RunEvaluation:
    """What an evaluator gets.

    Args:
        cfg: the experiment config of the run (server side: the job's config without role overrides).
        manifest: the run's manifest (every site, every split).
        run_dir: the run's working folder (``metrics.jsonl``, ``models/``, ``plots/``; renamed into place later).
        method: the registered method name.
        settings: the method's typed config.
        site_map: FLARE client -> data site.
        echo: progress lines for the user.
    """

    cfg: ExperimentConfig
    manifest: Manifest
    run_dir: Path
    method: str
    settings: Any
    site_map: Mapping[str, str] = field(default_factory=dict)
    echo: Callable[[str], None] = print

    @property
    def metrics_file(self) -> Path:
        return self.run_dir / "metrics.jsonl"


@dataclass
class Evaluated:
    """An evaluator's result: ``summary`` (headline numbers, flat name -> float) and ``extra`` (kept in
    ``summary.json``, e.g. the full evaluation, per-site results, the untrained floor under ``floor``)."""

    summary: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)


def evaluate_global_model(run: RunEvaluation) -> Evaluated:
    """The persisted global dual encoder (``models/global.safetensors``) on the pooled test split, with the
    protocol of the centralized / local baselines; the untrained model's numbers as ``floor`` when configured.

    Raises:
        RuntimeError: the run left no global model (the FLARE logs under ``run_dir/flare`` say why).
    """
    from flare_vlp.evaluation import evaluate_model
    from flare_vlp.experiments.baselines import probe_subset
    from flare_vlp.experiments.builders import build_dataset, build_model, build_tokenizer, load_model_weights

    cfg, manifest = run.cfg, run.manifest
    model_file = run.run_dir / "models" / "global.safetensors"
    if not model_file.is_file():
        raise RuntimeError(
            f"the {run.method} job ended without a global model; see the logs under {run.run_dir / 'flare'}"
        )
    tokenizer = build_tokenizer(cfg.model)
    test_ds = build_dataset(manifest.select(split="test"), cfg.data, train=False)
    probe_ds = build_dataset(probe_subset(manifest, cfg.seed, cfg.eval.probe_samples), cfg.data, train=False)

    def evaluate(model):
        return evaluate_model(
            model, tokenizer, test_ds, manifest.findings, cfg.eval, probe_train=probe_ds,
            max_length=cfg.data.max_text_length, seed=cfg.seed,
        )  # fmt: skip

    model = build_model(cfg.model, seed=cfg.seed)
    floor = evaluate(model) if cfg.eval.untrained_floor else None
    ev = evaluate(load_model_weights(model, model_file))
    extra: dict[str, Any] = {"eval": ev}
    if floor is not None:
        extra["floor"] = floor["summary"]
    return Evaluated(ev["summary"], extra)
