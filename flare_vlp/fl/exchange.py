"""flare_vlp messages on FLARE's wire: :class:`~flare_vlp.methods.messages.Task` + ``Message`` <-> ``FLModel``.

Layout of the ``FLModel``:

* ``params``: weights under their own keys (so a persisted global model is a plain state dict), adapters under
  ``adapter::<key>``, representations under ``repr::<modality>`` (rows in the order of ``meta["repr_ids"]``);
* ``metrics``: the message's metrics;
* ``meta``: the message's meta plus, server -> site, the task's groups, local steps and options;
* ``current_round`` / ``total_rounds``: the task's round and the run's rounds.

Everything in ``meta`` is a plain Python value: a tensor there breaks FOBS.
"""

from __future__ import annotations

from nvflare.app_common.abstract.fl_model import FLModel, ParamsType

from flare_vlp.methods.messages import Message, Representations, Task, TaskMeta

__all__ = ["ADAPTER_PREFIX", "REPR_PREFIX", "to_flmodel", "from_flmodel", "task_from_flmodel"]

ADAPTER_PREFIX = "adapter::"
REPR_PREFIX = "repr::"
_TASK_KEYS = (TaskMeta.TRAINABLE_GROUPS, TaskMeta.LOCAL_STEPS, TaskMeta.OPTIONS)


def to_flmodel(message: Message, task: Task | None = None) -> FLModel:
    """``message`` (and, server -> site, its ``task``) as an ``FLModel``."""
    params = dict(message.weights)
    params.update({ADAPTER_PREFIX + k: v for k, v in message.adapters.items()})
    meta = dict(message.meta)
    if message.representations is not None:
        params.update({REPR_PREFIX + m: a for m, a in message.representations.arrays.items()})
        meta[TaskMeta.REPR_IDS] = list(message.representations.ids)
    if task is not None:
        meta[TaskMeta.TRAINABLE_GROUPS] = list(task.groups)
        if task.local_steps is not None:
            meta[TaskMeta.LOCAL_STEPS] = int(task.local_steps)
        if task.options:
            meta[TaskMeta.OPTIONS] = dict(task.options)
    metrics = dict(message.metrics) or None
    send_params = bool(params) or metrics is None  # FLARE refuses a model with neither params nor metrics
    return FLModel(
        params_type=ParamsType.FULL if send_params else None,
        params=params if send_params else None,
        metrics=metrics,
        current_round=task.round if task is not None else None,
        total_rounds=task.total_rounds if task is not None else None,
        meta=meta,
    )


def from_flmodel(model: FLModel) -> Message:
    """The :class:`Message` an ``FLModel`` carries (task keys in its meta are left out)."""
    weights, adapters, arrays = {}, {}, {}
    for key, value in (model.params or {}).items():
        if key.startswith(ADAPTER_PREFIX):
            adapters[key[len(ADAPTER_PREFIX) :]] = value
        elif key.startswith(REPR_PREFIX):
            arrays[key[len(REPR_PREFIX) :]] = value
        else:
            weights[key] = value
    meta = {k: v for k, v in (model.meta or {}).items() if k not in _TASK_KEYS}
    ids = meta.pop(TaskMeta.REPR_IDS, None)
    reps = Representations([str(i) for i in ids], arrays) if ids is not None or arrays else None
    return Message(weights, adapters, reps, dict(model.metrics or {}), meta)


def task_from_flmodel(task_name: str, model: FLModel) -> Task:
    """The :class:`Task` a site received (name from FLARE, the rest from the model's round and meta)."""
    meta = model.meta or {}
    return Task(
        name=task_name,
        round=int(model.current_round or 0),
        total_rounds=int(model.total_rounds) if model.total_rounds else None,
        groups=tuple(meta.get(TaskMeta.TRAINABLE_GROUPS) or ("all",)),
        local_steps=int(meta[TaskMeta.LOCAL_STEPS]) if meta.get(TaskMeta.LOCAL_STEPS) else None,
        options=dict(meta.get(TaskMeta.OPTIONS) or {}),
    )
