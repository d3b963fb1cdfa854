"""Typed configs of FedDRA and FedAID (methods.md section 1)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from flare_vlp.methods.registry import check, setting

__all__ = [
    "TRAIN_DEEP",
    "DEMO_SETTINGS",
    "FedAIDConfig",
    "FedDRAConfig",
    "DRO_SIGNALS",
    "DRO_CENTERS",
    "SIGNAL_BATCHES",
    "LOSS_SCALES",
    "STAGE2_STARTS",
]

TRAIN_DEEP = "train_deep"
"""The FLARE task name of FedDRA's stage 1 (the deep groups only): its own task, so FLARE's logs and traffic show the
two phases of a round apart (stage 2 is the platform's ``train``)."""

DEMO_SETTINGS: dict = {
    "rho": 0.1,
    "eta": 0.5,
    "anchor_weight": 1.0,
    "stage1_steps": 3,
    "dro_batches": 8,
    "dro_batch_size": 16,
}
"""FedDRA in ``flare-vlp demo``: the v3 benchmark's settings (docs/benchmarks.md): stage 1 = 3 deep-only steps; the
DRO signal on 8 seeded batches of 16 val rows at every site (the demo's smallest val split has ~25 rows)."""

DRO_SIGNALS: tuple[str, ...] = ("loss", "excess", "normalized")
"""What a site's DRO loss ``l_k`` is: ``loss`` = held-out loss of the received global model (the paper's);
``excess`` = that minus the held-out loss of the site's own update (how much worse the global model serves the site
than what it can learn itself, so a site's label mix alone does not attract weight); ``normalized`` = the loss divided
by the chance-level contrastive loss ``ln(batch size)`` (the scoring batch size, ``dro_batch_size``, with
``signal_batches: fixed``; ``train.batch_size`` with ``full_pass``)."""

SIGNAL_BATCHES: tuple[str, ...] = ("fixed", "full_pass")
"""What a site scores the received global model on: ``fixed`` = ``dro_batches`` seeded batches of ``dro_batch_size``
distinct val rows (the same count and size at every site, so the expected signal does not depend on the val-set size);
``full_pass`` = one pass over the whole val split in batches of ``min(train.batch_size, n_val)``, the last one ragged
(the paper's / the earlier code's form: a small val set reads as a lower loss, since an uninformed InfoNCE loss is
ln(batch size))."""

LOSS_SCALES: tuple[str, ...] = ("mean", "sum")
"""``mean``: ITA = the MEAN of the two cross-entropies (ours). ``sum``: their SUM, the reference code's unit: the
DRO signal is doubled (so ``eta`` is the reference's step: its 0.01 x 50 = 0.5 under ``sum`` equals ``eta`` 1.0
under ``mean``) and the sites train on ``2 * ITA + anchor_weight * anchor`` (the reference's total loss)."""

STAGE2_STARTS: tuple[str, ...] = ("global", "local")
"""FedDRA stage 2 starts from the stage-1 average (``global``) or from each site's own stage-1 weights (``local``,
the reference code's; the stage-1 average then only refreshes the anchor)."""

DRO_CENTERS: tuple[str, ...] = ("uniform", "samples")
"""Centre of the ball: uniform ``1/K`` (the paper's) or the sample proportions ``n_k / n`` (``rho = 0`` = FedAvg)."""


@dataclass(frozen=True)
class FedAIDConfig:
    """FedAID: DRO site weights as aggregation weights and the anchor loss, one full-network task per round.

    Args:
        rho: radius of the uncertainty set around the centre (``0`` = FedAvg with the centre's weights).
        eta: mirror-ascent step size.
        divergence: ``chi2`` (Euclidean projection onto the chi-square ball) or ``kl``.
        center: ``uniform`` or ``samples`` (:data:`DRO_CENTERS`).
        signal: ``loss``, ``excess`` or ``normalized`` (:data:`DRO_SIGNALS`).
        signal_batches: ``fixed`` (default) or ``full_pass`` (:data:`SIGNAL_BATCHES`).
        dro_batches: scoring batches per site and round under ``fixed``.
        dro_batch_size: rows per scoring batch under ``fixed``. A site whose val split has fewer rows sends no
            signal and keeps its weight (a warning at the site and at the server names it).
        loss_scale: ``mean`` (default) or ``sum`` (:data:`LOSS_SCALES`; ``sum`` + ``eta`` 0.5 = ``mean`` + ``eta`` 1.0).
        anchor_weight: ``lambda_anchor`` sent to the sites (``0`` turns the anchor loss off).
        stage2_steps: local steps of the full-network task (``None``: the sites' default, one epoch).
    """

    rho: float = setting(1.0, "radius of the chi-square (or KL) ball around the centre (0 = FedAvg)")
    eta: float = setting(0.5, "mirror-ascent step size of the site weights")
    divergence: Literal["chi2", "kl"] = setting("chi2", "divergence of the uncertainty set")
    center: Literal["uniform", "samples"] = setting("uniform", "centre of the ball: 1/K or n_k/n")
    signal: Literal["loss", "excess", "normalized"] = setting("loss", "the DRO loss l_k a site reports")
    signal_batches: Literal["fixed", "full_pass"] = setting(
        "fixed",
        "what l_k is measured on: fixed = dro_batches seeded batches of dro_batch_size val rows at every site "
        "(independent of the val-set size); full_pass = the whole val split in batches of min(train.batch_size, "
        "n_val), the last one ragged (the paper's form; small val sets read as lower losses)",
    )
    dro_batches: int = setting(4, "fixed signal: scoring batches per site and round (seed: experiment seed + round)")
    dro_batch_size: int = setting(
        32, "fixed signal: val rows per scoring batch; a site with fewer val rows sends no signal and keeps its weight"
    )
    loss_scale: Literal["mean", "sum"] = setting(
        "mean",
        "ITA as the mean (ours) or the sum (the reference's) of the two cross-entropies: sum doubles l_k (so sum + "
        "eta 0.5 = mean + eta 1.0) and trains on 2*ITA + anchor_weight*anchor",
    )
    anchor_weight: float = setting(1.0, "lambda_anchor of the anchor loss at the sites (0: off)")
    stage2_steps: int | None = setting(None, "local steps of the full-network task (default: one epoch)")

    two_stage = False

    def __post_init__(self) -> None:
        check(math.isfinite(self.rho) and self.rho >= 0, "rho", f"must be >= 0, got {self.rho}")
        check(math.isfinite(self.eta) and self.eta >= 0, "eta", f"must be >= 0, got {self.eta}")
        check(
            math.isfinite(self.anchor_weight) and self.anchor_weight >= 0,
            "anchor_weight",
            f"must be >= 0, got {self.anchor_weight}",
        )
        check(
            self.stage2_steps is None or self.stage2_steps >= 1,
            "stage2_steps",
            f"must be >= 1 or null, got {self.stage2_steps}",
        )
        check(self.dro_batches >= 1, "dro_batches", f"must be >= 1, got {self.dro_batches}")
        check(
            self.dro_batch_size >= 2,
            "dro_batch_size",
            f"must be >= 2 (InfoNCE needs negatives), got {self.dro_batch_size}",
        )

    @property
    def signal_scale(self) -> float:
        """Factor from the sites' losses (mean of the two cross-entropies) to the unit the EG step uses."""
        return 2.0 if self.loss_scale == "sum" else 1.0


@dataclass(frozen=True)
class FedDRAConfig(FedAIDConfig):
    """FedDRA: FedAID plus two-stage rounds (stage 1 trains and averages the deep groups only).

    Args:
        stage1_steps: local steps of stage 1 (``None``: the sites' default, one epoch).
        deep_groups: the parameter groups stage 1 trains (``deep`` = align blocks + heads + temperature + the last
            ``model.deep_encoder_blocks`` encoder blocks).
        stage2_start: ``global`` (default) or ``local`` (:data:`STAGE2_STARTS`).
    """

    stage1_steps: int | None = setting(None, "FedDRA deep-stage local steps (default: one epoch)")
    deep_groups: list = setting(["deep"], "parameter groups of stage 1")
    stage2_start: Literal["global", "local"] = setting(
        "global",
        "stage 2 starts from the stage-1 average (global) or from each site's own stage-1 weights, the average "
        "only refreshing the anchor (local, the reference code's)",
    )

    two_stage = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            self.stage1_steps is None or self.stage1_steps >= 1,
            "stage1_steps",
            f"must be >= 1 or null, got {self.stage1_steps}",
        )
        check(bool(self.deep_groups), "deep_groups", "must name at least one parameter group")
