"""The site half of FedAID and FedDRA: the weights client with the DRO signal, the anchor loss and two stages.

:class:`DROClientAlgo` is :class:`~flare_vlp.methods.weights_client.WeightsClientAlgo` with these task options
(sent by :class:`~flare_vlp.methods.feddra.strategy.DROStrategy`), each through one of its hooks:

* ``dro_batches`` + ``dro_batch_size`` (``signal_batches: fixed``): score the received model (``before_training``),
  and then the site's own update (``after_training``), on that many seeded batches of that many distinct val rows
  (``dro_loss``, ``dro_local_loss``): the DRO signal, the same count and size at every site so its expected value does
  not depend on the val-set size. A val split with fewer rows than one batch reports NaN (the server keeps the site's
  weight);
* ``anchor_weight``: adds the anchor loss towards the received global model's embeddings (``train_objective``);
* ``loss_scale`` (``sum``): train on ``2 * ITA`` (+ anchor), the reference code's sum of the two cross-entropies;
* ``stage2_start`` (``local``, FedDRA): keep the weights stage 1 (:data:`~flare_vlp.methods.feddra.config.TRAIN_DEEP`)
  ends with, in memory (``after_training``), and start the same round's stage 2 from them (``starting_weights``); the
  received stage-1 average is then only the anchor. A site without its stage-1 weights of that round (it missed
  stage 1, or restarted in between) starts from the received model, with a warning and ``stage2_local = 0`` in its
  metrics.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch

from flare_vlp.algorithms.dro import scoring_batches
from flare_vlp.methods.client import SiteContext
from flare_vlp.methods.feddra.config import LOSS_SCALES, STAGE2_STARTS, TRAIN_DEEP
from flare_vlp.methods.messages import Task, TaskName
from flare_vlp.methods.weights_client import WeightsClientAlgo
from flare_vlp.training.held_out import batches_loss
from flare_vlp.training.objectives import AnchoredObjective, ContrastiveObjective, Objective

__all__ = ["DROClientAlgo", "ScaledContrastiveObjective"]

_CHOICES = {"loss_scale": LOSS_SCALES, "stage2_start": STAGE2_STARTS}  # the config's own choices


class ScaledContrastiveObjective(ContrastiveObjective):
    """ITA times ``scale``: ``scale = 2`` is the reference code's SUM of the two cross-entropies (ours is their mean),
    so an anchored objective over it is the reference's ``2 * ITA + anchor_weight * anchor``."""

    def __init__(self, positives: str = "labels", scale: float = 1.0):
        super().__init__(positives)
        self.scale = float(scale)

    def loss(self, out, batch: dict) -> torch.Tensor:
        return self.scale * super().loss(out, batch)


class DROClientAlgo(WeightsClientAlgo):
    """The FedAID / FedDRA site: FedAvg's client plus the DRO signal, the anchor, the loss unit and stage 2's start."""

    OPTIONS: ClassVar[tuple[str, ...]] = (
        *WeightsClientAlgo.OPTIONS,
        "anchor_weight",
        "dro_batches",
        "dro_batch_size",
        "loss_scale",
        "stage2_start",
    )
    TRAIN_TASKS: ClassVar[frozenset[str]] = frozenset({TaskName.TRAIN, TRAIN_DEEP})
    LOGGED: ClassVar[tuple[str, ...]] = (*WeightsClientAlgo.LOGGED, "anchor")

    def initialize(self, site: SiteContext) -> None:
        super().initialize(site)
        self._stage1: tuple[int, dict[str, torch.Tensor]] | None = None  # (round, weights stage 1 ended with)
        self._scoring: list[np.ndarray] | None = None  # the task's scoring batches (rows of the val split)
        self._warned_small_val = False

    # -- hooks ------------------------------------------------------------------------------------------------

    def task_options(self, task: Task) -> dict[str, Any]:
        options = super().task_options(task)
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

    def before_training(self, task: Task, options: dict[str, Any]) -> dict[str, float]:
        """``dro_loss``: the received model on the round's scoring batches (when the task asks for the signal)."""
        self._scoring = self._scoring_batches(task, options)
        return {"dro_loss": self._batches_loss(self._scoring)} if "dro_batches" in options else {}

    def train_objective(self, task: Task, options: dict[str, Any]) -> Objective:
        """ITA (or ``2 * ITA`` under ``loss_scale: sum``), plus the anchor loss when ``anchor_weight > 0``.

        Built right after the global weights were loaded, so the anchor copy IS the task's global model.
        """
        scale = 2.0 if options.get("loss_scale") == "sum" else 1.0
        base = ScaledContrastiveObjective(self.cfg.train.positives, scale)
        anchor = float(options.get("anchor_weight") or 0.0)
        return AnchoredObjective(self.data.model, base, anchor) if anchor > 0 else base

    def starting_weights(self, task: Task, options: dict[str, Any]) -> dict[str, float]:
        """Stage 2 under ``stage2_start: local``: start from this site's own stage-1 weights (``stage2_local``)."""
        if options.get("stage2_start") == "local" and task.name == TaskName.TRAIN:
            return {"stage2_local": float(self._restore_stage1(task))}
        return {}

    def after_training(self, task: Task, options: dict[str, Any]) -> dict[str, float]:
        """``dro_local_loss`` (the site's own update on the same rows: the ``excess`` signal); under
        ``stage2_start: local`` stage 1 keeps the weights it ends with (``model.frozen`` groups never change)."""
        signal = {"dro_local_loss": self._batches_loss(self._scoring)} if "dro_batches" in options else {}
        if options.get("stage2_start") == "local" and task.name == TRAIN_DEEP:
            state = self.data.model.state_dict()
            self._stage1 = (int(task.round), {k: state[k].detach().cpu().clone() for k in self._shareable})
        return signal

    # -- helpers ----------------------------------------------------------------------------------------------

    def _scoring_batches(self, task: Task, options: dict[str, Any]) -> list[np.ndarray] | None:
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
