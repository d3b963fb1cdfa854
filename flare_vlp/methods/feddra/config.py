"""Typed configs of FedDRA and FedAID (methods.md section 1)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from flare_vlp.methods.registry import check, setting

__all__ = ["FedAIDConfig", "FedDRAConfig", "DRO_SIGNALS", "DRO_CENTERS"]

DRO_SIGNALS: tuple[str, ...] = ("loss", "excess", "normalized")
"""What a site's DRO loss ``l_k`` is: ``loss`` = held-out loss of the received global model (the paper's);
``excess`` = that minus the held-out loss of the site's own update (how much worse the global model serves the site
than what it can learn itself, so a site's label mix alone does not attract weight); ``normalized`` = the loss divided
by ``ln(batch_size)`` (the chance-level contrastive loss)."""

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
        anchor_weight: ``lambda_anchor`` sent to the sites (``0`` turns the anchor loss off).
        stage2_steps: local steps of the full-network task (``None``: the sites' default, one epoch).
    """

    rho: float = setting(1.0, "radius of the chi-square (or KL) ball around the centre (0 = FedAvg)")
    eta: float = setting(0.5, "mirror-ascent step size of the site weights")
    divergence: Literal["chi2", "kl"] = setting("chi2", "divergence of the uncertainty set")
    center: Literal["uniform", "samples"] = setting("uniform", "centre of the ball: 1/K or n_k/n")
    signal: Literal["loss", "excess", "normalized"] = setting("loss", "the DRO loss l_k a site reports")
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


@dataclass(frozen=True)
class FedDRAConfig(FedAIDConfig):
    """FedDRA: FedAID plus two-stage rounds (stage 1 trains and averages the deep groups only).

    Args:
        stage1_steps: local steps of stage 1 (``None``: the sites' default, one epoch).
        deep_groups: the parameter groups stage 1 trains (``deep`` = align blocks + heads + temperature + the last
            ``model.deep_encoder_blocks`` encoder blocks).
    """

    stage1_steps: int | None = setting(None, "FedDRA deep-stage local steps (default: one epoch)")
    deep_groups: list = setting(["deep"], "parameter groups of stage 1")

    two_stage = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            self.stage1_steps is None or self.stage1_steps >= 1,
            "stage1_steps",
            f"must be >= 1 or null, got {self.stage1_steps}",
        )
        check(bool(self.deep_groups), "deep_groups", "must name at least one parameter group")
