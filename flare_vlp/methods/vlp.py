"""The VLP client algorithm: local contrastive image-report training of the dual encoder on one site's shard.

Per training task it follows hello-pt's client loop, each step one call into the shared layers: load the received
global weights -> measure them on the site's val split (the DRO signal) -> train the task's parameter groups with
the same ``train_loop`` as the centralized baseline -> validate -> reply with only the groups trained. The method's
per-task options arrive in :attr:`Task.options` and are the only method knowledge here:

* ``prox_mu`` (FedProx): adds ``mu/2 ||w - w_global||^2`` to the local loss;
* ``anchor_weight`` (FedAID / FedDRA): adds the anchor loss towards the received global model's embeddings;
* ``dro_batches`` + ``dro_batch_size`` (FedAID / FedDRA, ``signal_batches: fixed``): also score the received model,
  and then the site's own update, on that many seeded batches of that many distinct val rows (``dro_loss``,
  ``dro_local_loss``): the DRO signal, the same count and size at every site so its expected value does not depend on
  the val-set size. A val split with fewer rows than one batch reports NaN (the server keeps the site's weight);
* ``loss_scale`` (``sum``): train on ``2 * ITA`` (+ anchor), the reference code's sum of the two cross-entropies;
* ``stage2_start`` (``local``, FedDRA): keep the weights stage 1 (``train_deep``) ends with, in memory, and start the
  same round's stage 2 from them; the received stage-1 average is then only the anchor. A site without its stage-1
  weights of that round (it missed stage 1, or restarted in between) starts from the received model, with a warning
  and ``stage2_local = 0`` in its metrics.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import numpy as np
import torch

from flare_vlp.algorithms.dro import scoring_batches
from flare_vlp.experiments.site_data import SiteData, load_site_data
from flare_vlp.methods.client import ClientAlgo, ShouldAbort, SiteContext, run_schedule_window
from flare_vlp.methods.messages import Message, PayloadKind, Task, TaskMeta, TaskName
from flare_vlp.methods.payload import Declaration
from flare_vlp.methods.tensors import DEFAULT_GROUPS, exchanged_keys, to_numpy, to_torch
from flare_vlp.training import train_loop
from flare_vlp.training.held_out import batches_loss, mean_loss
from flare_vlp.training.objectives import AnchoredObjective, ContrastiveObjective, Objective

__all__ = ["VLPClientAlgo", "ScaledContrastiveObjective", "NUM_STEPS"]

NUM_STEPS = "NUM_STEPS_CURRENT_ROUND"
"""FLARE's meta key for a reply's local steps (``FLMetaKey.NUM_STEPS_CURRENT_ROUND``)."""

OPTIONS = ("prox_mu", "anchor_weight", "dro_batches", "dro_batch_size", "loss_scale", "stage2_start")
"""The task options this algorithm understands."""

_CHOICES = {"loss_scale": ("mean", "sum"), "stage2_start": ("global", "local")}


class ScaledContrastiveObjective(ContrastiveObjective):
    """ITA times ``scale``: ``scale = 2`` is the reference code's SUM of the two cross-entropies (ours is their mean),
    so an anchored objective over it is the reference's ``2 * ITA + anchor_weight * anchor``."""

    def __init__(self, positives: str = "labels", scale: float = 1.0):
        super().__init__(positives)
        self.scale = float(scale)

    def loss(self, out, batch: dict) -> torch.Tensor:
        return self.scale * super().loss(out, batch)


class VLPClientAlgo(ClientAlgo):
    """Trains, validates and replies with the dual encoder of the site's experiment config."""

    def initialize(self, site: SiteContext) -> None:
        self.site = site
        self.cfg = site.cfg
        self.data: SiteData = load_site_data(
            site.cfg, site.site, data_dir=site.data_dir, manifest=site.manifest, site_map=site.site_map
        )
        self._stage1: tuple[int, dict[str, torch.Tensor]] | None = None  # (round, weights stage 1 ended with)
        self._warned_small_val = False
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
        options = dict(task.options)
        for key, choices in _CHOICES.items():
            if key in options and options[key] not in choices:
                raise ValueError(
                    f"site {self.site.site!r}: task option {key}={options[key]!r}, expected one of {choices}"
                )
        for key, low in (("dro_batches", 1), ("dro_batch_size", 2)):
            value = options.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ValueError(f"site {self.site.site!r}: task option {key}={value!r}, expected an int >= {low}")
        if ("dro_batches" in options) != ("dro_batch_size" in options):
            raise ValueError(f"site {self.site.site!r}: task options dro_batches and dro_batch_size come together")
        return options

    def objective(self) -> Objective:
        """The alignment loss every site reports (validation, the DRO loss signal)."""
        return ContrastiveObjective(self.cfg.train.positives)

    def train_objective(self, options: Mapping) -> ContrastiveObjective:
        """The alignment term the site trains on: ITA, or ``2 * ITA`` under ``loss_scale: sum``."""
        scale = 2.0 if options.get("loss_scale") == "sum" else 1.0
        return ScaledContrastiveObjective(self.cfg.train.positives, scale)

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
        options = self._options(task)
        global_params = self.load_global(message)
        global_val_loss = self._val_loss()  # how well the received global model serves this site (DRO)
        scoring = self._scoring_batches(task, options)
        signal = {"dro_loss": self._batches_loss(scoring)} if "dro_batches" in options else {}
        groups = list(task.groups or DEFAULT_GROUPS)
        data.model.set_trainable(groups)
        if cfg.model.frozen:
            data.model.freeze(cfg.model.frozen)
        mu = options.get("prox_mu")
        train_cfg = cfg.train if mu is None else dataclasses.replace(cfg.train, prox_mu=float(mu))
        anchor = float(options.get("anchor_weight") or 0.0)
        # built right after the global weights were loaded, so the anchor copy IS the task's global model
        base = self.train_objective(options)
        objective = AnchoredObjective(data.model, base, anchor) if anchor > 0 else base
        local_start = options.get("stage2_start") == "local"
        if local_start and task.name == TaskName.TRAIN:
            signal["stage2_local"] = float(self._restore_stage1(task))
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
        if "dro_batches" in options:  # the site's own update on the same rows (the ``excess`` signal)
            signal["dro_local_loss"] = self._batches_loss(scoring)
        data.model.cpu()
        keys = exchanged_keys(data.model, groups, cfg.model.frozen)
        state = data.model.state_dict()
        if local_start and task.name == TaskName.TRAIN_DEEP:  # model.frozen groups never change: not kept
            self._stage1 = (int(task.round), {k: state[k].detach().clone() for k in self._shareable})
        metrics = {
            "train_loss": result.final_loss,
            "val_loss": self._val_loss(),
            "global_val_loss": global_val_loss,
            **signal,
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

    def _scoring_batches(self, task: Task, options: Mapping) -> list[np.ndarray] | None:
        """The round's fixed scoring batches (seed: experiment seed + round), or ``None``: not asked for, or a val
        split smaller than one batch (then the site sends NaN and keeps its weight; warned once)."""
        if "dro_batches" not in options:
            return None
        size, n_val = int(options["dro_batch_size"]), self.data.n_val
        if self.data.val_loader is None or n_val < size:
            if not self._warned_small_val:
                self.site.logger.warning(
                    f"site {self.site.site!r}: {n_val} val rows, fewer than one DRO scoring batch "
                    f"(dro_batch_size={size}): it sends no DRO loss and keeps its weight; lower dro_batch_size to "
                    f"<= {n_val}, give the site more val rows (data.synth.val_fraction) or use "
                    "signal_batches: full_pass"
                )
                self._warned_small_val = True
            return None
        return scoring_batches(n_val, int(options["dro_batches"]), size, self.cfg.seed, int(task.round))

    def _batches_loss(self, batches: list[np.ndarray] | None) -> float:
        if batches is None:
            return math.nan
        loader = self.data.val_loader
        return batches_loss(
            self.data.model, loader.dataset, loader.collate_fn, batches, self.objective(), self.site.device
        )

    def _restore_stage1(self, task: Task) -> bool:
        """Load the weights this site's stage 1 of ``task.round`` ended with (``stage2_start: local``); ``False``
        (and a warning) when it has none of that round: stage 2 then starts from the received model."""
        kept, self._stage1 = self._stage1, None
        if kept is None or kept[0] != int(task.round):
            have = "none" if kept is None else f"round {kept[0]}'s"
            self.site.logger.warning(
                f"site {self.site.site!r} round {task.round}: stage2_start=local but it holds {have} stage-1 weights "
                "(missed stage 1 or restarted): stage 2 starts from the received stage-1 average"
            )
            return False
        self.data.model.load_group_state_dict(kept[1], strict=True)
        return True
