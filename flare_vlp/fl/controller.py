"""The one flare_vlp server workflow: FLARE's round loop around a method's pure-Python server strategy.

``run()`` reads like FedAvg (McMahan et al., https://arxiv.org/abs/1602.05629, Alg. 1) with every method decision
asked of the strategy (:mod:`flare_vlp.methods.strategy`): restore or initialize the global state -> per round,
per task: send the strategy's message -> settle the replies (the host cycle every host shares,
:func:`~flare_vlp.methods.strategy.settle_task`: each validated per payload kind, refused with a logged reason, then
combined) -> persist the strategy's weights and state -> log. A task with fewer than
``min_clients`` valid replies fails the run loudly, with every rejection reason, and the last persisted round is
left as it was. What a method is lives in the registry (:mod:`flare_vlp.methods.registry`), not here.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.abstract.model import ModelLearnableKey
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_common.workflows.model_controller import ModelController
from nvflare.widgets.info_collector import GroupInfoCollector, InfoCollector

from flare_vlp.experiments.run_folder import RunFolder
from flare_vlp.fl.exchange import from_flmodel, to_flmodel
from flare_vlp.methods.messages import Task, TaskMeta
from flare_vlp.methods.registry import get_method, method_config
from flare_vlp.methods.run_spec import RunSpec
from flare_vlp.methods.strategy import RoundFailedError, ServerContext, ServerStrategy, settle_task

__all__ = ["PROGRESS_GROUP", "StrategyController"]

PROGRESS_GROUP = "flare_vlp"
"""The group of the controller's progress in the server's job stats (``Session.show_stats(job_id, "server")``)."""


class StrategyController(ModelController):
    """Runs the server strategy of the run ``spec`` (its method, settings, config, rounds, data source, timeouts).

    Args:
        spec: the run, as the plain dict of :meth:`~flare_vlp.methods.run_spec.RunSpec.to_dict` (a job's component
            arguments are JSON); checked here, so a bad job fails when the server builds it. Its ``task_timeout``
            counts from when the server sends a task (in the first round it also covers the sites' start-up);
            sites that have not answered by then get ``no_result``, and the task goes on with the others if
            ``min_clients`` answered, else it fails.
        run_dir: folder for ``metrics.jsonl``, ``config.yaml`` and ``models/global.safetensors``; default: the
            server's app folder of this job.
        persistor_id: the component id of the global-state persistor.
    """

    def __init__(self, spec: dict, run_dir: str | None = None, persistor_id: str = AppConstants.DEFAULT_PERSISTOR_ID):
        super().__init__(persistor_id=persistor_id)
        self.run_spec = RunSpec.from_dict(spec)  # fail here, not mid-run
        if self.run_spec.min_clients is None:
            raise ValueError(f"{self.run_spec.method}: the controller needs `min_clients` (or `sites`) in its spec")
        self._spec = spec  # as given: what FLARE's job export writes back
        self._run_dir = run_dir
        self.strategy: ServerStrategy | None = None
        self._progress: dict = {"round": None, "num_rounds": self.run_spec.num_rounds, "task": None}

    # -- the algorithm --------------------------------------------------------------------------------------------

    def run(self) -> None:
        spec = self.run_spec
        cfg = spec.load_config()
        run = RunFolder(Path(self._run_dir) if self._run_dir else Path(self.get_app_dir()))
        run.write_config(cfg, method=spec.method, method_config=dict(spec.method_settings),
                         num_rounds=spec.num_rounds, min_clients=spec.min_clients)  # fmt: skip
        try:
            ctx = ServerContext(cfg, spec.num_rounds, spec.min_clients, run.log, self.logger, spec.data.data_dir,
                                spec.data.manifest)  # fmt: skip
            self.strategy = get_method(spec.method).strategy_cls()(method_config(spec.method, spec.method_settings))
            first = self._initialize(ctx)
            for rnd in range(first, spec.num_rounds):
                if self.abort_signal.triggered:
                    self.warning(f"aborted before round {rnd}")
                    return
                sites = self.sample_clients()
                for task in self.strategy.round_tasks(rnd):
                    self._progress.update(round=rnd, task=task.name)
                    if not self._run_task(task, sites):
                        return
                self.save_model(self._global_model(rnd))
            self._finish(run)
        finally:
            run.close()

    def handle_event(self, event_type: str, fl_ctx) -> None:
        """Add the round in flight to the server's job stats, so an admin can follow a job round by round."""
        super().handle_event(event_type, fl_ctx)
        if event_type == InfoCollector.EVENT_TYPE_GET_STATS:
            collector = fl_ctx.get_prop(InfoCollector.CTX_KEY_STATS_COLLECTOR, None)
            if isinstance(collector, GroupInfoCollector):
                collector.add_info(group_name=PROGRESS_GROUP, info=dict(self._progress))

    # -- steps ----------------------------------------------------------------------------------------------------

    def _initialize(self, ctx: ServerContext) -> int:
        """Restore the persisted state (returns the next round) or build a fresh one (returns 0)."""
        if self.persistor is None:
            raise RuntimeError(f"no global-state persistor with id {self._persistor_id!r} in the job")
        persisted = self.persistor.load(self.fl_ctx)  # FLARE's load_model() refuses a checkpoint without weights
        meta = persisted.get(ModelLearnableKey.META) or {}
        done = meta.get(TaskMeta.ROUND)
        if done is None:
            self.strategy.initialize(ctx)
            return 0
        self.info(f"resuming after completed round {done}")
        params = persisted.get(ModelLearnableKey.WEIGHTS) or {}
        self.strategy.initialize(ctx, params, meta.get(TaskMeta.STRATEGY_STATE) or {})
        return int(done) + 1

    def _run_task(self, task: Task, sites: list[str]) -> bool:
        """Send ``task``, settle the replies (:func:`~flare_vlp.methods.strategy.settle_task`); ``False`` (after a
        panic) if the task failed."""
        replies = {site: from_flmodel(result) for site, result in self._send(task, sites).items()}
        if self.abort_signal.triggered:  # FLARE ended the job (an admin's abort, a site's crashed job process)
            self.warning(f"round {task.round} {task.name}: job aborted; the last persisted round stays as it was")
            return False
        try:
            settle_task(self.strategy, task, replies, missing=sorted(set(sites) - set(replies)))
        except RoundFailedError as e:
            self.panic(str(e))
            return False
        return True

    def _send(self, task: Task, sites: list[str]) -> dict[str, FLModel]:
        """Site -> reply. One broadcast when the strategy gives every site the same message, else one send each."""
        messages = {site: self.strategy.task_message(task, site) for site in sites}
        min_responses = min(self.run_spec.min_clients, len(sites))
        first = next(iter(messages.values()))
        if all(m is first for m in messages.values()):
            results = self.broadcast_model(
                task_name=task.name,
                data=to_flmodel(first, task),
                targets=sites,
                min_responses=min_responses,
                timeout=self.run_spec.task_timeout,
                wait_time_after_min_received=self.run_spec.wait_after_min_s,
            )
            return {r.meta["client_name"]: r for r in results}
        received: dict[str, FLModel] = {}
        for site, message in messages.items():
            self.broadcast_model(
                task_name=task.name,
                data=to_flmodel(message, task),
                targets=[site],
                min_responses=1,
                timeout=self.run_spec.task_timeout,
                blocking=False,
                callback=lambda result: received.__setitem__(result.meta["client_name"], result),
            )
        while self.get_num_standing_tasks() and not self.abort_signal.triggered:
            time.sleep(0.2)
        return received

    def _global_model(self, rnd: int) -> FLModel:
        return FLModel(
            params_type=ParamsType.FULL,
            params=self.strategy.global_weights(),
            current_round=rnd,
            meta={TaskMeta.ROUND: rnd, TaskMeta.STRATEGY_STATE: self.strategy.state()},
        )

    def _finish(self, run: RunFolder) -> None:
        weights = self.strategy.global_weights()
        if weights:
            path = run.save_model("global", {k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
            self.info(f"finished {self.run_spec.num_rounds} rounds; global model in {path}")
        else:
            self.info(f"finished {self.run_spec.num_rounds} rounds (the method keeps no global weights)")
