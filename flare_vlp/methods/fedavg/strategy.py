"""FedAvg and FedProx servers: n_k-weighted (or uniform) averaging; FedProx also sends ``prox_mu`` with every task.

FedProx's server is FedAvg's (Li et al., https://arxiv.org/abs/1812.06127): only the sites' objective changes, so
the strategy adds the option and the weights client algorithm (:mod:`flare_vlp.methods.weights_client`) adds the
proximal term.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flare_vlp.methods.messages import Message, Task
from flare_vlp.methods.weights_strategy import WeightsStrategy, sample_counts

__all__ = ["FedAvgStrategy"]


class FedAvgStrategy(WeightsStrategy):
    """Weighted averaging with n_k (``weighting: samples``) or 1/K (``uniform``); FedProx's ``mu`` as a task option.

    Args:
        config: :class:`~flare_vlp.methods.fedavg.config.FedAvgConfig` or ``FedProxConfig``.
    """

    def task_options(self) -> dict[str, Any]:
        mu = getattr(self.config, "mu", None)
        return {"prox_mu": float(mu)} if mu else {}

    def site_weights(self, task: Task, replies: Mapping[str, Message]) -> dict[str, float]:
        if self.config.weighting == "uniform":
            return {site: 1.0 for site in replies}
        return sample_counts(replies)
