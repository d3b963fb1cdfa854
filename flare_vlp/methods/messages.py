"""What travels between the server and a site, by payload kind, independent of FLARE.

A :class:`Task` tells a site what to do (task name, round, parameter groups, local steps, method options); a
:class:`Message` carries the payloads of one direction of one task:

* ``weights``: model tensors by state-dict key (the full model or some parameter groups);
* ``adapters``: adapter tensors by key (LoRA A/B of the global adapter, for instance);
* ``representations``: per modality an ``N x D`` array over public samples, keyed by their public ids;
* ``metrics``: scalar metrics (losses, counts, timings);
* ``meta``: plain Python values (``n_samples``, the data site, ...). Never tensors or arrays.

``flare_vlp.fl.exchange`` converts both to and from FLARE's ``FLModel``; the in-process runner passes them as they
are. Arrays are numpy on the wire (FOBS serialises numpy natively; the server never needs torch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

__all__ = ["PayloadKind", "Representations", "Message", "Task", "TaskMeta", "TaskName"]


class PayloadKind(str, Enum):
    """The kinds of payload a message may carry (what a client algorithm declares it sends or receives)."""

    WEIGHTS = "weights"
    ADAPTERS = "adapters"
    REPRESENTATIONS = "representations"
    METRICS = "metrics"


class TaskName:
    """The FLARE task names of the platform. A method may add training tasks of its own (a phase of its round with
    its own name, so FLARE's logs and traffic show the phases apart): its client algorithm declares every name it
    trains on (:attr:`~flare_vlp.methods.payload.Declaration.train_tasks`) and the hosts dispatch by that.

    Attributes:
        TRAIN: a training task (FLARE's ``train``).
        VALIDATE: evaluate the received global state on the site's val split.
        SUBMIT: the site's current shareable state.
    """

    TRAIN = "train"
    VALIDATE = "validate"
    SUBMIT = "submit_model"


class TaskMeta:
    """``meta`` keys the platform itself uses (plain strings: meta must stay FOBS-serialisable).

    Attributes:
        TRAINABLE_GROUPS: server -> site, parameter groups trained (and sent back) by the task.
        LOCAL_STEPS: server -> site, optimizer steps of the task (overrides the site's ``local_steps``).
        OPTIONS: server -> site, the method's per-task options for the client algorithm (e.g. ``prox_mu``).
        REPR_IDS: both ways, the public-sample ids of the representations (row order of every modality's array).
        ROUND: persisted global state, the last completed round (for resuming).
        STRATEGY_STATE: persisted global state, the strategy's resumable plain-Python state (e.g. lambda).
        N_SAMPLES: site -> server, training rows of the site (the FedAvg weight n_k).
        SITE: site -> server, the data site the FLARE client trained on.
        ROLE: site -> server, the site's role in the job (its client algorithm).
    """

    TRAINABLE_GROUPS = "trainable_groups"
    LOCAL_STEPS = "local_steps"
    OPTIONS = "options"
    REPR_IDS = "repr_ids"
    ROUND = "round"
    STRATEGY_STATE = "controller_state"  # the key of checkpoints written before the platform; kept readable
    N_SAMPLES = "n_samples"
    SITE = "data_site"
    ROLE = "role"


@dataclass
class Representations:
    """Per-modality representations of public samples: ``arrays[modality]`` is ``len(ids) x D`` (row i = ids[i])."""

    ids: list[str]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Message:
    """The payloads of one direction of one task (see the module docstring for each kind)."""

    weights: dict[str, np.ndarray] = field(default_factory=dict)
    adapters: dict[str, np.ndarray] = field(default_factory=dict)
    representations: Representations | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def kinds(self) -> set[PayloadKind]:
        """The payload kinds this message actually carries."""
        kinds = set()
        if self.weights:
            kinds.add(PayloadKind.WEIGHTS)
        if self.adapters:
            kinds.add(PayloadKind.ADAPTERS)
        if self.representations is not None:
            kinds.add(PayloadKind.REPRESENTATIONS)
        if self.metrics:
            kinds.add(PayloadKind.METRICS)
        return kinds


@dataclass(frozen=True)
class Task:
    """One step a site is asked to do: the FLARE task name, the round, what to train, and the method's options.

    Args:
        name: FLARE task name (:class:`TaskName`).
        round: the round (0-based).
        total_rounds: rounds of the run (``None``: unknown, e.g. a validation task sent on its own).
        groups: parameter groups trained and sent back (a weights method); ``("all",)`` by default.
        local_steps: optimizer steps (``None``: the site's default, one epoch).
        index: the task's position in its round (0 = first phase).
        options: method-specific settings for the client algorithm (plain values, e.g. ``{"prox_mu": 0.01}``).
    """

    name: str = TaskName.TRAIN
    round: int = 0
    total_rounds: int | None = None
    groups: tuple[str, ...] = ("all",)
    local_steps: int | None = None
    index: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)
