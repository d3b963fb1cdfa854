"""Typed config of CreamFL (methods.md section 3; defaults from the reference code where it has one)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from flare_vlp.methods.registry import check, setting

__all__ = ["CLIENT_OPTIONS", "CreamFLConfig", "REG_LRS", "REGULARISERS"]

REGULARISERS = {"both": ("inter", "intra"), "inter": ("inter",), "intra": ("intra",), "none": ()}
"""``regularisers`` setting -> the local regulariser terms the clients run (the ablations drop one or both)."""

CLIENT_OPTIONS = ("reg_weight", "tau_r", "regularisers", "reg_steps", "reg_lr")
"""The settings the server sends its clients as task options each round (a client missing one takes its default)."""

REG_LRS = ("schedule", "base")
"""``reg_lr`` values: the regulariser steps at the lr the round's private pass ended at (the run-wide schedule), or
at the base ``train.lr`` every round (v1-v4 of the benchmark)."""


@dataclass(frozen=True)
class CreamFLConfig:
    """CreamFL: heterogeneous clients share only representations of a public image-text set.

    Args:
        public_samples: public samples whose global and local representations are exchanged per round (a fresh
            seeded draw every round, seed = experiment seed + round; ``0``: the whole public split).
        kd_weight: weight of the server's distillation towards the ensembled client representations (0.3).
        reg_weight: weight of the clients' local inter- + intra-modal regularisers on the public set (0.5).
        tau_r: temperature of the local regularisers (0.5).
        regularisers: which local regularisers the clients run: ``both`` (default), ``inter``, ``intra``, ``none``.
        reg_steps: the clients' regulariser steps per round over the round's public subset (``0``: one pass in
            order, as the reference; more: passes reshuffled with a seeded draw each, until that many steps).
        reg_lr: the regulariser's learning rate: ``schedule`` (default) the lr the round's private pass ended at, so
            public and private steps follow one run-wide schedule as in the reference (one optimiser, one schedule
            for both); ``base`` the base ``train.lr`` every round, undecayed (the benchmark's v1-v4).
        server_steps: server contrastive steps on the whole public split per round (``0``: one pass).
        server_lr: server learning rate (``None``: the experiment's ``train.lr``).
    """

    public_samples: int = setting(256, "public samples exchanged per round, a fresh seeded draw each round (0: all)")
    kd_weight: float = setting(0.3, "server distillation weight towards the client representation ensemble")
    reg_weight: float = setting(0.5, "weight of the clients' inter- + intra-modal regularisers on the public set")
    tau_r: float = setting(0.5, "temperature of the clients' inter- and intra-modal regularisers")
    regularisers: Literal["both", "inter", "intra", "none"] = setting(
        "both", "client regularisers: both, inter, intra or none (ablations)"
    )
    reg_steps: int = setting(0, "clients' regulariser steps per round over the public subset (0: one pass)")
    reg_lr: Literal["schedule", "base"] = setting(
        "schedule", "clients' regulariser lr: schedule (the private pass's scheduled lr) or base (train.lr)"
    )
    server_steps: int = setting(0, "server contrastive steps on the public split per round (0: one pass)")
    server_lr: float | None = setting(None, "server learning rate (default: train.lr)")

    def __post_init__(self) -> None:
        check(self.public_samples >= 0, "public_samples", f"must be >= 0, got {self.public_samples}")
        for key in ("kd_weight", "reg_weight"):
            value = getattr(self, key)
            check(math.isfinite(value) and value >= 0, key, f"must be a finite number >= 0, got {value}")
        check(math.isfinite(self.tau_r) and self.tau_r > 0, "tau_r", f"must be > 0, got {self.tau_r}")
        check(
            self.regularisers in REGULARISERS, "regularisers", f"must be one of {list(REGULARISERS)}, got "
            f"{self.regularisers!r}"
        )  # fmt: skip
        check(self.reg_steps >= 0, "reg_steps", f"must be >= 0, got {self.reg_steps}")
        check(self.reg_lr in REG_LRS, "reg_lr", f"must be one of {list(REG_LRS)}, got {self.reg_lr!r}")
        check(self.server_steps >= 0, "server_steps", f"must be >= 0, got {self.server_steps}")
        if self.server_lr is not None:
            check(self.server_lr > 0, "server_lr", f"must be > 0, got {self.server_lr}")
