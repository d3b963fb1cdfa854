"""The weights strategies' round steps without a FLARE runtime: screening, exclusion of bad updates, weights,
resume through the persistor and the controller."""

from __future__ import annotations

import json

import numpy as np
import pytest
from controller_helpers import _combine, _global, _reply, _shifted, _strategy
from nvflare.apis.fl_context import FLContext

from flare_vlp.config import load_config
from flare_vlp.fl.controller import StrategyController
from flare_vlp.fl.failure import failure_cause
from flare_vlp.fl.persistor import GlobalStatePersistor, load_checkpoint, save_checkpoint
from flare_vlp.methods.messages import Task, TaskMeta
from flare_vlp.methods.registry import get_method, method_config
from flare_vlp.methods.run_spec import RunSpec
from flare_vlp.methods.strategy import RoundFailedError, ServerContext, settle_task


def _task(strategy, rnd=0):
    return strategy.round_tasks(rnd)[0]


def test_fedavg_weights_updates_by_n_k(tmp_path):
    ctrl = _strategy(tmp_path, min_clients=2)
    base = _global()
    replies = {"site-1": _reply(_shifted(base, 1.0), 30), "site-2": _reply(_shifted(base, -1.0), 10)}
    new = _combine(ctrl, _task(ctrl), replies)
    key = "image_head.weight"
    np.testing.assert_allclose(new[key], base[key] + 0.5, rtol=1e-5, atol=1e-6)
    assert ctrl.state() == {}


def test_uniform_weighting_ignores_n_k(tmp_path):
    ctrl = _strategy(tmp_path, weighting="uniform")
    base = _global()
    replies = {"site-1": _reply(_shifted(base, 1.0), 30), "site-2": _reply(_shifted(base, -1.0), 10)}
    np.testing.assert_allclose(
        _combine(ctrl, _task(ctrl), replies)["image_head.weight"], base["image_head.weight"], atol=1e-6
    )


def test_nan_update_is_excluded_with_a_logged_reason(tmp_path):
    ctrl = _strategy(tmp_path, min_clients=1)
    base = _global()
    bad = _shifted(base, 0.0)
    bad["image_head.weight"][0, 0] = np.nan
    new = _combine(ctrl, _task(ctrl, 3), {"site-1": _reply(_shifted(base, 1.0), 30), "site-2": _reply(bad, 10)})
    np.testing.assert_allclose(new["image_head.weight"], base["image_head.weight"] + 1.0, rtol=1e-5)
    assert any("site-2" in m and "NaN" in m for m in ctrl.logged.messages), ctrl.logged.messages
    ctrl.run.close()
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rejected = [e for e in events if e["event"] == "rejected"]
    assert (
        rejected[0]["site"] == "site-2" and rejected[0]["round"] == 3 and "image_head.weight" in rejected[0]["reason"]
    )


def test_too_few_valid_updates_fail_the_round(tmp_path):
    ctrl = _strategy(tmp_path, min_clients=2)
    base = _global()
    missing = {k: v for k, v in base.items() if k != "log_scale"}
    with pytest.raises(RoundFailedError) as failed:
        _combine(ctrl, _task(ctrl), {"site-1": _reply(base, 30), "site-2": _reply(missing, 10)})
    assert "min_clients=2" in str(failed.value) and "site-2" in str(failed.value)
    assert "only 1 valid update(s) of 2" in str(failed.value)


def test_the_host_cycle_records_every_site_and_fails_with_the_whole_reason(tmp_path):
    """settle_task, the one cycle of the controller and the in-process runner: a silent site is logged
    (no_result), each reply gets a site record in site order, a bad one is refused with its reason, and a failed
    task names every refusal and every silent site (the reason failure_cause gives `flare-vlp run`)."""
    ctrl = _strategy(tmp_path, min_clients=2)
    base, bad = _global(), _shifted(_global(), 0.0)
    bad["image_head.weight"][0, 0] = np.nan
    replies = {"site-2": _reply(bad, 10), "site-1": _reply(base, 30)}
    with pytest.raises(RoundFailedError) as failed:
        settle_task(ctrl, _task(ctrl, 1), replies, missing=["site-3"])
    reason = str(failed.value)
    assert reason.startswith("round 1 failed: only 1 valid update(s) of 2 (need min_clients=2); valid: ['site-1']; "
                             "rejected: {'site-2': ")  # fmt: skip
    assert reason.endswith("; no train result from ['site-3'] (a dead or stalled site, a task error or a timeout)")
    ctrl.run.close()
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(e["event"], e.get("site")) for e in events] == [
        ("no_result", "site-3"), ("site", "site-1"), ("site", "site-2"), ("rejected", "site-2"),
        ("round_failed", None), ("failed", None),
    ]  # fmt: skip
    assert events[-1]["reason"] == reason and events[-1]["no_result"] == ["site-3"]
    assert failure_cause(tmp_path) == reason


def test_fedprox_sends_mu_and_rejects_zero(tmp_path):
    ctrl = _strategy(tmp_path, "fedprox", mu=0.05)
    task = _task(ctrl, 1)
    assert task.options == {"prox_mu": 0.05} and task.groups == ("all",) and task.round == 1
    with pytest.raises(ValueError, match="fl.mu"):
        _strategy(tmp_path / "zero", "fedprox", mu=0.0)


def test_checkpoint_round_trip_and_resume(tmp_path):
    """A persisted round resumes after it; a fresh persistor makes the strategy build the initial model."""
    base = _global()
    path = tmp_path / "FL_global_model.pt"
    save_checkpoint(path, base, 4, "tiny")
    params, rnd = load_checkpoint(path)
    assert rnd == 4 and sorted(params) == sorted(base)

    def controller(resume_from):
        ctrl = StrategyController(RunSpec("fedavg", config="tiny", min_clients=2).to_dict())
        ctrl.persistor, ctrl.fl_ctx = GlobalStatePersistor(resume_from=resume_from), FLContext()
        ctrl.strategy = get_method("fedavg").strategy_cls()(method_config("fedavg", ctrl.run_spec.method_settings))
        ctrl.info = lambda *_: None
        return ctrl

    ctx = ServerContext(load_config("tiny"), 8, 2)
    resumed = controller(str(path))
    assert resumed._initialize(ctx) == 5
    assert all(np.array_equal(resumed.strategy.global_weights()[k], base[k]) for k in base)
    fresh = controller(None)
    assert fresh._initialize(ctx) == 0
    assert all(np.array_equal(fresh.strategy.global_weights()[k], base[k]) for k in base)  # same seed, same init


def test_frozen_groups_are_neither_sent_nor_expected(tmp_path):
    ctrl = _strategy(tmp_path, overrides={"model": {"frozen": ["text_encoder"]}})
    payload = ctrl.task_message(_task(ctrl), "site-1")
    assert payload.weights and not any(k.startswith("text_encoder.") for k in payload.weights)
    assert set(ctrl.expected_keys(["all"])) == set(payload.weights)


def test_one_message_object_per_task_so_the_controller_broadcasts(tmp_path):
    ctrl = _strategy(tmp_path)
    task = _task(ctrl)
    assert ctrl.task_message(task, "site-1") is ctrl.task_message(task, "site-2")
    assert TaskMeta.N_SAMPLES not in ctrl.task_message(task, "site-1").meta
    assert isinstance(Task().options, dict)
