"""Typed config of the representation-consensus method."""

from __future__ import annotations

import math
from dataclasses import dataclass

from flare_vlp.methods.registry import check, setting

__all__ = ["ReprConsensusConfig"]


@dataclass(frozen=True)
class ReprConsensusConfig:
    """Sites share only representations of public samples; the server averages them into a consensus.

    Args:
        public_samples: public samples whose representations are exchanged (one subset drawn with the experiment
            seed, the same every round, so the consensus of round t is the target of round t + 1; ``0``: all).
        kd_weight: weight of the distillation loss towards the consensus at the sites.
        kd_steps: optimizer steps of distillation on the public samples per round (after the private pass).
    """

    public_samples: int = setting(64, "public samples exchanged, the same subset every round (0: all)")
    kd_weight: float = setting(1.0, "weight of the squared distance to the consensus representations")
    kd_steps: int = setting(2, "distillation steps on the public samples per round")

    def __post_init__(self) -> None:
        check(self.public_samples >= 0, "public_samples", f"must be >= 0, got {self.public_samples}")
        check(math.isfinite(self.kd_weight) and self.kd_weight >= 0, "kd_weight", f"must be >= 0, got {self.kd_weight}")
        check(self.kd_steps >= 0, "kd_steps", f"must be >= 0, got {self.kd_steps}")
