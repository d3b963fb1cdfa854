"""The VLP client algorithm: local contrastive image-report training of the dual encoder on one site's shard.

Per training task it follows hello-pt's client loop, each step one call into the shared layers: load the received
global weights -> measure them on the site's val split (the DRO signal) -> train the task's parameter groups with
the same ``train_loop`` as the centralized baseline -> validate -> reply with only the groups trained. The method's
per-task options arrive in :attr:`Task.options` and are the only method knowledge here:

* ``prox_mu`` (FedProx): adds ``mu/2 ||w - w_global||^2`` to the local loss;
* ``anchor_weight`` (FedAID / FedDRA): adds the anchor loss towards the received global model's embeddings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from flare_vlp.experiments.site_data import SiteData, load_site_data
from flare_vlp.methods.client import ClientAlgo, ShouldAbort, SiteContext
from flare_vlp.methods.messages import Message, PayloadKind, Task, TaskMeta, TaskName
from flare_vlp.methods.payload import Declaration
from flare_vlp.methods.tensors import DEFAULT_GROUPS, exchanged_keys, to_numpy, to_torch
from flare_vlp.training import train_loop
from flare_vlp.training.objectives import AnchoredObjective, ContrastiveObjective, Objective, batch_to_device
from flare_vlp.training.schedule import round_window

__all__ = ["VLPClientAlgo", "mean_loss", "NUM_STEPS"]

NUM_STEPS = "NUM_STEPS_CURRENT_ROUND"
"""FLARE's meta key for a reply's local steps (``FLMetaKey.NUM_STEPS_CURRENT_ROUND``)."""

OPTIONS = ("prox_mu", "anchor_weight")
"""The task options this algorithm understands."""


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


class VLPClientAlgo(ClientAlgo):
    """Trains, validates and replies with the dual encoder of the site's experiment config."""

    def initialize(self, site: SiteContext) -> None:
        self.site = site
        self.cfg = site.cfg
        self.data: SiteData = load_site_data(
            site.cfg, site.site, data_dir=site.data_dir, manifest=site.manifest, site_map=site.site_map
        )
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
            train_tasks=frozenset({TaskName.TRAIN, TaskName.TRAIN_DEEP}),
        )

    # -- per-task settings ------------------------------------------------------------------------------------

    def _options(self, task: Task) -> dict:
        unknown = sorted(set(task.options) - set(OPTIONS))
        if unknown:
            raise ValueError(f"task {task.name!r} carries options {unknown} the VLP algorithm does not know: {OPTIONS}")
        return dict(task.options)

    def objective(self) -> Objective:
        """The alignment loss every site reports (validation, the DRO loss signal)."""
        return ContrastiveObjective(self.cfg.train.positives)

    def local_steps(self, task: Task) -> int:
        steps = task.local_steps or self.site.local_steps
        return int(steps) if steps else len(self.data.train_loader)

    def schedule_window(self, task: Task, steps: int) -> tuple[int, int] | None:
        """Where this task's steps sit in the run's lr schedule: ``(round * steps, total_rounds * steps)``.

        Each phase (task) of a round has its own steps, so each follows its own schedule across rounds. ``None`` (a
        fresh schedule per task) with ``train.federated_schedule: round`` or when the task carries no round count.
        """
        if self.cfg.train.federated_schedule == "round" or not task.total_rounds:
            return None
        return round_window(int(task.round), int(task.total_rounds), steps)

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
        options = self._options(task)
        global_params = self.load_global(message)
        global_val_loss = self._val_loss()  # how well the received global model serves this site (DRO)
        groups = list(task.groups or DEFAULT_GROUPS)
        data.model.set_trainable(groups)
        if cfg.model.frozen:
            data.model.freeze(cfg.model.frozen)
        mu = options.get("prox_mu")
        train_cfg = cfg.train if mu is None else dataclasses.replace(cfg.train, prox_mu=float(mu))
        anchor = float(options.get("anchor_weight") or 0.0)
        # built right after the global weights were loaded, so the anchor copy IS the task's global model
        objective = AnchoredObjective(data.model, self.objective(), anchor) if anchor > 0 else self.objective()
        steps = self.local_steps(task)
        result = train_loop(
            data.model,
            data.train_loader,
            train_cfg,
            objective=objective,
            device=self.site.device,
            steps=steps,
            schedule_window=self.schedule_window(task, steps),
            global_params=global_params if train_cfg.prox_mu > 0 else None,
            seed=cfg.seed + int(task.round),
            on_log=self._step_streamer(task, steps),
            should_abort=should_abort,
        )
        if result.aborted:
            self.site.logger.warning(f"site {self.site.site!r}: training aborted after {result.steps} steps")
            return None
        data.model.cpu()
        keys = exchanged_keys(data.model, groups, cfg.model.frozen)
        state = data.model.state_dict()
        metrics = {
            "train_loss": result.final_loss,
            "val_loss": self._val_loss(),
            "global_val_loss": global_val_loss,
            "samples_per_s": result.samples_per_s,
            "steps": result.steps,
            "seconds": result.seconds,
        }
        for key in ("prox", "anchor"):
            if key in result.last_logs:
                metrics[key] = result.last_logs[key]
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

    def _step_streamer(self, task: Task, steps: int) -> Callable[[int, dict], None]:
        """``train_loop``'s ``on_log``: the step's train loss as ``train/loss`` at step round * steps + step."""
        base = int(task.round) * steps
        return lambda step, logs: self.site.stream("train", {"loss": logs.get("loss")}, base + step)

    def _val_loss(self) -> float:
        if self.data.val_loader is None:
            return float("nan")
        return mean_loss(self.data.model, self.data.val_loader, self.objective(), self.site.device)
