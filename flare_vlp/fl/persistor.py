"""The server's global-model persistor: initial weights from the config's seed, atomic saves, resumable runs.

Every client builds its model with ``build_model(cfg.model, seed=cfg.seed)`` too, so the initial global model equals
every site's starting point. Each save writes ``{"params", "round", "config", "state"}`` with ``torch.save`` to a
temp file and renames it into place, so a run killed mid-save keeps the previous round's model. Resuming: pass
``resume_from=<a saved file>``; the controller continues after the saved ``round`` and restores its ``state``
(plain Python values, e.g. FedDRA's site weights lambda).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.model import ModelLearnable, ModelLearnableKey, make_model_learnable
from nvflare.app_common.abstract.model_persistor import ModelPersistor

from flare_vlp.config import load_config
from flare_vlp.experiments.builders import build_model
from flare_vlp.fl.exchange import TaskMeta, to_numpy, to_torch

__all__ = ["VLPModelPersistor", "save_checkpoint", "load_checkpoint", "read_checkpoint", "MODEL_FILE"]

MODEL_FILE = "FL_global_model.pt"


def save_checkpoint(
    path: str | Path, params: dict[str, np.ndarray], round_: int | None, config: str, state: dict | None = None
) -> None:
    """Atomically ``torch.save`` the global params (as tensors), the last completed round, the config name and the
    controller's state (plain Python values)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save({"params": to_torch(params), "round": round_, "config": config, "state": state or {}}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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


class VLPModelPersistor(ModelPersistor):
    """Loads the initial (or resumed) global model and saves it into the server's app folder.

    Args:
        config: preset name or YAML path of the experiment config (the model section and seed are used).
        config_overrides: nested dict merged over the config.
        model_file: file name inside the server's app folder.
        resume_from: a checkpoint of an earlier run to start from (weights + completed round).
    """

    def __init__(
        self,
        config: str = "tiny",
        config_overrides: dict | None = None,
        model_file: str = MODEL_FILE,
        resume_from: str | None = None,
    ):
        super().__init__()
        self._config = config
        self._config_overrides = config_overrides
        self._model_file = model_file
        self._resume_from = resume_from

    def model_path(self, fl_ctx: FLContext) -> Path:
        app_dir = fl_ctx.get_engine().get_workspace().get_app_dir(fl_ctx.get_job_id())
        return Path(app_dir) / self._model_file

    def load_model(self, fl_ctx: FLContext) -> ModelLearnable:
        if self._resume_from:
            ckpt = read_checkpoint(self._resume_from)
            self.log_info(fl_ctx, f"resuming from {self._resume_from} (last completed round {ckpt.get('round')})")
            meta = {TaskMeta.ROUND: ckpt.get("round"), TaskMeta.CONTROLLER_STATE: ckpt["state"]}
            return make_model_learnable(ckpt["params"], meta)
        cfg = load_config(self._config, self._config_overrides)
        model = build_model(cfg.model, seed=cfg.seed)
        self.log_info(fl_ctx, f"initial global model from config {self._config!r}, seed {cfg.seed}")
        return make_model_learnable(to_numpy(model.state_dict()), {})

    def save_model(self, model: ModelLearnable, fl_ctx: FLContext) -> None:
        meta = model.get(ModelLearnableKey.META) or {}
        path = self.model_path(fl_ctx)
        save_checkpoint(
            path,
            model[ModelLearnableKey.WEIGHTS],
            meta.get(TaskMeta.ROUND),
            self._config,
            meta.get(TaskMeta.CONTROLLER_STATE),
        )
        self.log_info(fl_ctx, f"saved global model (round {meta.get(TaskMeta.ROUND)}) to {path}")
