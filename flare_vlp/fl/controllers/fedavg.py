"""FedAvg and FedProx for VLP: n_k-weighted averaging; FedProx adds the proximal mu to every training task.

FedAvg: McMahan et al., https://arxiv.org/abs/1602.05629 (Alg. 1, weights n_k / n). FedProx: Li et al.,
https://arxiv.org/abs/1812.06127 (Eq. 2: local objective + mu/2 ||w - w_t||^2; the server side is FedAvg's).
"""

from __future__ import annotations

from collections.abc import Mapping

from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.app_constant import AppConstants

from flare_vlp.algorithms.aggregate import UpdateValidationError
from flare_vlp.fl.controllers.base import BaseVLPController, Phase
from flare_vlp.fl.exchange import TaskMeta

__all__ = ["FedAvgVLP", "FedProxVLP"]


class FedAvgVLP(BaseVLPController):
    """FedAvg: each valid update weighs its site's training-set size n_k (``meta["n_samples"]``).

    Args: as :class:`BaseVLPController`.
    """

    method = "fedavg"

    def aggregation_weights(self, results: Mapping[str, FLModel], phase: Phase | None = None) -> dict[str, float]:
        weights = {}
        for site, result in results.items():
            n = result.meta.get(TaskMeta.N_SAMPLES)
            if n is None:
                raise UpdateValidationError(
                    f"site {site!r}: result meta has no {TaskMeta.N_SAMPLES!r} (the FedAvg weight n_k)"
                )
            weights[site] = float(n)
        return weights


class FedProxVLP(FedAvgVLP):
    """FedProx: FedAvg aggregation; every training task carries ``meta["prox_mu"] = mu`` for the sites' loop.

    Args:
        mu: proximal strength (> 0; ``mu = 0`` is FedAvg).
        others: as :class:`BaseVLPController`.
    """

    method = "fedprox"

    def __init__(
        self,
        config: str = "tiny",
        num_rounds: int = 2,
        min_clients: int = 2,
        timeout: int = 0,
        run_dir: str | None = None,
        config_overrides: dict | None = None,
        wait_after_min_s: int = 3600,
        persistor_id: str = AppConstants.DEFAULT_PERSISTOR_ID,
        mu: float = 0.01,
    ):
        # explicit arguments (no **kwargs): FLARE's job export reads the constructor signature
        super().__init__(
            config=config,
            num_rounds=num_rounds,
            min_clients=min_clients,
            timeout=timeout,
            run_dir=run_dir,
            config_overrides=config_overrides,
            wait_after_min_s=wait_after_min_s,
            persistor_id=persistor_id,
        )
        if not mu > 0:
            raise ValueError(f"FedProxVLP requires `mu` > 0, got {mu} (use FedAvgVLP for mu = 0)")
        self._mu = mu

    def task_payload(self, rnd: int, model: FLModel, phase: Phase | None = None) -> FLModel:
        payload = super().task_payload(rnd, model, phase)
        payload.meta[TaskMeta.PROX_MU] = float(self._mu)
        return payload
