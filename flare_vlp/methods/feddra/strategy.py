"""FedDRA and FedAID servers: distributionally robust site weights used AS aggregation weights, anchors, two stages.

methods.md section 1. Per round t the sites receive theta_t and report, with their update, ``l_k`` = the loss of
theta_t on their held-out (val) slice; the server takes one mirror-ascent step on lambda with those losses, projects
onto the ball ``P_rho`` (:func:`flare_vlp.algorithms.dro.dro_update`) and averages the updates with lambda. Unlike
the reference code (which scales each site's loss by lambda_k, close to a no-op under Adam), lambda weighs the
updates, as in DRFA / Agnostic FL. Losses arrive with the updates, so the robust estimate costs no extra round trip.

FedDRA runs each round as two tasks: ``train_deep`` (stage 1: only the deep groups train and travel, then the server
aggregates) and ``train`` (stage 2: the whole network). FedAID is the same without stage 1. Both send
``anchor_weight`` so every site adds ``lambda_anchor * (MSE(z_v, zbar_v) + MSE(z_t, zbar_t))`` to its loss.
lambda is logged per round (``dro`` events in metrics.jsonl), persisted with the global model and restored on resume.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from flare_vlp.algorithms.dro import chi_square_divergence, dro_update, kl_divergence
from flare_vlp.methods.messages import Message, Task, TaskName
from flare_vlp.methods.weights_strategy import WeightsStrategy, sample_counts

__all__ = ["DROStrategy", "GLOBAL_LOSS", "LOCAL_LOSS"]

GLOBAL_LOSS = "global_val_loss"
LOCAL_LOSS = "val_loss"


class DROStrategy(WeightsStrategy):
    """FedDRA (``FedDRAConfig``, two tasks per round) or FedAID (``FedAIDConfig``, one).

    Args:
        config: :class:`~flare_vlp.methods.feddra.config.FedDRAConfig` or ``FedAIDConfig``.
    """

    def setup(self, params) -> None:
        super().setup(params)
        self._lambda: dict[str, float] = {}
        self._round_weights: dict[str, float] = {}

    # -- tasks ------------------------------------------------------------------------------------------------

    def task_options(self) -> dict[str, Any]:
        weight = float(self.config.anchor_weight)
        return {"anchor_weight": weight} if weight > 0 else {}

    def round_tasks(self, rnd: int) -> list[Task]:
        total, options = self.ctx.num_rounds, self.task_options()
        full = Task(TaskName.TRAIN, rnd, total, ("all",), self.config.stage2_steps, 0, options)
        if not self.config.two_stage:
            return [full]
        deep = Task(
            TaskName.TRAIN_DEEP, rnd, total, tuple(self.config.deep_groups), self.config.stage1_steps, 0, options
        )
        return [deep, Task(full.name, rnd, total, full.groups, full.local_steps, 1, options)]

    def site_weights(self, task: Task, replies: Mapping[str, Message]) -> dict[str, float]:
        """lambda of the answering sites: updated once per round (first task), reused by the round's later task."""
        if task.index == 0 or not self._round_weights:
            self._round_weights = self.update_lambda(replies, task.round)
        weights = {site: self._round_weights.get(site, 0.0) for site in replies}
        if sum(weights.values()) <= 0:  # the round's later task heard only from sites that had no weight
            weights = {site: 1.0 for site in replies}
        return weights

    # -- state ------------------------------------------------------------------------------------------------

    def state(self) -> dict:
        return {"lambda": dict(self._lambda)}

    def restore(self, state: Mapping) -> None:
        restored = state.get("lambda") or {}
        self._lambda = {str(site): float(w) for site, w in restored.items()}
        if self._lambda:
            self.ctx.logger.info(f"restored DRO weights {self._lambda}")

    # -- the DRO step -----------------------------------------------------------------------------------------

    def update_lambda(self, replies: Mapping[str, Message], rnd: int) -> dict[str, float]:
        """One EG step + projection over the answering sites; returns their new lambda (summing to 1).

        Sites that did not answer keep their share of the total mass; a new site joins at the mean weight. A site
        without a usable loss is given the lambda-weighted mean loss of the others (so the step leaves it where it
        is) and a warning.
        """
        cfg = self.config
        sites = sorted(replies)
        for site in sites:
            if site not in self._lambda:
                self._lambda[site] = float(np.mean(list(self._lambda.values()))) if self._lambda else 1.0
        mass = sum(self._lambda[s] for s in sites)
        current = np.array([self._lambda[s] / mass for s in sites])
        losses = self._signals(replies, sites, current)
        center = self._centre(replies, sites)
        new = dro_update(current, losses, cfg.eta, cfg.rho, cfg.divergence, center)
        for site, w in zip(sites, new):
            self._lambda[site] = float(w) * mass
        total = sum(self._lambda.values())
        self._lambda = {s: w / total for s, w in self._lambda.items()}
        div_fn = chi_square_divergence if cfg.divergence == "chi2" else kl_divergence
        divergence = div_fn(new, center)
        self.ctx.log_event(
            "dro",
            round=rnd,
            sites=sites,
            lmbda=dict(zip(sites, map(float, new))),
            losses=dict(zip(sites, map(float, losses))),
            signal=cfg.signal,
            divergence=divergence,
            rho=cfg.rho,
            binding=bool(cfg.rho > 0 and divergence >= cfg.rho * (1 - 1e-9)),
        )
        self.ctx.logger.info(
            f"round {rnd}: DRO weights {dict(zip(sites, np.round(new, 4)))} (divergence {divergence:.4f})"
        )
        return dict(zip(sites, map(float, new)))

    def _signals(self, replies: Mapping[str, Message], sites: list[str], current: np.ndarray) -> np.ndarray:
        raw = np.full(len(sites), np.nan)
        for i, site in enumerate(sites):
            metrics = replies[site].metrics or {}
            try:
                value = float(metrics[GLOBAL_LOSS])
                if self.config.signal == "excess":
                    value -= float(metrics[LOCAL_LOSS])
                elif self.config.signal == "normalized":
                    value /= math.log(max(2, self.ctx.cfg.train.batch_size))
            except (KeyError, TypeError, ValueError):
                value = float("nan")
            raw[i] = value
        missing = ~np.isfinite(raw)
        if missing.all():
            self.ctx.logger.warning(f"no site reported a finite {GLOBAL_LOSS!r}: DRO weights unchanged this round")
            return np.zeros(len(sites))
        if missing.any():
            bad = [s for s, m in zip(sites, missing) if m]
            fill = float(np.average(raw[~missing], weights=current[~missing]))
            self.ctx.logger.warning(
                f"sites {bad} sent no finite {GLOBAL_LOSS!r}; they keep their weight (loss := {fill:.4f})"
            )
            raw[missing] = fill
        return raw

    def _centre(self, replies: Mapping[str, Message], sites: list[str]) -> np.ndarray:
        if self.config.center == "uniform":
            return np.full(len(sites), 1.0 / len(sites))
        counts = sample_counts({s: replies[s] for s in sites})
        values = np.array([counts[s] for s in sites])
        return values / values.sum()
