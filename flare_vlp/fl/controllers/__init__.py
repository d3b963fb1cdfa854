"""FLARE server workflows (``ModelController`` subclasses named by class path in ``config_fed_server.json``)."""

from flare_vlp.fl.controllers.base import BaseVLPController, RoundFailedError, screen_updates
from flare_vlp.fl.controllers.fedavg import FedAvgVLP, FedProxVLP

__all__ = ["BaseVLPController", "FedAvgVLP", "FedProxVLP", "RoundFailedError", "screen_updates"]
