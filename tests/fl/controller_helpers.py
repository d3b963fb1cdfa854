"""Server strategies without a FLARE runtime (log calls captured), the tiny global model, shifted updates."""

from __future__ import annotations

import logging

import numpy as np

from flare_vlp.config import load_config
from flare_vlp.experiments.builders import build_model
from flare_vlp.experiments.run_folder import RunFolder
from flare_vlp.methods.messages import Message, Task, TaskMeta
from flare_vlp.methods.registry import get_method, method_config
from flare_vlp.methods.strategy import ServerContext, ServerStrategy, settle_task
from flare_vlp.methods.tensors import to_numpy


class ListHandler(logging.Handler):
    """Keeps every log message (``.messages``) so a test can assert what the strategy warned about."""

    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _strategy(tmp_path, method: str = "fedavg", *, min_clients: int = 2, overrides=None, **settings) -> ServerStrategy:
    """A fresh strategy of ``method`` on the tiny config, logging into a run folder at ``tmp_path``."""
    strategy = get_method(method).strategy_cls()(method_config(method, settings))
    logger = logging.getLogger(f"test.{method}.{id(strategy)}")
    logger.propagate = False
    strategy.logged = ListHandler()
    logger.addHandler(strategy.logged)
    logger.setLevel(logging.INFO)
    strategy.run = RunFolder(tmp_path)
    strategy.initialize(ServerContext(load_config("tiny", overrides), 2, min_clients, strategy.run.log, logger))
    return strategy


def _combine(strategy: ServerStrategy, task: Task, replies: dict[str, Message]) -> dict[str, np.ndarray]:
    """The host cycle both hosts drive (:func:`settle_task`); returns the new global weights."""
    settle_task(strategy, task, replies)
    return strategy.global_weights()


def _reply(params: dict, n: int, **metrics) -> Message:
    return Message(weights=params, metrics={"train_loss": 1.0, **metrics}, meta={TaskMeta.N_SAMPLES: n})


def _global() -> dict[str, np.ndarray]:
    return to_numpy(build_model(load_config("tiny").model, seed=0).state_dict())


def _shifted(params: dict, delta: float) -> dict:
    return {k: np.asarray(v + delta) if v.dtype.kind == "f" else v.copy() for k, v in params.items()}
