"""The server of FedOPAL and its baselines: n_k-weighted averaging of the shared tensors only.

The server builds the same classifier as the sites (same config, seed and variant: :func:`build_classifier`), so it
knows the shared tensors' keys, shapes and initial values without a site telling it; every reply is validated
against them (:func:`flare_vlp.algorithms.aggregate.validate_update`: keys, shapes, dtype kinds, NaN/Inf) and the
accepted ones are averaged with n_k (or uniform) weights. LoRA factors travel as ``adapters``, full fine-tuning's
tensors as ``weights`` (the payload kind says what a message carries; the disclosure check treats both alike).
Local-only LoRA shares nothing: its rounds only collect metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from flare_vlp.algorithms.aggregate import validate_update, weighted_average
from flare_vlp.methods.messages import Message, Task, TaskName
from flare_vlp.methods.strategy import ServerStrategy
from flare_vlp.methods.weights_strategy import sample_counts

__all__ = ["LoraFTStrategy"]


class LoraFTStrategy(ServerStrategy):
    """Average the variant's shared tensors (see the module docstring).

    Args:
        config: a :class:`~flare_vlp.methods.lora_ft.config.LoraFTConfig` of the method's variant.
    """

    verb = "averaged the shared tensors of"

    def setup(self, params: Mapping[str, np.ndarray] | None) -> None:
        from flare_vlp.experiments.builders import build_model
        from flare_vlp.methods.lora_ft.config import VARIANTS
        from flare_vlp.methods.lora_ft.model import build_classifier, shared_state

        cfg = self.ctx.cfg
        self._options = self.config.options()
        self._full = "full" in VARIANTS[self.config.variant]["shared"]
        model, _ = build_classifier(build_model(cfg.model, seed=cfg.seed), self._n_labels(), self._options, cfg.seed)
        initial = {k: v.numpy() for k, v in shared_state(model, self._options).items()}
        self._params = dict(params) if params else initial
        if set(self._params) != set(initial):
            raise ValueError(f"restored global tensors do not match {self.config.variant}'s shared tensors")

    def _n_labels(self) -> int:
        return len(self.ctx.rows("the label count").findings)

    def round_tasks(self, rnd: int) -> list[Task]:
        return [Task(TaskName.TRAIN, rnd, self.ctx.num_rounds, options=self._options)]

    def global_message(self, task: Task) -> Message:
        return Message(weights=dict(self._params)) if self._full else Message(adapters=dict(self._params))

    def _payload(self, reply: Message) -> dict:
        return reply.weights if self._full else reply.adapters

    def check_reply(self, task: Task, site: str, reply: Message) -> None:
        if self._params:
            validate_update(site, self._payload(reply), self._params)

    def combine(self, task: Task, replies: Mapping[str, Message]) -> dict[str, Any]:
        if self.config.weighting == "uniform":
            weights = {site: 1.0 for site in replies}
        else:
            weights = sample_counts(replies)
        if self._params:
            updates = {s: self._payload(r) for s, r in replies.items()}
            self._params = {**self._params, **weighted_average(updates, weights, reference=self._params)}
        n_bytes = int(sum(np.asarray(v).nbytes for v in self._params.values()))
        return {"weights": weights, "bytes_per_client": n_bytes}

    def global_weights(self) -> dict[str, np.ndarray]:
        return self._params
