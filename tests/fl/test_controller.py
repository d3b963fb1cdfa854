"""The controllers' round steps without a FLARE runtime: screening, exclusion of bad updates, weights, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from controller_helpers import _controller, _global, _shifted
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType

from flare_vlp.config import load_config
from flare_vlp.fl.controllers import FedProxVLP, RoundFailedError, screen_updates
from flare_vlp.fl.exchange import TaskMeta
from flare_vlp.fl.persistor import VLPModelPersistor, load_checkpoint, save_checkpoint


def _result(site: str, params: dict, n: int) -> FLModel:
    return FLModel(params=params, metrics={"train_loss": 1.0}, meta={"client_name": site, TaskMeta.N_SAMPLES: n})


def test_fedavg_weights_updates_by_n_k(tmp_path):
    ctrl = _controller(tmp_path, min_clients=2)
    base = _global()
    results = [_result("site-1", _shifted(base, 1.0), 30), _result("site-2", _shifted(base, -1.0), 10)]
    new = ctrl.aggregate(0, FLModel(params_type=ParamsType.FULL, params=base), results)
    key = "image_head.weight"
    np.testing.assert_allclose(new.params[key], base[key] + 0.5, rtol=1e-5, atol=1e-6)
    assert new.meta[TaskMeta.ROUND] == 0 and not ctrl.panics, ctrl.panics


def test_nan_update_is_excluded_with_a_logged_reason(tmp_path):
    ctrl = _controller(tmp_path, min_clients=1)
    base = _global()
    bad = _shifted(base, 0.0)
    bad["image_head.weight"][0, 0] = np.nan
    results = [_result("site-1", _shifted(base, 1.0), 30), _result("site-2", bad, 10)]
    new = ctrl.aggregate(3, FLModel(params=base), results)
    np.testing.assert_allclose(new.params["image_head.weight"], base["image_head.weight"] + 1.0, rtol=1e-5)
    assert any("site-2" in m and "NaN" in m for m in ctrl.logged), ctrl.logged
    ctrl._run.close()
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rejected = [e for e in events if e["event"] == "rejected"]
    assert (
        rejected[0]["site"] == "site-2" and rejected[0]["round"] == 3 and "image_head.weight" in rejected[0]["reason"]
    )


def test_too_few_valid_updates_fail_the_round(tmp_path):
    ctrl = _controller(tmp_path, min_clients=2)
    base = _global()
    missing = {k: v for k, v in base.items() if k != "log_scale"}
    results = [_result("site-1", base, 30), _result("site-2", missing, 10)]
    assert ctrl.aggregate(0, FLModel(params=base), results) is None
    assert ctrl.panics and "min_clients=2" in ctrl.panics[0] and "site-2" in ctrl.panics[0]


def test_screen_updates_reports_each_reason():
    ref = {"w": np.zeros((2, 2), np.float32)}
    valid, rejected = screen_updates({"a": {"w": np.ones((2, 2), np.float32)}, "b": {"w": np.ones(3)}}, ref, 1)
    assert list(valid) == ["a"] and "shape" in rejected["b"]
    with pytest.raises(RoundFailedError, match="need min_clients=2"):
        screen_updates({"a": {"w": np.ones((2, 2), np.float32)}}, ref, 2)


def test_fedprox_sends_mu_and_rejects_zero(tmp_path):
    ctrl = _controller(tmp_path, cls=FedProxVLP, mu=0.05)
    payload = ctrl.task_payload(1, FLModel(params=_global()))
    assert payload.meta[TaskMeta.PROX_MU] == 0.05 and payload.meta[TaskMeta.TRAINABLE_GROUPS] == ["all"]
    with pytest.raises(ValueError, match="mu"):
        FedProxVLP(mu=0.0)


def test_checkpoint_round_trip_and_resume(tmp_path):
    base = _global()
    path = tmp_path / "FL_global_model.pt"
    save_checkpoint(path, base, 4, "tiny")
    params, rnd = load_checkpoint(path)
    assert rnd == 4 and sorted(params) == sorted(base)
    learnable = VLPModelPersistor(resume_from=str(path)).load_model(FLContext())
    ctrl = _controller(tmp_path)
    assert ctrl.first_round(FLModel(params=learnable["weights"], meta=learnable["meta"])) == 5
    assert ctrl.first_round(FLModel(params=base, meta={})) == 0


def test_frozen_groups_are_neither_sent_nor_expected(tmp_path):
    ctrl = _controller(tmp_path)
    ctrl._cfg = load_config("tiny", {"model": {"frozen": ["text_encoder"]}})
    payload = ctrl.task_payload(0, FLModel(params=_global()))
    assert payload.params and not any(k.startswith("text_encoder.") for k in payload.params)
    assert set(ctrl.expected_keys(["all"])) == set(payload.params)
