"""FedDRA and FedAID over the VLP client algorithm: DRO site weights, anchors, two-stage rounds (methods.md 1)."""

from flare_vlp.methods.feddra.config import (
    DRO_CENTERS,
    DRO_SIGNALS,
    LOSS_SCALES,
    SIGNAL_BATCHES,
    STAGE2_STARTS,
    FedAIDConfig,
    FedDRAConfig,
)
from flare_vlp.methods.registry import DEFAULT_ROLE, MethodSpec, register_method

__all__ = [
    "DRO_CENTERS",
    "DRO_SIGNALS",
    "LOSS_SCALES",
    "SIGNAL_BATCHES",
    "STAGE2_STARTS",
    "FedAIDConfig",
    "FedDRAConfig",
]

_STRATEGY = "flare_vlp.methods.feddra.strategy.DROStrategy"
_VLP = {DEFAULT_ROLE: "flare_vlp.methods.vlp.VLPClientAlgo"}

register_method(
    MethodSpec("fedaid", FedAIDConfig, _STRATEGY, _VLP, "FedAID: DRO site weights as aggregation weights + anchor loss")
)
register_method(
    MethodSpec("feddra", FedDRAConfig, _STRATEGY, _VLP, "FedDRA: FedAID with two-stage rounds (deep layers first)")
)
