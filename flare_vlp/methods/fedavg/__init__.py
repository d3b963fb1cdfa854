"""FedAvg and FedProx over the weights client algorithm (one global dual encoder, weights exchanged); FedProx's
proximal term is the weights client's ``prox_mu`` task option."""

from flare_vlp.methods.fedavg.config import FedAvgConfig, FedProxConfig
from flare_vlp.methods.registry import DEFAULT_ROLE, MethodSpec, register_method

__all__ = ["FedAvgConfig", "FedProxConfig"]

_STRATEGY = "flare_vlp.methods.fedavg.strategy.FedAvgStrategy"
_CLIENT = {DEFAULT_ROLE: "flare_vlp.methods.weights_client.WeightsClientAlgo"}

register_method(
    MethodSpec(
        "fedavg", FedAvgConfig, _STRATEGY, _CLIENT, "FedAvg: n_k-weighted averaging of the sites' weights", demo={}
    )
)
register_method(
    MethodSpec(
        "fedprox", FedProxConfig, _STRATEGY, _CLIENT, "FedProx: FedAvg plus mu/2 ||w - w_global||^2 at every site"
    )
)
