"""An in-process runner: the same server strategy and client algorithms as a FLARE job, with no FLARE processes.

For benchmark seed grids and fast tests (in the spirit of Flower's in-process simulation): sites run one after the
other in this process, every message is copied as the wire would (so no site can alias the server's arrays), every
reply passes the same declaration check as at a FLARE site (:func:`~flare_vlp.methods.client.seal_reply`) and the
same accept / aggregate cycle as in :class:`flare_vlp.fl.controller.StrategyController`, and the run folder gets
the same ``site`` / ``round`` / ``rejected`` / ``dro`` records. A test keeps its global model equal to the FLARE
simulator's. Users' runs and every job folder stay on FLARE; this never replaces it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flare_vlp.config import load_config, merge_overrides
from flare_vlp.experiments.run_folder import RunFolder
from flare_vlp.methods.client import ClientAlgo, SiteContext, seal_reply, start_site
from flare_vlp.methods.messages import Message
from flare_vlp.methods.payload import check_incoming
from flare_vlp.methods.registry import DEFAULT_ROLE, config_values, get_method, method_config
from flare_vlp.methods.site_store import SiteStore
from flare_vlp.methods.strategy import ServerContext, ServerStrategy

__all__ = ["InProcessRun", "run_in_process"]

_LOG = logging.getLogger("flare_vlp.runner")


def _wire(message: Message) -> Message:
    """A deep copy, as serialisation would make: arrays are never shared between the server and a site."""
    return copy.deepcopy(message)


@dataclass
class InProcessRun:
    """What :func:`run_in_process` leaves: the strategy (its global weights and state) and the sites' algorithms."""

    strategy: ServerStrategy
    algos: dict[str, ClientAlgo]
    run_dir: Path

    def global_weights(self) -> dict[str, np.ndarray]:
        return self.strategy.global_weights()


def run_in_process(
    method: str,
    *,
    sites: list[str],
    run_dir: str | Path,
    config: str = "tiny",
    method_settings: Mapping | None = None,
    num_rounds: int = 2,
    min_clients: int | None = None,
    data_dir: str | Path | None = None,
    manifest: str | Path | None = None,
    site_map: Mapping[str, str] | None = None,
    local_steps: int | None = None,
    device: str = "cpu",
    config_overrides: dict | None = None,
    roles: Mapping[str, str] | None = None,
    role_settings: Mapping[str, Mapping] | None = None,
    store_dir: str | None = None,
) -> InProcessRun:
    """Run ``method`` for ``num_rounds`` rounds over ``sites`` in this process (arguments as :class:`MethodRecipe`).

    ``store_dir``: the sites' store folder (``{site}`` replaced by the site); default ``run_dir/stores/{site}``.

    Raises:
        RoundFailedError: a task with fewer than ``min_clients`` valid replies (as in a FLARE run).
        DisclosureError: a site's reply carries something its algorithm does not declare shareable.
    """
    spec = get_method(method)
    settings = method_config(method, method_settings)
    cfg = load_config(config, config_overrides)
    run = RunFolder(Path(run_dir))
    min_clients = len(sites) if min_clients is None else min_clients
    run.write_config(
        cfg, method=method, method_config=config_values(settings), num_rounds=num_rounds, min_clients=min_clients
    )
    try:
        strategy = spec.strategy_cls()(settings)
        data = (str(data_dir) if data_dir is not None else None, str(manifest) if manifest is not None else None)
        strategy.initialize(ServerContext(cfg, num_rounds, min_clients, run.log, _LOG, *data))
        contexts: dict[str, SiteContext] = {}
        algos: dict[str, ClientAlgo] = {}
        for site in sites:
            role = (roles or {}).get(site, DEFAULT_ROLE)
            extra = (role_settings or {}).get(role, {})
            store = (store_dir or str(Path(run_dir) / "stores" / "{site}")).replace("{site}", site)
            contexts[site], algos[site] = start_site(
                method,
                role,
                extra.get("options"),
                site=site,
                config=config,
                config_overrides=merge_overrides(config_overrides, extra.get("config_overrides")) or None,
                store=SiteStore(store, site),
                device=device,
                data_dir=data[0],
                manifest=data[1],
                site_map=site_map,
                local_steps=local_steps,
                logger=logging.getLogger(f"flare_vlp.site.{site}"),
            )
        for rnd in range(num_rounds):
            for task in strategy.round_tasks(rnd):
                rejected = {}
                for site in sites:
                    received = _wire(strategy.task_message(task, site))
                    check_incoming(site, algos[site].declaration(), received)
                    reply = algos[site].train(task, received, should_abort=lambda: False)
                    reply = _wire(seal_reply(contexts[site], algos[site].declaration(), reply, received))
                    strategy.log_reply(task, site, reply)
                    reason = strategy.accept(task, site, reply)
                    if reason is not None:
                        rejected[site] = reason
                strategy.aggregate(task, rejected)
        weights = strategy.global_weights()
        if weights:
            import torch

            run.save_model("global", {k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
        for algo in algos.values():
            algo.finalize()
    finally:
        run.close()
    return InProcessRun(strategy, algos, Path(run_dir))
