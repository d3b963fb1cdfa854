"""The round skeleton every flare_vlp server workflow shares (a FLARE ``ModelController``).

``run()`` reads like FedAvg (McMahan et al., https://arxiv.org/abs/1602.05629, Alg. 1): load the global model ->
per round select sites -> send the task -> screen the updates -> weight -> average -> save -> log. Methods change
the hooks (:meth:`select_clients`, :meth:`round_phases`, :meth:`task_payload`, :meth:`aggregation_weights`,
:meth:`controller_state`, :meth:`after_round`), never the loop. Every average goes through
:mod:`flare_vlp.algorithms.aggregate`: an invalid update (NaN, missing key, wrong shape) is excluded with its reason
logged, and the round fails loudly when fewer than ``min_clients`` remain.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_common.workflows.model_controller import ModelController

from flare_vlp.algorithms.aggregate import UpdateValidationError, split_valid_updates, weighted_average
from flare_vlp.config import ExperimentConfig, load_config
from flare_vlp.experiments.builders import build_model
from flare_vlp.experiments.run_folder import RunFolder
from flare_vlp.fl.exchange import DEFAULT_GROUPS, TaskMeta, exchanged_keys

__all__ = ["BaseVLPController", "Phase", "RoundFailedError", "screen_updates"]


@dataclass(frozen=True)
class Phase:
    """One train-and-aggregate step of a round: its FLARE task name, the groups trained and sent, local steps.

    A plain round is one phase (``train``, all groups); FedDRA's round is two (deep groups, then all).
    ``index`` is the phase's position in its round (0 = first).
    """

    task_name: str = AppConstants.TASK_TRAIN
    groups: tuple[str, ...] = DEFAULT_GROUPS
    local_steps: int | None = None
    index: int = 0


class RoundFailedError(RuntimeError):
    """A round that cannot produce a global model (too few valid updates)."""


def screen_updates(
    updates: Mapping[Hashable, Mapping[str, np.ndarray]],
    reference: Mapping[str, np.ndarray],
    min_valid: int,
) -> tuple[dict[Hashable, Mapping[str, np.ndarray]], dict[Hashable, str]]:
    """Split site updates into valid ones and rejected ones (site -> reason); fail below ``min_valid`` valid ones.

    Raises:
        RoundFailedError: fewer than ``min_valid`` valid updates; the message lists every rejection reason.
    """
    valid, rejected = split_valid_updates(updates, reference)
    reasons = {site: str(error) for site, error in rejected.items()}
    if len(valid) < min_valid:
        raise RoundFailedError(
            f"only {len(valid)} valid update(s) of {len(updates)} (need min_clients={min_valid}); "
            f"valid: {sorted(map(str, valid))}; rejected: {reasons}"
        )
    return valid, reasons


class BaseVLPController(ModelController):
    """Shared round loop; subclasses define :meth:`aggregation_weights` and may override the other hooks.

    Args:
        config: preset name or YAML path of the experiment config (the same one the clients use).
        num_rounds: total rounds (a resumed run continues after the persisted round).
        min_clients: fewest valid updates a round accepts.
        timeout: seconds a round's task may take (0 = no limit), counted from when the server sends it: in the
            first round it also covers the sites' start-up. Sites that have not answered by then get ``no_result``;
            the round goes on with the others if ``min_clients`` answered, else it fails.
        run_dir: folder for ``metrics.jsonl``, ``config.yaml`` and ``models/global.safetensors``; default: the
            server's app folder of this job.
        config_overrides: nested dict merged over the config.
        wait_after_min_s: once ``min_clients`` sites answered, how long the others may still take.
        persistor_id: the component id of the global-model persistor.
    """

    method = "base"

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
    ):
        super().__init__(persistor_id=persistor_id)
        if num_rounds < 1:
            raise ValueError(f"`num_rounds` must be >= 1, got {num_rounds}")
        if min_clients < 1:
            raise ValueError(f"`min_clients` must be >= 1, got {min_clients}")
        self._config = config
        self._num_rounds = num_rounds
        self._min_clients = min_clients
        self._timeout = timeout
        self._run_dir = run_dir
        self._config_overrides = config_overrides
        self._wait_after_min_s = wait_after_min_s
        self._cfg: ExperimentConfig | None = None
        self._key_model = None
        self._run: RunFolder | None = None

    # -- the algorithm --------------------------------------------------------------------------------------------

    def run(self) -> None:
        self._cfg = load_config(self._config, self._config_overrides)
        self._run = self._open_run_folder()
        try:
            model = self.load_model()
            if model is None or not model.params:
                self.panic("no initial global model: configure a VLPModelPersistor with id 'persistor'")
                return
            for rnd in range(self.first_round(model), self._num_rounds):
                if self.abort_signal.triggered:
                    self.warning(f"aborted before round {rnd}")
                    return
                sites = self.select_clients(rnd)
                for phase in self.round_phases(rnd):
                    results = self.broadcast_model(
                        task_name=phase.task_name,
                        data=self.task_payload(rnd, model, phase),
                        targets=sites,
                        min_responses=min(self._min_clients, len(sites)),
                        timeout=self._timeout,
                        wait_time_after_min_received=self._wait_after_min_s,
                    )
                    self.log_site_metrics(rnd, results, sites, phase)
                    model = self.aggregate(rnd, model, results, phase)
                    if model is None:
                        return
                self.save_model(model)
                self.after_round(rnd, model, results)
            self.finish(model)
        finally:
            self._run.close()

    # -- hooks ----------------------------------------------------------------------------------------------------

    def select_clients(self, rnd: int) -> list[str]:
        """The sites of round ``rnd`` (default: every connected site)."""
        return self.sample_clients()

    def trainable_groups(self, rnd: int) -> list[str]:
        """Parameter groups the sites train and send back in round ``rnd`` (of a one-phase round)."""
        return list(DEFAULT_GROUPS)

    def round_phases(self, rnd: int) -> list[Phase]:
        """The train-and-aggregate phases of round ``rnd`` (default: one ``train`` task on :meth:`trainable_groups`)."""
        return [Phase(AppConstants.TASK_TRAIN, tuple(self.trainable_groups(rnd)))]

    def task_payload(self, rnd: int, model: FLModel, phase: Phase | None = None) -> FLModel:
        """The FLModel sent to the sites: the global model plus this phase's task meta.

        Groups in the config's ``model.frozen`` are left out: they never change, and every site builds them
        identically from the config and seed (for a frozen MiniLM text tower that saves ~90 MB per site and round).
        """
        phase = phase or self.round_phases(rnd)[0]
        keep = self.expected_keys(list(DEFAULT_GROUPS))
        meta = {TaskMeta.TRAINABLE_GROUPS: list(phase.groups)}
        if phase.local_steps is not None:
            meta[TaskMeta.LOCAL_STEPS] = int(phase.local_steps)
        return FLModel(
            params_type=ParamsType.FULL,
            params={k: model.params[k] for k in keep},
            current_round=rnd,
            total_rounds=self._num_rounds,
            meta=meta,
        )

    def aggregation_weights(self, results: Mapping[str, FLModel], phase: Phase) -> dict[str, float]:
        """Site -> non-negative aggregation weight, for the sites whose updates passed validation."""
        raise NotImplementedError

    def controller_state(self) -> dict:
        """Plain-Python state persisted with the global model and given back to :meth:`restore_state` on resume."""
        return {}

    def restore_state(self, state: Mapping) -> None:
        """Restore what :meth:`controller_state` returned (called when resuming)."""

    def after_round(self, rnd: int, model: FLModel, results: list[FLModel]) -> None:
        """Called after the round's global model is saved."""

    # -- steps ----------------------------------------------------------------------------------------------------

    def first_round(self, model: FLModel) -> int:
        done = (model.meta or {}).get(TaskMeta.ROUND)
        if done is not None:
            self.info(f"resuming after completed round {done}")
            self.restore_state((model.meta or {}).get(TaskMeta.CONTROLLER_STATE) or {})
        return 0 if done is None else int(done) + 1

    def expected_keys(self, groups: list[str]) -> list[str]:
        if self._key_model is None:
            self._key_model = build_model(self._cfg.model, seed=self._cfg.seed)
        return exchanged_keys(self._key_model, groups, self._cfg.model.frozen)

    def aggregate(self, rnd: int, model: FLModel, results: list[FLModel], phase: Phase | None = None) -> FLModel | None:
        """Screen, weigh and average the phase's updates into a new global model; ``None`` (and panic) on failure."""
        phase = phase or self.round_phases(rnd)[0]
        by_site = {r.meta["client_name"]: r for r in results}
        keys = self.expected_keys(list(phase.groups))
        reference = {k: model.params[k] for k in keys}
        try:
            valid, rejected = screen_updates(
                {s: r.params or {} for s, r in by_site.items()}, reference, self._min_clients
            )
            for site, reason in rejected.items():
                self.warning(f"round {rnd}: excluded update of {site}: {reason}")
                self._run.log("rejected", round=rnd, site=site, reason=reason)
            weights = self.aggregation_weights({s: by_site[s] for s in valid}, phase)
            averaged = weighted_average(valid, weights, reference=reference)
        except (RoundFailedError, UpdateValidationError) as e:
            msg = f"round {rnd} failed: {e}"
            self.error(msg)
            self._run.log("round_failed", round=rnd, reason=str(e))
            self.panic(msg)
            return None
        self.info(f"round {rnd} {phase.task_name}: averaged {sorted(valid)} with weights {weights}")
        self._run.log(
            "round", round=rnd, task=phase.task_name, sites=sorted(valid), weights=weights, rejected=sorted(rejected)
        )
        return FLModel(
            params_type=ParamsType.FULL,
            params={**model.params, **averaged},
            current_round=rnd,
            meta={TaskMeta.ROUND: rnd, TaskMeta.CONTROLLER_STATE: self.controller_state()},
        )

    def log_site_metrics(self, rnd: int, results: list[FLModel], sites: list[str], phase: Phase | None = None) -> None:
        """Per-site metrics to FLARE's log and metrics.jsonl; sites that sent no usable result are logged too."""
        task = (phase or self.round_phases(rnd)[0]).task_name
        answered = {r.meta.get("client_name") for r in results}
        for site in sorted(set(sites) - answered):
            self.warning(f"round {rnd} {task}: no result from {site} (task error, abort or timeout; see its log)")
            self._run.log("no_result", round=rnd, task=task, site=site)
        for r in results:
            site = r.meta.get("client_name")
            extra = {k: r.meta[k] for k in (TaskMeta.N_SAMPLES, TaskMeta.SITE) if k in r.meta}
            self.info(f"round {rnd} {task} site {site}: {r.metrics}")
            self._run.log("site", round=rnd, task=task, site=site, **(r.metrics or {}), **extra)

    def finish(self, model: FLModel) -> None:
        path = self._run.save_model("global", {k: torch.from_numpy(np.asarray(v)) for k, v in model.params.items()})
        self.info(f"finished {self._num_rounds} rounds; global model in {path}")

    def _open_run_folder(self) -> RunFolder:
        root = Path(self._run_dir) if self._run_dir else Path(self.get_app_dir())
        run = RunFolder(root)
        run.write_config(self._cfg, method=self.method, num_rounds=self._num_rounds, min_clients=self._min_clients)
        return run
