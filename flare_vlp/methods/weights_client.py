"""The client algorithm of every weight-exchanging VLP method: local contrastive image-report training of the dual
encoder on one site's shard (the site-side twin of :mod:`flare_vlp.methods.weights_strategy`).

Per training task it follows hello-pt's client loop, each step one call into the shared layers: load the received
global weights -> measure them on the site's val split -> train the task's parameter groups with the same
``train_loop`` as the centralized baseline -> validate -> reply with only the groups trained. FedAvg and FedProx use
it as it is; a method that needs more at its sites subclasses it and overrides the hooks, called in this order::

    task_options(task)                      the task's options, checked (OPTIONS lists those it knows)
    load_global -> the val loss of the received model
    before_training(task, options)          metrics of the received model (e.g. a robust-weight signal)
    set the task's groups trainable
    train_objective(task, options)          the loss to train on (built while the model holds the received weights)
    starting_weights(task, options)         load other weights to start from; metrics
    train_loop(seed = cfg.seed + round)
    after_training(task, options)           metrics of the trained model; keep state for a later task
    reply: the trained groups, the metrics and the train_loop logs named in LOGGED

The one option it knows itself is ``prox_mu`` (FedProx: adds ``mu/2 ||w - w_global||^2`` to the local loss);
:mod:`flare_vlp.methods.feddra.client` is the subclass of FedAID / FedDRA.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch

from flare_vlp.experiments.site_data import SiteData
from flare_vlp.methods.client import ClientAlgo, ShouldAbort, SiteContext, run_schedule_window
from flare_vlp.methods.messages import Message, PayloadKind, Task, TaskMeta, TaskName
from flare_vlp.methods.payload import Declaration
from flare_vlp.methods.tensors import DEFAULT_GROUPS, exchanged_keys, to_numpy, to_torch
from flare_vlp.training import train_loop
from flare_vlp.training.held_out import mean_loss
from flare_vlp.training.loop import TrainResult
from flare_vlp.training.objectives import ContrastiveObjective, Objective

__all__ = ["WeightsClientAlgo", "NUM_STEPS"]

NUM_STEPS = "NUM_STEPS_CURRENT_ROUND"
"""FLARE's meta key for a reply's local steps (``FLMetaKey.NUM_STEPS_CURRENT_ROUND``)."""


class WeightsClientAlgo(ClientAlgo):
    """Trains, validates and replies with the dual encoder of the site's experiment config."""

    OPTIONS: ClassVar[tuple[str, ...]] = ("prox_mu",)
    """The task options this algorithm understands (any other is an error naming it)."""
    TRAIN_TASKS: ClassVar[frozenset[str]] = frozenset({TaskName.TRAIN})
    """The task names it trains on (the host dispatches them to :meth:`train`)."""
    LOGGED: ClassVar[tuple[str, ...]] = ("prox",)
    """``train_loop`` logs of the last step copied into the reply's metrics when present."""

    def initialize(self, site: SiteContext) -> None:
        self.site = site
        self.cfg = site.cfg
        self.data: SiteData = site.site_data()
        self._shareable = frozenset(exchanged_keys(self.data.model, DEFAULT_GROUPS, self.cfg.model.frozen))
        site.logger.info(
            f"site {site.site!r} -> data site {self.data.data_site!r}: "
            f"{self.data.n_train} train, {self.data.n_val} val rows on {site.device}"
        )

    def declaration(self) -> Declaration:
        return Declaration(
            receives=frozenset({PayloadKind.WEIGHTS}),
            trains=("the task's parameter groups of the dual encoder",),
            shares=frozenset({PayloadKind.WEIGHTS, PayloadKind.METRICS}),
            shareable_keys=self._shareable,
            train_tasks=self.TRAIN_TASKS,
        )

    # -- hooks (a method's subclass overrides what it needs) -----------------------------------------------------

    def task_options(self, task: Task) -> dict[str, Any]:
        """The task's options; one this algorithm does not know (:attr:`OPTIONS`) is an error naming it."""
        unknown = sorted(set(task.options) - set(self.OPTIONS))
        if unknown:
            raise ValueError(
                f"task {task.name!r} carries options {unknown} the {type(self).__name__} algorithm does not know: "
                f"{self.OPTIONS}"
            )
        return dict(task.options)

    def before_training(self, task: Task, options: dict[str, Any]) -> dict[str, float]:
        """Metrics of the received model, measured before anything trains (none here)."""
        return {}

    def train_objective(self, task: Task, options: dict[str, Any]) -> Objective:
        """The loss the site trains on, built while the model holds the received weights: the reported one, ITA."""
        return self.objective()

    def starting_weights(self, task: Task, options: dict[str, Any]) -> dict[str, float]:
        """Load the weights training starts from, if not the received ones (here: the received ones); metrics."""
        return {}

    def after_training(self, task: Task, options: dict[str, Any]) -> dict[str, float]:
        """Metrics of the trained model, and whatever a later task needs kept (nothing here)."""
        return {}

    # -- per-task settings ------------------------------------------------------------------------------------

    def objective(self) -> Objective:
        """The alignment loss every site reports (validation; a method's held-out signal)."""
        return ContrastiveObjective(self.cfg.train.positives)

    def local_steps(self, task: Task) -> int:
        steps = task.local_steps or self.site.local_steps
        return int(steps) if steps else len(self.data.train_loader)

    def schedule_window(self, task: Task, steps: int) -> tuple[int, int] | None:
        """Where this task's steps sit in the run's lr schedule: ``(round * steps, total_rounds * steps)``.

        Each phase (task) of a round has its own steps, so each follows its own schedule across rounds. ``None`` (a
        fresh schedule per task) with ``train.federated_schedule: round`` or when the task carries no round count.
        """
        return run_schedule_window(self.cfg.train, task, steps)

    # -- tasks ------------------------------------------------------------------------------------------------

    def load_global(self, message: Message) -> dict[str, torch.Tensor]:
        if not message.weights:
            raise ValueError("the task carries no model weights")
        params = to_torch(message.weights)
        self.data.model.load_group_state_dict(params, strict=True)
        return params

    def train(self, task: Task, message: Message, should_abort: ShouldAbort) -> Message | None:
        """Load the global model, train locally, validate; reply with the trained groups, n_k and metrics."""
        data, cfg = self.data, self.cfg
        options = self.task_options(task)
        global_params = self.load_global(message)
        global_val_loss = self._val_loss()  # how well the received global model serves this site
        signal = self.before_training(task, options)
        groups = list(task.groups or DEFAULT_GROUPS)
        data.model.set_trainable(groups)
        if cfg.model.frozen:
            data.model.freeze(cfg.model.frozen)
        prox_mu = float(options.get("prox_mu") or 0.0)
        objective = self.train_objective(task, options)
        signal.update(self.starting_weights(task, options))
        steps = self.local_steps(task)
        result = train_loop(
            data.model,
            data.train_loader,
            cfg.train,
            objective=objective,
            device=self.site.device,
            steps=steps,
            schedule_window=self.schedule_window(task, steps),
            prox_mu=prox_mu,
            global_params=global_params if prox_mu > 0 else None,
            seed=cfg.seed + int(task.round),
            on_log=self._step_streamer(task, steps),
            should_abort=should_abort,
        )
        if result.aborted:
            self.site.logger.warning(f"site {self.site.site!r}: training aborted after {result.steps} steps")
            return None
        signal.update(self.after_training(task, options))
        data.model.cpu()
        keys = exchanged_keys(data.model, groups, cfg.model.frozen)
        state = data.model.state_dict()
        metrics = self._metrics(result, global_val_loss, signal)
        self.site.logger.info(f"site {self.site.site!r} round {task.round}: {metrics}")
        self.site.stream("round", metrics, int(task.round))
        return Message(
            weights=to_numpy({k: state[k] for k in keys}),
            metrics=metrics,
            meta={
                NUM_STEPS: result.steps,
                TaskMeta.N_SAMPLES: data.n_train,
                TaskMeta.SITE: data.data_site,
                TaskMeta.TRAINABLE_GROUPS: groups,
            },
        )

    def evaluate(self, task: Task, message: Message) -> Message:
        """Mean contrastive loss of the received weights on the site's val split."""
        self.load_global(message)
        metrics = {"val_loss": self._val_loss(), "n_val": self.data.n_val}
        self.site.logger.info(f"site {self.site.site!r} validate: {metrics}")
        return Message(metrics=metrics, meta={TaskMeta.SITE: self.data.data_site})

    def get_weights(self, task: Task) -> Message:
        """The site's current local model, shareable part only (cross-site evaluation)."""
        state = self.data.model.cpu().state_dict()
        return Message(weights=to_numpy({k: state[k] for k in self._shareable}))

    # -- helpers ----------------------------------------------------------------------------------------------

    def _metrics(self, result: TrainResult, global_val_loss: float, signal: dict[str, float]) -> dict[str, float]:
        """The reply's metrics: losses, the hooks' metrics, throughput, and the :attr:`LOGGED` train_loop logs."""
        metrics = {
            "train_loss": result.final_loss,
            "val_loss": self._val_loss(),
            "global_val_loss": global_val_loss,
            **signal,
            "samples_per_s": result.samples_per_s,
            "steps": result.steps,
            "seconds": result.seconds,
        }
        for key in self.LOGGED:
            if key in result.last_logs:
                metrics[key] = result.last_logs[key]
        return metrics

    def _step_streamer(self, task: Task, steps: int) -> Callable[[int, dict], None]:
        """``train_loop``'s ``on_log``: the step's train loss as ``train/loss`` at step round * steps + step."""
        base = int(task.round) * steps
        return lambda step, logs: self.site.stream("train", {"loss": logs.get("loss")}, base + step)

    def _val_loss(self) -> float:
        if self.data.val_loader is None:
            return float("nan")
        return mean_loss(self.data.model, self.data.val_loader, self.objective(), self.site.device)
