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

The signal (``signal_batches``): with ``fixed`` (default) the round's first task carries ``dro_batches`` and
``dro_batch_size`` and every site scores the received model on that many seeded batches of that many val rows
(``dro_loss``; ``dro_local_loss`` for its own update on the same rows), so the signal's expected value does not depend
on the val-set size; ``full_pass`` reads the whole-val-split ``global_val_loss`` / ``val_loss`` (the paper's form).
``loss_scale: sum`` doubles the signal and tells the sites to train on ``2 * ITA`` (the reference's units);
FedDRA's ``stage2_start: local`` tells the sites to keep their stage-1 weights and start stage 2 from them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from flare_vlp.algorithms.dro import chi_square_divergence, dro_update, kl_divergence
from flare_vlp.methods.feddra.config import TRAIN_DEEP
from flare_vlp.methods.messages import Message, Task, TaskName
from flare_vlp.methods.weights_strategy import WeightsStrategy, sample_counts

__all__ = ["DROStrategy", "GLOBAL_LOSS", "LOCAL_LOSS", "DRO_LOSS", "DRO_LOCAL_LOSS"]

GLOBAL_LOSS = "global_val_loss"
"""Reply metric: the received model's loss over the site's whole val split (``signal_batches: full_pass``)."""
LOCAL_LOSS = "val_loss"
"""Reply metric: the site's own update's loss over its whole val split (``full_pass`` + ``excess``)."""
DRO_LOSS = "dro_loss"
"""Reply metric: the received model's loss on the round's fixed scoring batches (``signal_batches: fixed``)."""
DRO_LOCAL_LOSS = "dro_local_loss"
"""Reply metric: the site's own update's loss on the same scoring batches (``fixed`` + ``excess``)."""


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
        """Options of every task of a round: the anchor weight, the reference's loss unit, where stage 2 starts."""
        cfg, options = self.config, {}
        if float(cfg.anchor_weight) > 0:
            options["anchor_weight"] = float(cfg.anchor_weight)
        if cfg.loss_scale != "mean":
            options["loss_scale"] = cfg.loss_scale
        if cfg.two_stage and cfg.stage2_start != "global":
            options["stage2_start"] = cfg.stage2_start  # stage 1: keep your weights; stage 2: start from them
        return options

    def signal_options(self) -> dict[str, Any]:
        """Options of the round's first task only, whose replies move lambda: how to score the received model."""
        if self.config.signal_batches != "fixed":
            return {}
        return {"dro_batches": int(self.config.dro_batches), "dro_batch_size": int(self.config.dro_batch_size)}

    def round_tasks(self, rnd: int) -> list[Task]:
        cfg, total, options = self.config, self.ctx.num_rounds, self.task_options()
        first = {**options, **self.signal_options()}
        if not cfg.two_stage:
            return [Task(TaskName.TRAIN, rnd, total, ("all",), cfg.stage2_steps, 0, first)]
        deep = Task(TRAIN_DEEP, rnd, total, tuple(cfg.deep_groups), cfg.stage1_steps, 0, first)
        return [deep, Task(TaskName.TRAIN, rnd, total, ("all",), cfg.stage2_steps, 1, options)]

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
            signal_batches=cfg.signal_batches,
            loss_scale=cfg.loss_scale,
            divergence=divergence,
            rho=cfg.rho,
            binding=bool(cfg.rho > 0 and divergence >= cfg.rho * (1 - 1e-9)),
        )
        self.ctx.logger.info(
            f"round {rnd}: DRO weights {dict(zip(sites, np.round(new, 4)))} (divergence {divergence:.4f})"
        )
        return dict(zip(sites, map(float, new)))

    def _signals(self, replies: Mapping[str, Message], sites: list[str], current: np.ndarray) -> np.ndarray:
        """l_k per site in the EG step's unit; a site without a finite one gets the lambda-weighted mean of the others
        (its weight stays where it is: e.g. a val split smaller than one scoring batch)."""
        cfg = self.config
        fixed = cfg.signal_batches == "fixed"
        key, local_key = (DRO_LOSS, DRO_LOCAL_LOSS) if fixed else (GLOBAL_LOSS, LOCAL_LOSS)
        chance = math.log(cfg.dro_batch_size if fixed else max(2, self.ctx.cfg.train.batch_size))
        raw = np.full(len(sites), np.nan)
        for i, site in enumerate(sites):
            metrics = replies[site].metrics or {}
            try:
                value = float(metrics[key])
                if cfg.signal == "excess":
                    value -= float(metrics[local_key])
                elif cfg.signal == "normalized":
                    value /= chance
            except (KeyError, TypeError, ValueError):
                value = float("nan")
            raw[i] = value * cfg.signal_scale
        missing = ~np.isfinite(raw)
        if missing.all():
            self.ctx.logger.warning(f"no site reported a finite {key!r}: DRO weights unchanged this round")
            return np.zeros(len(sites))
        if missing.any():
            bad = [s for s, m in zip(sites, missing) if m]
            fill = float(np.average(raw[~missing], weights=current[~missing]))
            why = f" (val split under dro_batch_size={cfg.dro_batch_size} rows?)" if fixed else ""
            self.ctx.logger.warning(
                f"sites {bad} sent no finite {key!r}{why}; they keep their weight (loss := {fill:.4f})"
            )
            raw[missing] = fill
        return raw

    def _centre(self, replies: Mapping[str, Message], sites: list[str]) -> np.ndarray:
        if self.config.center == "uniform":
            return np.full(len(sites), 1.0 / len(sites))
        counts = sample_counts({s: replies[s] for s in sites})
        values = np.array([counts[s] for s in sites])
        return values / values.sum()
