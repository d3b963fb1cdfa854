"""FedDRA and FedAID: distributionally robust site weights used AS aggregation weights, anchors, two-stage rounds.

methods.md section 1. Per round t the sites receive theta_t and report, with their update, ``l_k`` = the loss of
theta_t on their held-out (val) slice; the server takes one mirror-ascent step on lambda with those losses, projects
onto the ball ``P_rho`` (:func:`flare_vlp.algorithms.dro.dro_update`) and averages the updates with lambda. Unlike
the reference code (which scales each site's loss by lambda_k, close to a no-op under Adam), lambda weighs the
updates, as in DRFA / Agnostic FL. Losses arrive with the updates, so the robust estimate costs no extra round trip:
the loss of "the new global model" of the previous aggregation is measured at the start of the next round.

FedDRA runs each round as two tasks: ``train_deep`` (stage 1: only the ``deep`` groups train and travel, then the
server aggregates) and ``train`` (stage 2: the whole network). FedAID is the same without stage 1. Both send
``anchor_weight`` so every site adds ``lambda_anchor * (MSE(z_v, zbar_v) + MSE(z_t, zbar_t))`` to its loss.
lambda is logged per round (``dro`` events in metrics.jsonl), persisted with the global model and restored on resume.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.app_constant import AppConstants

from flare_vlp.algorithms.aggregate import UpdateValidationError
from flare_vlp.algorithms.dro import DIVERGENCES, chi_square_divergence, dro_update, kl_divergence
from flare_vlp.fl.controllers.base import BaseVLPController, Phase
from flare_vlp.fl.exchange import TaskMeta, TaskName

__all__ = ["FedDRAVLP", "DRO_SIGNALS", "DRO_CENTERS"]

DRO_SIGNALS: tuple[str, ...] = ("loss", "excess", "normalized")
"""What a site's DRO loss ``l_k`` is: ``loss`` = held-out loss of the received global model (the paper's);
``excess`` = that minus the held-out loss of the site's own update (how much worse the global model serves the site
than what it can learn itself, so a site's label mix alone does not attract weight); ``normalized`` = the loss divided
by ``ln(batch_size)`` (the chance-level contrastive loss)."""

DRO_CENTERS: tuple[str, ...] = ("uniform", "samples")
"""Centre of the ball: uniform ``1/K`` (the paper's) or the sample proportions ``n_k / n`` (``rho = 0`` = FedAvg)."""

GLOBAL_LOSS = "global_val_loss"
LOCAL_LOSS = "val_loss"


class FedDRAVLP(BaseVLPController):
    """FedDRA (``two_stage=True``) or FedAID (``two_stage=False``) server.

    Args:
        rho: radius of the uncertainty set around the centre (``0`` = FedAvg with the centre's weights).
        eta: mirror-ascent step size.
        divergence: ``chi2`` (Euclidean projection onto the chi-square ball) or ``kl``.
        center: ``uniform`` or ``samples`` (see :data:`DRO_CENTERS`).
        signal: ``loss``, ``excess`` or ``normalized`` (see :data:`DRO_SIGNALS`).
        anchor_weight: ``lambda_anchor`` sent to the sites (``0`` turns the anchor loss off).
        two_stage: run stage 1 (deep groups) before the full-network task each round.
        stage1_steps: local steps of stage 1 (``None``: the sites' default, one epoch).
        stage2_steps: local steps of the full-network task (``None``: the sites' default).
        deep_groups: the parameter groups stage 1 trains (``deep`` = align blocks + heads + temperature + the last
            ``model.deep_encoder_blocks`` encoder blocks).
        others: as :class:`BaseVLPController`.
    """

    def __init__(
        self,
        config: str = "tiny",
        num_rounds: int = 2,
        min_clients: int = 2,
        timeout: int = 0,
        run_dir: str | None = None,
        config_overrides: dict | None = None,
        wait_after_min_s: int = 3600,
        persistor_id: str = AppConstants.DEFAULT_PERSISTOR_ID,
        rho: float = 1.0,
        eta: float = 0.5,
        divergence: str = "chi2",
        center: str = "uniform",
        signal: str = "loss",
        anchor_weight: float = 1.0,
        two_stage: bool = True,
        stage1_steps: int | None = None,
        stage2_steps: int | None = None,
        deep_groups: list[str] | None = None,
    ):
        # explicit arguments (no **kwargs): FLARE's job export reads the constructor signature
        super().__init__(
            config=config,
            num_rounds=num_rounds,
            min_clients=min_clients,
            timeout=timeout,
            run_dir=run_dir,
            config_overrides=config_overrides,
            wait_after_min_s=wait_after_min_s,
            persistor_id=persistor_id,
        )
        problems = []
        if not (math.isfinite(rho) and rho >= 0):
            problems.append(f"`rho` must be >= 0, got {rho}")
        if not (math.isfinite(eta) and eta >= 0):
            problems.append(f"`eta` must be >= 0, got {eta}")
        if divergence not in DIVERGENCES:
            problems.append(f"`divergence` must be one of {list(DIVERGENCES)}, got {divergence!r}")
        if center not in DRO_CENTERS:
            problems.append(f"`center` must be one of {list(DRO_CENTERS)}, got {center!r}")
        if signal not in DRO_SIGNALS:
            problems.append(f"`signal` must be one of {list(DRO_SIGNALS)}, got {signal!r}")
        if not (math.isfinite(anchor_weight) and anchor_weight >= 0):
            problems.append(f"`anchor_weight` must be >= 0, got {anchor_weight}")
        for name, steps in (("stage1_steps", stage1_steps), ("stage2_steps", stage2_steps)):
            if steps is not None and steps < 1:
                problems.append(f"`{name}` must be >= 1 or None, got {steps}")
        if problems:
            raise ValueError(f"{type(self).__name__}: " + "; ".join(problems))
        self._rho = float(rho)
        self._eta = float(eta)
        self._divergence = divergence
        self._center = center
        self._signal = signal
        self._anchor_weight = float(anchor_weight)
        self._two_stage = bool(two_stage)
        self._stage1_steps = stage1_steps
        self._stage2_steps = stage2_steps
        self._deep_groups = list(deep_groups or ["deep"])
        self.method = "feddra" if self._two_stage else "fedaid"
        self._lambda: dict[str, float] = {}
        self._round_weights: dict[str, float] = {}

    # -- hooks ----------------------------------------------------------------------------------------------------

    def round_phases(self, rnd: int) -> list[Phase]:
        full = Phase(AppConstants.TASK_TRAIN, ("all",), self._stage2_steps)
        if not self._two_stage:
            return [full]
        deep = Phase(TaskName.TRAIN_DEEP, tuple(self._deep_groups), self._stage1_steps, index=0)
        return [deep, Phase(full.task_name, full.groups, full.local_steps, index=1)]

    def task_payload(self, rnd: int, model: FLModel, phase: Phase | None = None) -> FLModel:
        payload = super().task_payload(rnd, model, phase)
        if self._anchor_weight > 0:
            payload.meta[TaskMeta.ANCHOR_WEIGHT] = self._anchor_weight
        return payload

    def aggregation_weights(self, results: Mapping[str, FLModel], phase: Phase | None = None) -> dict[str, float]:
        """lambda of the answering sites: updated once per round (first phase), reused by the round's later phases."""
        if phase is None or phase.index == 0 or not self._round_weights:
            self._round_weights = self.update_lambda(results, rnd=results_round(results))
        weights = {site: self._round_weights.get(site, 0.0) for site in results}
        if sum(weights.values()) <= 0:  # the round's later phase heard only from sites that had no weight
            weights = {site: 1.0 for site in results}
        return weights

    def controller_state(self) -> dict:
        return {"lambda": dict(self._lambda)}

    def restore_state(self, state: Mapping) -> None:
        restored = state.get("lambda") or {}
        self._lambda = {str(site): float(w) for site, w in restored.items()}
        if self._lambda:
            self.info(f"restored DRO weights {self._lambda}")

    # -- the DRO step ---------------------------------------------------------------------------------------------

    def update_lambda(self, results: Mapping[str, FLModel], rnd: int | None = None) -> dict[str, float]:
        """One EG step + projection over the answering sites; returns their new lambda (summing to 1).

        Sites that did not answer keep their share of the total mass; a new site joins at the mean weight. A site
        without a usable loss is given the lambda-weighted mean loss of the others (so the step leaves it where it
        is) and a warning.
        """
        sites = sorted(results)
        for site in sites:
            if site not in self._lambda:
                self._lambda[site] = float(np.mean(list(self._lambda.values()))) if self._lambda else 1.0
        mass = sum(self._lambda[s] for s in sites)
        current = np.array([self._lambda[s] / mass for s in sites])
        losses = self._signals(results, sites, current)
        center = self._centre(results, sites)
        new = dro_update(current, losses, self._eta, self._rho, self._divergence, center)
        for site, w in zip(sites, new):
            self._lambda[site] = float(w) * mass
        total = sum(self._lambda.values())
        self._lambda = {s: w / total for s, w in self._lambda.items()}
        div_fn = chi_square_divergence if self._divergence == "chi2" else kl_divergence
        divergence = div_fn(new, center)
        self._run.log(
            "dro",
            round=rnd,
            sites=sites,
            lmbda=dict(zip(sites, map(float, new))),
            losses=dict(zip(sites, map(float, losses))),
            signal=self._signal,
            divergence=divergence,
            rho=self._rho,
            binding=bool(self._rho > 0 and divergence >= self._rho * (1 - 1e-9)),
        )
        self.info(f"round {rnd}: DRO weights {dict(zip(sites, np.round(new, 4)))} (divergence {divergence:.4f})")
        return dict(zip(sites, map(float, new)))

    def _signals(self, results: Mapping[str, FLModel], sites: list[str], current: np.ndarray) -> np.ndarray:
        raw = np.full(len(sites), np.nan)
        for i, site in enumerate(sites):
            metrics = results[site].metrics or {}
            try:
                value = float(metrics[GLOBAL_LOSS])
                if self._signal == "excess":
                    value -= float(metrics[LOCAL_LOSS])
                elif self._signal == "normalized":
                    value /= math.log(max(2, self._cfg.train.batch_size))
            except (KeyError, TypeError, ValueError):
                value = float("nan")
            raw[i] = value
        missing = ~np.isfinite(raw)
        if missing.all():
            self.warning(f"no site reported a finite {GLOBAL_LOSS!r}: DRO weights unchanged this round")
            return np.zeros(len(sites))
        if missing.any():
            bad = [s for s, m in zip(sites, missing) if m]
            fill = float(np.average(raw[~missing], weights=current[~missing]))
            self.warning(f"sites {bad} sent no finite {GLOBAL_LOSS!r}; they keep their weight (loss := {fill:.4f})")
            raw[missing] = fill
        return raw

    def _centre(self, results: Mapping[str, FLModel], sites: list[str]) -> np.ndarray:
        if self._center == "uniform":
            return np.full(len(sites), 1.0 / len(sites))
        counts = []
        for site in sites:
            n = results[site].meta.get(TaskMeta.N_SAMPLES)
            if n is None or not float(n) > 0:
                raise UpdateValidationError(
                    f"site {site!r}: result meta has no positive {TaskMeta.N_SAMPLES!r} (needed by center=samples)"
                )
            counts.append(float(n))
        counts = np.asarray(counts)
        return counts / counts.sum()


def results_round(results: Mapping[str, FLModel]) -> int | None:
    """The round the results answer (from any result's ``current_round``)."""
    for result in results.values():
        if result.current_round is not None:
            return int(result.current_round)
    return None
