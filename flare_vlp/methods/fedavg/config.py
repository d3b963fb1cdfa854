"""Typed configs of FedAvg and FedProx."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from flare_vlp.methods.registry import check, setting

__all__ = ["FedAvgConfig", "FedProxConfig"]


@dataclass(frozen=True)
class FedAvgConfig:
    """FedAvg (McMahan et al., https://arxiv.org/abs/1602.05629, Alg. 1).

    Args:
        weighting: ``samples`` weighs each site's update by its training-set size n_k; ``uniform`` by 1/K.
    """

    weighting: Literal["samples", "uniform"] = setting("samples", "site weights: n_k (samples) or 1/K (uniform)")


@dataclass(frozen=True)
class FedProxConfig(FedAvgConfig):
    """FedProx (Li et al., https://arxiv.org/abs/1812.06127, Eq. 2): FedAvg's server, ``mu/2 ||w - w_t||^2`` locally.

    Args:
        mu: proximal strength (> 0; ``mu = 0`` is FedAvg).
    """

    mu: float = setting(0.01, "FedProx proximal weight mu (> 0)")

    def __post_init__(self) -> None:
        check(math.isfinite(self.mu) and self.mu > 0, "mu", f"must be > 0 (use fedavg for mu = 0), got {self.mu}")
