"""FedAvg and FedProx over the VLP client algorithm (one global dual encoder, weights exchanged)."""

from flare_vlp.methods.fedavg.config import FedAvgConfig, FedProxConfig
from flare_vlp.methods.registry import DEFAULT_ROLE, MethodSpec, register_method

__all__ = ["FedAvgConfig", "FedProxConfig"]

_STRATEGY = "flare_vlp.methods.fedavg.strategy.FedAvgStrategy"
_VLP = {DEFAULT_ROLE: "flare_vlp.methods.vlp.VLPClientAlgo"}

register_method(
    MethodSpec("fedavg", FedAvgConfig, _STRATEGY, _VLP, "FedAvg: n_k-weighted averaging of the sites' weights")
)
register_method(
    MethodSpec("fedprox", FedProxConfig, _STRATEGY, _VLP, "FedProx: FedAvg plus mu/2 ||w - w_global||^2 at every site")
)
