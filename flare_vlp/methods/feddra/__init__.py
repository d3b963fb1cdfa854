"""FedDRA and FedAID: DRO site weights, anchors, two-stage rounds (methods.md 1).

The server is :class:`~flare_vlp.methods.feddra.strategy.DROStrategy`, the sites
:class:`~flare_vlp.methods.feddra.client.DROClientAlgo` (the weights client with the DRO hooks); a finished run plots
its lambda per round (``plots/dro_weights.png``, :func:`~flare_vlp.methods.feddra.plots.plot_dro_weights`).
"""

from flare_vlp.methods.feddra.config import (
    DEMO_SETTINGS,
    DRO_CENTERS,
    DRO_SIGNALS,
    LOSS_SCALES,
    SIGNAL_BATCHES,
    STAGE2_STARTS,
    TRAIN_DEEP,
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
    "TRAIN_DEEP",
    "FedAIDConfig",
    "FedDRAConfig",
]

_STRATEGY = "flare_vlp.methods.feddra.strategy.DROStrategy"
_CLIENT = {DEFAULT_ROLE: "flare_vlp.methods.feddra.client.DROClientAlgo"}
_PLOTS = ("flare_vlp.methods.feddra.plots.plot_dro_weights",)

register_method(
    MethodSpec(
        "fedaid",
        FedAIDConfig,
        _STRATEGY,
        _CLIENT,
        "FedAID: DRO site weights as aggregation weights + anchor loss",
        plots=_PLOTS,
    )
)
register_method(
    MethodSpec(
        "feddra",
        FedDRAConfig,
        _STRATEGY,
        _CLIENT,
        "FedDRA: FedAID with two-stage rounds (deep layers first)",
        plots=_PLOTS,
        demo=DEMO_SETTINGS,
    )
)
