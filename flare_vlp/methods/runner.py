"""An in-process runner: the same server strategy and client algorithms as a FLARE job, with no FLARE processes.

For benchmark seed grids and fast tests (in the spirit of Flower's in-process simulation): sites run one after the
other in this process, every message is copied as the wire would (so no site can alias the server's arrays), every
reply passes the same declaration check as at a FLARE site (:func:`~flare_vlp.methods.client.seal_reply`) and the
same host cycle as :class:`flare_vlp.fl.controller.StrategyController`
(:func:`~flare_vlp.methods.strategy.settle_task`), so the run folder gets the same ``site`` / ``round`` /
``rejected`` / ``failed`` / ``dro`` records. A test keeps its global model equal to the FLARE
simulator's. Users' runs and every job folder stay on FLARE; this never replaces it.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flare_vlp.experiments.run_folder import RunFolder
from flare_vlp.methods.client import ClientAlgo, SiteContext, seal_reply, start_site
from flare_vlp.methods.messages import Message
from flare_vlp.methods.payload import check_incoming
from flare_vlp.methods.registry import get_method, method_config
from flare_vlp.methods.run_spec import DataSource, RunSpec
from flare_vlp.methods.site_store import SiteStore
from flare_vlp.methods.strategy import ServerContext, ServerStrategy, settle_task

__all__ = ["DataSource", "InProcessRun", "RunSpec", "run_in_process"]

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


def run_in_process(spec: RunSpec, run_dir: str | Path) -> InProcessRun:
    """Run ``spec`` over its ``sites`` in this process, after :meth:`RunSpec.validate`; the run folder is ``run_dir``
    (the sites' stores default to ``run_dir/stores/{site}``).

    Example:
        >>> spec = RunSpec("fedavg", sites=("site-1", "site-2"), data=DataSource(data_dir="data/synth"))
        >>> run_in_process(spec, "runs/fedavg").global_weights()  # doctest: +SKIP

    Raises:
        ValueError: the spec names no ``sites``, or fails its pre-launch check.
        RoundFailedError: a task with fewer than ``min_clients`` valid replies (as in a FLARE run).
        DisclosureError: a site's reply carries something its algorithm does not declare shareable.
    """
    if not spec.sites:
        raise ValueError(f"{spec.method}: the in-process runner needs the spec's `sites`")
    cfg = spec.validate()
    run = RunFolder(Path(run_dir))
    run.write_config(cfg, method=spec.method, method_config=dict(spec.method_settings), num_rounds=spec.num_rounds,
                     min_clients=spec.min_clients)  # fmt: skip
    try:
        strategy = get_method(spec.method).strategy_cls()(method_config(spec.method, spec.method_settings))
        data = spec.data
        ctx = ServerContext(cfg, spec.num_rounds, spec.min_clients, run.log, _LOG, data.data_dir, data.manifest)
        strategy.initialize(ctx)
        contexts: dict[str, SiteContext] = {}
        algos: dict[str, ClientAlgo] = {}
        for site in spec.sites:
            store = SiteStore(spec.store_path(site, str(Path(run_dir) / "stores" / "{site}")), site)
            contexts[site], algos[site] = start_site(spec, site, store=store)
        for rnd in range(spec.num_rounds):
            for task in strategy.round_tasks(rnd):
                replies = {}
                for site in spec.sites:
                    received = _wire(strategy.task_message(task, site))
                    check_incoming(site, algos[site].declaration(), received)
                    reply = algos[site].train(task, received, should_abort=lambda: False)
                    replies[site] = _wire(seal_reply(contexts[site], algos[site].declaration(), reply, received))
                settle_task(strategy, task, replies)
        weights = strategy.global_weights()
        if weights:
            import torch

            run.save_model("global", {k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
        for algo in algos.values():
            algo.finalize()
    finally:
        run.close()
    return InProcessRun(strategy, algos, Path(run_dir))
