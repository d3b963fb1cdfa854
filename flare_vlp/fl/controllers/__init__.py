"""FLARE server workflows (``ModelController`` subclasses named by class path in ``config_fed_server.json``)."""

from flare_vlp.fl.controllers.base import BaseVLPController, Phase, RoundFailedError, screen_updates
from flare_vlp.fl.controllers.fedavg import FedAvgVLP, FedProxVLP
from flare_vlp.fl.controllers.feddra import FedDRAVLP

__all__ = ["BaseVLPController", "FedAvgVLP", "FedDRAVLP", "FedProxVLP", "Phase", "RoundFailedError", "screen_updates"]
