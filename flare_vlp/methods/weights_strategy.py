"""The server strategy of every weight-averaging method: one global dual encoder, averaged per task.

``run`` of FedAvg (McMahan et al., https://arxiv.org/abs/1602.05629, Alg. 1) as a strategy: the global model is
built once from the config and seed (every site builds the same initial model), each task sends the global weights
(minus the config's ``model.frozen`` groups: they never change and every site builds them identically), each reply
carries the groups the task trained and is validated against the global model (keys, shapes, dtype kinds, NaN/Inf),
and the accepted replies are averaged with the weights :meth:`WeightsStrategy.site_weights` gives. Subclasses say
only what differs: the weights (n_k, uniform, DRO's lambda), the tasks of a round, per-task options.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np

from flare_vlp.algorithms.aggregate import UpdateValidationError, validate_update, weighted_average
from flare_vlp.methods.messages import Message, Task, TaskMeta, TaskName
from flare_vlp.methods.strategy import ServerStrategy
from flare_vlp.methods.tensors import DEFAULT_GROUPS, exchanged_keys, to_numpy

__all__ = ["WeightsStrategy", "sample_counts"]


def sample_counts(replies: Mapping[str, Message]) -> dict[str, float]:
    """Site -> n_k from each reply's ``meta["n_samples"]``; a missing or non-positive count is an error naming it."""
    counts = {}
    for site, reply in replies.items():
        n = reply.meta.get(TaskMeta.N_SAMPLES)
        if n is None or not float(n) > 0:
            raise UpdateValidationError(f"site {site!r}: reply meta has no positive {TaskMeta.N_SAMPLES!r} (n_k)", site)
        counts[site] = float(n)
    return counts


class WeightsStrategy(ServerStrategy):
    """Global weights averaged per task with :meth:`site_weights`; one ``train`` task per round by default."""

    verb = "averaged"

    def setup(self, params: Mapping[str, np.ndarray] | None) -> None:
        from flare_vlp.experiments.builders import build_model

        cfg = self.ctx.cfg
        self._model = build_model(cfg.model, seed=cfg.seed)  # the one server-side build: keys per group, init
        self._params = dict(params) if params else to_numpy(self._model.state_dict())
        self._keys: dict[tuple[str, ...], list[str]] = {}

    def expected_keys(self, groups: tuple[str, ...] | list[str]) -> list[str]:
        """The tensor keys a task on ``groups`` exchanges (minus ``model.frozen``)."""
        groups = tuple(groups)
        if groups not in self._keys:
            self._keys[groups] = exchanged_keys(self._model, groups, self.ctx.cfg.model.frozen)
        return self._keys[groups]

    def global_weights(self) -> dict[str, np.ndarray]:
        return self._params

    # -- a round ------------------------------------------------------------------------------------------------

    def round_tasks(self, rnd: int) -> list[Task]:
        return [Task(TaskName.TRAIN, rnd, self.ctx.num_rounds, DEFAULT_GROUPS, options=self.task_options())]

    def task_options(self) -> dict[str, Any]:
        """Options every training task carries for the client algorithm (e.g. FedProx's ``prox_mu``)."""
        return {}

    def global_message(self, task: Task) -> Message:
        keep = self.expected_keys(DEFAULT_GROUPS)
        return Message(weights={k: self._params[k] for k in keep})

    def check_reply(self, task: Task, site: str, reply: Message) -> None:
        reference = {k: self._params[k] for k in self.expected_keys(task.groups)}
        validate_update(site, reply.weights, reference)

    def combine(self, task: Task, replies: Mapping[str, Message]) -> dict[str, Any]:
        weights = self.site_weights(task, replies)
        reference = {k: self._params[k] for k in self.expected_keys(task.groups)}
        averaged = weighted_average({s: r.weights for s, r in replies.items()}, weights, reference=reference)
        self._params = {**self._params, **averaged}
        return {"weights": weights}

    @abstractmethod
    def site_weights(self, task: Task, replies: Mapping[str, Message]) -> dict[str, float]:
        """Site -> non-negative aggregation weight for the accepted replies of ``task`` (which knows its round)."""
