"""Controllers without a FLARE runtime (log calls captured), the tiny global model, shifted updates."""

from __future__ import annotations

import numpy as np
from nvflare.apis.fl_context import FLContext

from flare_vlp.config import load_config
from flare_vlp.experiments.builders import build_model
from flare_vlp.experiments.run_folder import RunFolder
from flare_vlp.fl.controllers import FedAvgVLP
from flare_vlp.fl.exchange import to_numpy


def _controller(tmp_path, cls=FedAvgVLP, **kwargs):
    ctrl = cls(config="tiny", run_dir=str(tmp_path), **kwargs)
    ctrl._cfg = load_config("tiny")
    ctrl._run = RunFolder(tmp_path)
    ctrl.fl_ctx = FLContext()
    ctrl.logged, ctrl.panics = [], []
    ctrl.warning = ctrl.logged.append
    ctrl.error = ctrl.logged.append
    ctrl.panic = ctrl.panics.append
    return ctrl


def _global() -> dict[str, np.ndarray]:
    return to_numpy(build_model(load_config("tiny").model, seed=0).state_dict())


def _shifted(params: dict, delta: float) -> dict:
    return {k: np.asarray(v + delta) if v.dtype.kind == "f" else v.copy() for k, v in params.items()}
