"""The VLP site executor: a plain FLARE ``Executor`` named by class path in ``config_fed_client.json``.

Per task it follows hello-pt's client loop, each step one call into the shared layers: receive the global weights
-> load -> train with the same ``train_loop`` as the centralized baseline -> validate on the site's val split ->
send back only the parameter groups trained this round. Task names map to handlers in :meth:`task_handlers`, and
the trainable groups, FedProx mu and local steps come per task in ``FLModel.meta`` (:class:`TaskMeta`), so later
methods (FedDRA stages, anchor losses) extend this class instead of copying it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from nvflare.apis.event_type import EventType
from nvflare.apis.executor import Executor
from nvflare.apis.fl_constant import FLMetaKey, ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable, make_reply
from nvflare.apis.signal import Signal
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

from flare_vlp.config import ExperimentConfig, TrainConfig, load_config
from flare_vlp.fl.analytics import stream_scalars
from flare_vlp.fl.exchange import DEFAULT_GROUPS, TaskMeta, TaskName, exchanged_keys, to_numpy, to_torch
from flare_vlp.fl.executors.site_data import SiteData, load_site_data
from flare_vlp.training import train_loop
from flare_vlp.training.objectives import AnchoredObjective, ContrastiveObjective, Objective, batch_to_device
from flare_vlp.training.schedule import round_window

__all__ = ["VLPExecutor", "mean_loss"]

Handler = Callable[[FLModel | None, FLContext, Signal], FLModel | None]


@torch.no_grad()
def mean_loss(model: torch.nn.Module, loader, objective: Objective, device: str) -> float:
    """Sample-weighted mean objective over ``loader`` in eval mode (the site's validation loss)."""
    model.to(device).eval()
    total, count = 0.0, 0
    for batch in loader:
        loss, _ = objective(model, batch_to_device(batch, device))
        n = int(batch["image"].shape[0])
        total += float(loss) * n
        count += n
    return total / count if count else float("nan")


class VLPExecutor(Executor):
    """Trains, validates and submits the dual encoder of an experiment config on one site's data shard.

    Args:
        config: preset name (``tiny``, ``demo``, ``bench``) or YAML path of the experiment config.
        data_dir: SynthCXR folder; generated (once, under a file lock) when missing. Ignored with ``manifest``.
        manifest: path of a manifest (JSONL/CSV) holding this site's rows.
        site_map: FLARE site name -> manifest site name; default: the same name (``site-1`` -> ``site-1``).
        local_steps: optimizer steps per round; default: one epoch of the site's train split.
        device: torch device, e.g. ``cpu`` or ``cuda``.
        config_overrides: nested dict merged over the config (e.g. ``{"train": {"lr": 1e-3}}``).
        num_threads: torch CPU threads of this site (default: torch's choice). Simulated sites share one machine;
            one thread each avoids oversubscribing its cores.
    """

    def __init__(
        self,
        config: str = "tiny",
        data_dir: str | None = None,
        manifest: str | None = None,
        site_map: dict | None = None,
        local_steps: int | None = None,
        device: str = "cpu",
        config_overrides: dict | None = None,
        num_threads: int | None = None,
    ):
        super().__init__()
        if local_steps is not None and local_steps < 1:
            raise ValueError(f"`local_steps` must be >= 1 or None, got {local_steps}")
        self._config = config
        self._data_dir = data_dir
        self._manifest = manifest
        self._site_map = site_map
        self._local_steps = local_steps
        self._device = device
        self._config_overrides = config_overrides
        self._num_threads = num_threads
        self._cfg: ExperimentConfig | None = None
        self._site: SiteData | None = None
        self._setup_error: str | None = None

    # -- set-up ---------------------------------------------------------------------------------------------------

    def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
        if event_type == EventType.START_RUN:
            self._ensure_site(fl_ctx)

    def _ensure_site(self, fl_ctx: FLContext) -> bool:
        """Build the site's data and model once; log (and remember) a clear error instead of raising."""
        if self._site is not None or self._setup_error is not None:
            return self._site is not None
        name = fl_ctx.get_identity_name()
        if self._num_threads:
            torch.set_num_threads(self._num_threads)
        try:
            self._cfg = load_config(self._config, self._config_overrides)
            self._site = load_site_data(
                self._cfg, name, data_dir=self._data_dir, manifest=self._manifest, site_map=self._site_map
            )
        except Exception as e:  # reported to the server as a task error, never a crashed client
            self._setup_error = f"site {name!r}: cannot set up training data/model: {e}"
            self.log_error(fl_ctx, self._setup_error)
            return False
        site = self._site
        self.log_info(
            fl_ctx, f"site {name!r} -> data site {site.data_site!r}: {site.n_train} train, {site.n_val} val rows"
        )
        return True

    # -- dispatch -------------------------------------------------------------------------------------------------

    def task_handlers(self) -> dict[str, Handler]:
        """Task name -> handler; subclasses add or replace entries."""
        return {
            AppConstants.TASK_TRAIN: self.train,
            TaskName.TRAIN_DEEP: self.train,  # FedDRA stage 1: same handler, groups and steps come in the task meta
            AppConstants.TASK_VALIDATION: self.validate,
            AppConstants.TASK_SUBMIT_MODEL: self.submit_model,
        }

    def execute(self, task_name: str, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        handler = self.task_handlers().get(task_name)
        if handler is None:
            self.log_error(fl_ctx, f"unknown task {task_name!r}; known: {sorted(self.task_handlers())}")
            return make_reply(ReturnCode.TASK_UNKNOWN)
        if not self._ensure_site(fl_ctx):
            self.log_error(fl_ctx, f"task {task_name!r} refused: {self._setup_error}")
            return make_reply(ReturnCode.EXECUTION_EXCEPTION)
        try:
            model_in = FLModelUtils.from_shareable(shareable) if task_name != AppConstants.TASK_SUBMIT_MODEL else None
            result = handler(model_in, fl_ctx, abort_signal)
        except Exception as e:  # a failed task must reach the server as a return code, never kill the client
            self.log_exception(fl_ctx, f"site {fl_ctx.get_identity_name()!r}: task {task_name!r} failed: {e}")
            return make_reply(ReturnCode.EXECUTION_EXCEPTION)
        if result is None or abort_signal.triggered:
            return make_reply(ReturnCode.TASK_ABORTED)
        return FLModelUtils.to_shareable(result)

    # -- per-task settings (override points) ----------------------------------------------------------------------

    def trainable_groups(self, model_in: FLModel) -> list[str]:
        return list(model_in.meta.get(TaskMeta.TRAINABLE_GROUPS) or DEFAULT_GROUPS)

    def train_config(self, model_in: FLModel) -> TrainConfig:
        mu = model_in.meta.get(TaskMeta.PROX_MU)
        return self._cfg.train if mu is None else dataclasses.replace(self._cfg.train, prox_mu=float(mu))

    def objective(self, model_in: FLModel) -> Objective:
        """The alignment loss every site reports (validation, the DRO loss signal)."""
        return ContrastiveObjective(self._cfg.train.positives)

    def training_objective(self, model_in: FLModel) -> Objective:
        """The local training loss: :meth:`objective`, plus FedDRA's anchor term when the task asks for it.

        Built right after the global weights were loaded, so the anchor copy IS the round's global model.
        """
        weight = float(model_in.meta.get(TaskMeta.ANCHOR_WEIGHT) or 0.0)
        base = self.objective(model_in)
        return AnchoredObjective(self._site.model, base, weight) if weight > 0 else base

    def local_steps(self, model_in: FLModel) -> int:
        steps = model_in.meta.get(TaskMeta.LOCAL_STEPS) or self._local_steps
        return int(steps) if steps else len(self._site.train_loader)

    def schedule_window(self, model_in: FLModel, steps: int) -> tuple[int, int] | None:
        """Where this task's steps sit in the run's lr schedule: ``(round * steps, total_rounds * steps)``.

        Each phase (task) of a round has its own steps, so each follows its own schedule across rounds. ``None`` (a
        fresh schedule per task) with ``train.federated_schedule: round`` or when the task carries no round count.
        """
        total_rounds = model_in.total_rounds
        if self._cfg.train.federated_schedule == "round" or not total_rounds:
            return None
        return round_window(int(model_in.current_round or 0), int(total_rounds), steps)

    # -- tasks ----------------------------------------------------------------------------------------------------

    def load_global(self, model_in: FLModel) -> dict[str, torch.Tensor]:
        if not model_in.params:
            raise ValueError("the task carries no model params")
        params = to_torch(model_in.params)
        self._site.model.load_group_state_dict(params, strict=True)
        return params

    def train(self, model_in: FLModel, fl_ctx: FLContext, abort_signal: Signal) -> FLModel | None:
        """Load the global model, train locally, validate, and return the trained groups with n_k and metrics."""
        site, cfg = self._site, self._cfg
        global_params = self.load_global(model_in)
        global_val_loss = self._val_loss(model_in)  # how well the received global model serves this site (DRO)
        groups = self.trainable_groups(model_in)
        site.model.set_trainable(groups)
        if cfg.model.frozen:
            site.model.freeze(cfg.model.frozen)
        train_cfg = self.train_config(model_in)
        steps = self.local_steps(model_in)
        result = train_loop(
            site.model,
            site.train_loader,
            train_cfg,
            objective=self.training_objective(model_in),
            device=self._device,
            steps=steps,
            schedule_window=self.schedule_window(model_in, steps),
            global_params=global_params if train_cfg.prox_mu > 0 else None,
            seed=cfg.seed + int(model_in.current_round or 0),
            on_log=self._step_streamer(model_in, fl_ctx),
            should_abort=lambda: abort_signal.triggered,
        )
        if result.aborted:
            self.log_warning(fl_ctx, f"site {site.site!r}: training aborted after {result.steps} steps")
            return None
        site.model.cpu()
        keys = exchanged_keys(site.model, groups, cfg.model.frozen)
        state = site.model.state_dict()
        metrics = {
            "train_loss": result.final_loss,
            "val_loss": self._val_loss(model_in),
            "global_val_loss": global_val_loss,
            "samples_per_s": result.samples_per_s,
            "steps": result.steps,
            "seconds": result.seconds,
        }
        for key in ("prox", "anchor"):
            if key in result.last_logs:
                metrics[key] = result.last_logs[key]
        self.log_info(fl_ctx, f"site {site.site!r} round {model_in.current_round}: {metrics}")
        self.stream_metrics(fl_ctx, metrics, step=int(model_in.current_round or 0))
        return FLModel(
            params_type=ParamsType.FULL,
            params=to_numpy({k: state[k] for k in keys}),
            metrics=metrics,
            current_round=model_in.current_round,
            meta={
                FLMetaKey.NUM_STEPS_CURRENT_ROUND: result.steps,
                TaskMeta.N_SAMPLES: site.n_train,
                TaskMeta.SITE: site.data_site,
                TaskMeta.TRAINABLE_GROUPS: groups,
            },
        )

    def validate(self, model_in: FLModel, fl_ctx: FLContext, abort_signal: Signal) -> FLModel:
        """Mean contrastive loss of the received weights on the site's val split."""
        self.load_global(model_in)
        metrics = {"val_loss": self._val_loss(model_in), "n_val": self._site.n_val}
        self.log_info(fl_ctx, f"site {self._site.site!r} validate: {metrics}")
        return FLModel(metrics=metrics, meta={TaskMeta.SITE: self._site.data_site})

    def submit_model(self, model_in: FLModel | None, fl_ctx: FLContext, abort_signal: Signal) -> FLModel:
        """The site's current local model (full state), e.g. for cross-site evaluation."""
        return FLModel(params_type=ParamsType.FULL, params=to_numpy(self._site.model.cpu().state_dict()))

    # -- live metrics (FLARE analytics events; see flare_vlp.fl.analytics) ---------------------------------------

    def stream_metrics(self, fl_ctx: FLContext, metrics: dict, step: int, tag: str = "round") -> None:
        """Stream the numeric ``metrics`` to the server as ``<tag>/<key>`` scalars at ``step`` (TensorBoard and
        metrics.jsonl there). Best effort: a failed send is logged and never fails the task."""
        try:
            stream_scalars(self, fl_ctx, tag, metrics, step)
        except Exception as e:
            self.log_warning(fl_ctx, f"cannot stream {tag!r} metrics at step {step}: {e}")

    def _step_streamer(self, model_in: FLModel, fl_ctx: FLContext) -> Callable[[int, dict], None]:
        """``train_loop``'s ``on_log``: the step's train loss as ``train/loss`` at step round * local_steps + step."""
        base = int(model_in.current_round or 0) * self.local_steps(model_in)
        return lambda step, logs: self.stream_metrics(fl_ctx, {"loss": logs.get("loss")}, base + step, tag="train")

    def _val_loss(self, model_in: FLModel) -> float:
        if self._site.val_loader is None:
            return float("nan")
        return mean_loss(self._site.model, self._site.val_loader, self.objective(model_in), self._device)
