"""The one flare_vlp server workflow: FLARE's round loop around a method's pure-Python server strategy.

``run()`` reads like FedAvg (McMahan et al., https://arxiv.org/abs/1602.05629, Alg. 1) with every method decision
asked of the strategy (:mod:`flare_vlp.methods.strategy`): restore or initialize the global state -> per round,
per task: send the strategy's message -> hand each reply to the strategy (validated per payload kind, refused with
a logged reason) -> let it combine them -> persist its weights and state -> log. A task with fewer than
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

from flare_vlp.config import load_config
from flare_vlp.experiments.run_folder import RunFolder
from flare_vlp.fl.exchange import from_flmodel, to_flmodel
from flare_vlp.methods.messages import Task, TaskMeta
from flare_vlp.methods.registry import config_values, get_method
from flare_vlp.methods.registry import method_config as build_method_config
from flare_vlp.methods.strategy import RoundFailedError, ServerContext, ServerStrategy

__all__ = ["PROGRESS_GROUP", "StrategyController"]

PROGRESS_GROUP = "flare_vlp"
"""The group of the controller's progress in the server's job stats (``Session.show_stats(job_id, "server")``)."""


class StrategyController(ModelController):
    """Runs method ``method``'s server strategy for ``num_rounds`` rounds.

    Args:
        method: registered method name (``fedavg``, ``feddra``, ...).
        method_config: the method's settings (plain values of its config dataclass; defaults for those absent).
        config: preset name or YAML path of the experiment config (the same one the clients use).
        num_rounds: total rounds (a resumed run continues after the persisted round).
        min_clients: fewest valid replies a task accepts.
        timeout: seconds a task may take (0 = no limit), counted from when the server sends it: in the first round
            it also covers the sites' start-up. Sites that have not answered by then get ``no_result``; the task
            goes on with the others if ``min_clients`` answered, else it fails.
        run_dir: folder for ``metrics.jsonl``, ``config.yaml`` and ``models/global.safetensors``; default: the
            server's app folder of this job.
        config_overrides: nested dict merged over the config.
        wait_after_min_s: once ``min_clients`` sites answered, how long the others may still take.
        persistor_id: the component id of the global-state persistor.
        data_dir: the sites' SynthCXR folder, for strategies that read shared data (a public split).
        manifest: a manifest path, likewise.
    """

    def __init__(
        self,
        method: str,
        method_config: dict | None = None,
        config: str = "tiny",
        num_rounds: int = 2,
        min_clients: int = 2,
        timeout: int = 0,
        run_dir: str | None = None,
        config_overrides: dict | None = None,
        wait_after_min_s: int = 3600,
        persistor_id: str = AppConstants.DEFAULT_PERSISTOR_ID,
        data_dir: str | None = None,
        manifest: str | None = None,
    ):
        super().__init__(persistor_id=persistor_id)
        if num_rounds < 1:
            raise ValueError(f"`num_rounds` must be >= 1, got {num_rounds}")
        if min_clients < 1:
            raise ValueError(f"`min_clients` must be >= 1, got {min_clients}")
        self._spec = get_method(method)
        self._method_cfg = build_method_config(method, method_config)  # fail here, not mid-run
        self._method = method
        self._method_config = method_config
        self._config = config
        self._num_rounds = num_rounds
        self._min_clients = min_clients
        self._timeout = timeout
        self._run_dir = run_dir
        self._config_overrides = config_overrides
        self._wait_after_min_s = wait_after_min_s
        self._data_dir = data_dir
        self._manifest = manifest
        self.strategy: ServerStrategy | None = None
        self._progress: dict = {"round": None, "num_rounds": num_rounds, "task": None}

    # -- the algorithm --------------------------------------------------------------------------------------------

    def run(self) -> None:
        cfg = load_config(self._config, self._config_overrides)
        run = RunFolder(Path(self._run_dir) if self._run_dir else Path(self.get_app_dir()))
        run.write_config(
            cfg,
            method=self._method,
            method_config=config_values(self._method_cfg),
            num_rounds=self._num_rounds,
            min_clients=self._min_clients,
        )
        try:
            ctx = ServerContext(
                cfg, self._num_rounds, self._min_clients, run.log, self.logger, self._data_dir, self._manifest
            )
            self.strategy = self._spec.strategy_cls()(self._method_cfg)
            first = self._initialize(ctx)
            for rnd in range(first, self._num_rounds):
                if self.abort_signal.triggered:
                    self.warning(f"aborted before round {rnd}")
                    return
                sites = self.sample_clients()
                for task in self.strategy.round_tasks(rnd):
                    self._progress.update(round=rnd, task=task.name)
                    if not self._run_task(task, sites, run):
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

    def _run_task(self, task: Task, sites: list[str], run: RunFolder) -> bool:
        """Send ``task``, hand the replies to the strategy, combine; ``False`` (after a panic) if the task failed."""
        replies = {site: from_flmodel(result) for site, result in self._send(task, sites).items()}
        if self.abort_signal.triggered:  # FLARE ended the job (an admin's abort, a site's crashed job process)
            self.warning(f"round {task.round} {task.name}: job aborted; the last persisted round stays as it was")
            return False
        missing = sorted(set(sites) - set(replies))
        for site in missing:
            self.warning(
                f"round {task.round} {task.name}: no result from {site} (task error, abort or timeout; see its log)"
            )
            run.log("no_result", round=task.round, task=task.name, site=site)
        rejected = {}
        for site in sorted(replies):
            self.info(f"round {task.round} {task.name} site {site}: {replies[site].metrics}")
            self.strategy.log_reply(task, site, replies[site])
            reason = self.strategy.accept(task, site, replies[site])
            if reason is not None:
                rejected[site] = reason
        try:
            self.strategy.aggregate(task, rejected)
        except RoundFailedError as e:
            reason = str(e)
            if missing:
                reason += f"; no {task.name} result from {missing} (a dead or stalled site, a task error or a timeout)"
            self.error(reason)
            run.log("failed", round=task.round, task=task.name, reason=reason, no_result=missing)
            self.panic(reason)
            return False
        return True

    def _send(self, task: Task, sites: list[str]) -> dict[str, FLModel]:
        """Site -> reply. One broadcast when the strategy gives every site the same message, else one send each."""
        messages = {site: self.strategy.task_message(task, site) for site in sites}
        min_responses = min(self._min_clients, len(sites))
        first = next(iter(messages.values()))
        if all(m is first for m in messages.values()):
            results = self.broadcast_model(
                task_name=task.name,
                data=to_flmodel(first, task),
                targets=sites,
                min_responses=min_responses,
                timeout=self._timeout,
                wait_time_after_min_received=self._wait_after_min_s,
            )
            return {r.meta["client_name"]: r for r in results}
        received: dict[str, FLModel] = {}
        for site, message in messages.items():
            self.broadcast_model(
                task_name=task.name,
                data=to_flmodel(message, task),
                targets=[site],
                min_responses=1,
                timeout=self._timeout,
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
            self.info(f"finished {self._num_rounds} rounds; global model in {path}")
        else:
            self.info(f"finished {self._num_rounds} rounds (the method keeps no global weights)")
