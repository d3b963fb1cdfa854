"""The server's global-state persistor: atomic checkpoints of a strategy's weights, round and state; resumable runs.

Each save writes ``{"params", "round", "config", "state"}`` with ``torch.save`` to a temp file and renames it into
place, so a run killed mid-save keeps the previous round's checkpoint. A fresh run has no checkpoint: the persistor
returns an empty state and the strategy builds the initial model itself (once, from the config's seed, exactly as
every site does). Resuming: pass ``resume_from=<a saved file>``; the controller continues after the saved ``round``
and hands ``params`` and ``state`` (plain Python values, e.g. FedDRA's site weights lambda) back to the strategy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.model import ModelLearnable, ModelLearnableKey, make_model_learnable
from nvflare.app_common.abstract.model_persistor import ModelPersistor

from flare_vlp.methods.messages import TaskMeta
from flare_vlp.methods.tensors import to_numpy, to_torch
from flare_vlp.utils.io import atomic_write

__all__ = ["GlobalStatePersistor", "save_checkpoint", "load_checkpoint", "read_checkpoint", "MODEL_FILE"]

MODEL_FILE = "FL_global_model.pt"


def save_checkpoint(
    path: str | Path, params: dict[str, np.ndarray], round_: int | None, config: str, state: dict | None = None
) -> None:
    """Atomically ``torch.save`` the global params (as tensors), the last completed round, the config name and the
    strategy's state (plain Python values)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"params": to_torch(params), "round": round_, "config": config, "state": state or {}}
    atomic_write(path, lambda tmp: torch.save(blob, tmp))


def read_checkpoint(path: str | Path) -> dict:
    """The dict written by :func:`save_checkpoint` (``params`` as numpy; ``state`` ``{}`` for older files)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "params" not in ckpt:
        raise ValueError(f"{path}: not a flare_vlp global-model checkpoint (no 'params')")
    return {**ckpt, "params": to_numpy(ckpt["params"]), "state": ckpt.get("state") or {}}


def load_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], int | None]:
    """Params (numpy) and last completed round of a file written by :func:`save_checkpoint`."""
    ckpt = read_checkpoint(path)
    return ckpt["params"], ckpt.get("round")


class GlobalStatePersistor(ModelPersistor):
    """Loads a checkpoint to resume from (or nothing, for a fresh run) and saves into the server's app folder.

    Args:
        config: the experiment config's name, recorded in every checkpoint.
        model_file: file name inside the server's app folder.
        resume_from: a checkpoint of an earlier run to start from (weights + completed round + strategy state).
    """

    def __init__(self, config: str = "tiny", model_file: str = MODEL_FILE, resume_from: str | None = None):
        super().__init__()
        self._config = config
        self._model_file = model_file
        self._resume_from = resume_from

    def model_path(self, fl_ctx: FLContext) -> Path:
        app_dir = fl_ctx.get_engine().get_workspace().get_app_dir(fl_ctx.get_job_id())
        return Path(app_dir) / self._model_file

    def load_model(self, fl_ctx: FLContext) -> ModelLearnable:
        if not self._resume_from:
            self.log_info(fl_ctx, "fresh run: the strategy builds the initial global state")
            return make_model_learnable({}, {})
        ckpt = read_checkpoint(self._resume_from)
        self.log_info(fl_ctx, f"resuming from {self._resume_from} (last completed round {ckpt.get('round')})")
        return make_model_learnable(
            ckpt["params"], {TaskMeta.ROUND: ckpt.get("round"), TaskMeta.STRATEGY_STATE: ckpt["state"]}
        )

    def save_model(self, model: ModelLearnable, fl_ctx: FLContext) -> None:
        meta = model.get(ModelLearnableKey.META) or {}
        path = self.model_path(fl_ctx)
        save_checkpoint(
            path,
            model[ModelLearnableKey.WEIGHTS] or {},
            meta.get(TaskMeta.ROUND),
            self._config,
            meta.get(TaskMeta.STRATEGY_STATE),
        )
        self.log_info(fl_ctx, f"saved global state (round {meta.get(TaskMeta.ROUND)}) to {path}")
