"""FedDRA / FedAID server steps without a FLARE runtime: DRO weights as aggregation weights, rho = 0 = FedAvg bit for
bit, phases, anchors in the payload, lambda logged, persisted and restored."""

from __future__ import annotations

import json

import numpy as np
import pytest
from controller_helpers import _controller, _global, _shifted
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType

from flare_vlp.algorithms.aggregate import weighted_average
from flare_vlp.algorithms.dro import chi_square_divergence
from flare_vlp.fl.controllers import FedAvgVLP, FedDRAVLP
from flare_vlp.fl.exchange import TaskMeta, TaskName
from flare_vlp.fl.persistor import read_checkpoint, save_checkpoint


def _result(site, params, n, global_loss, local_loss=0.5, rnd=0):
    return FLModel(
        params=params,
        metrics={"train_loss": 1.0, "global_val_loss": global_loss, "val_loss": local_loss},
        current_round=rnd,
        meta={"client_name": site, TaskMeta.N_SAMPLES: n},
    )


def _round(base, losses, counts=(30, 10, 20), rnd=0):
    return [
        _result(f"site-{i + 1}", _shifted(base, float(i)), n, loss, rnd=rnd)
        for i, (n, loss) in enumerate(zip(counts, losses))
    ]


@pytest.mark.parametrize("center", ["uniform", "samples"])
def test_rho_zero_reproduces_fedavg_with_the_centre_as_weights_bit_for_bit(tmp_path, center):
    base = _global()
    counts = (30, 30, 30) if center == "uniform" else (30, 10, 20)
    results = _round(base, [2.0, 3.0, 4.0], counts)
    dra = _controller(tmp_path / "dra", FedDRAVLP, min_clients=2, rho=0.0, center=center, two_stage=False)
    avg = _controller(tmp_path / "avg", FedAvgVLP, min_clients=2)
    got = dra.aggregate(0, FLModel(params_type=ParamsType.FULL, params=base), results)
    want = avg.aggregate(0, FLModel(params_type=ParamsType.FULL, params=base), results)
    assert got is not None and want is not None, (dra.panics, avg.panics)
    for key in want.params:
        assert np.array_equal(got.params[key], want.params[key]), key
    logged = [json.loads(x) for x in (tmp_path / "dra" / "metrics.jsonl").read_text().splitlines()]
    dro = [e for e in logged if e["event"] == "dro"]
    assert len(dro) == 1 and dro[0]["divergence"] == pytest.approx(0.0, abs=1e-15)


def test_higher_loss_sites_gain_weight_inside_the_ball(tmp_path):
    ctrl = _controller(tmp_path, FedDRAVLP, min_clients=2, rho=0.05, eta=5.0, two_stage=False)
    base = _global()
    model = FLModel(params_type=ParamsType.FULL, params=base)
    for rnd in range(4):
        model = ctrl.aggregate(rnd, model, _round(base, [1.0, 2.0, 3.0], rnd=rnd))
        lam = np.array([ctrl._lambda[f"site-{i}"] for i in (1, 2, 3)])
        assert np.all(lam >= 0) and lam.sum() == pytest.approx(1.0)
        assert chi_square_divergence(lam) <= 0.05 * (1 + 1e-12)
    assert lam[0] < lam[1] < lam[2]
    events = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [e["binding"] for e in events if e["event"] == "dro"][-1] is True


def test_lambda_acts_as_aggregation_weights(tmp_path):
    ctrl = _controller(tmp_path, FedDRAVLP, min_clients=2, rho=1.0, eta=1.0, two_stage=False)
    base = _global()
    results = _round(base, [1.0, 2.0, 4.0])
    new = ctrl.aggregate(0, FLModel(params_type=ParamsType.FULL, params=base), results)
    lam = {s: ctrl._lambda[s] for s in ("site-1", "site-2", "site-3")}
    expected = weighted_average({r.meta["client_name"]: r.params for r in results}, lam, reference=base)
    key = "image_head.weight"
    np.testing.assert_allclose(new.params[key], expected[key], rtol=1e-6)
    w = np.exp(np.array([1.0, 2.0, 4.0]))
    np.testing.assert_allclose(list(lam.values()), w / w.sum(), rtol=1e-9)  # rho = 1 does not bind here


def test_excess_signal_subtracts_the_local_loss(tmp_path):
    ctrl = _controller(tmp_path, FedDRAVLP, min_clients=2, rho=1.0, eta=1.0, signal="excess", two_stage=False)
    base = _global()
    results = [_result("site-1", base, 10, 3.0, local_loss=2.5), _result("site-2", base, 10, 2.0, local_loss=1.0)]
    ctrl.aggregate(0, FLModel(params=base), results)
    assert ctrl._lambda["site-2"] == pytest.approx(np.exp(1.0) / (np.exp(0.5) + np.exp(1.0)))


def test_missing_loss_keeps_the_site_where_it_is_and_warns(tmp_path):
    ctrl = _controller(tmp_path, FedDRAVLP, min_clients=2, rho=1.0, eta=1.0, two_stage=False)
    base = _global()
    results = _round(base, [1.0, 3.0, float("nan")])
    assert ctrl.aggregate(0, FLModel(params=base), results) is not None
    assert any("site-3" in str(m) for m in ctrl.logged)
    w = np.exp([1.0, 3.0, 2.0])  # site-3's loss := the lambda-weighted mean of the others = 2
    assert ctrl._lambda["site-3"] == pytest.approx(w[2] / w.sum())


def test_two_stage_phases_payload_and_one_lambda_step_per_round(tmp_path):
    ctrl = _controller(tmp_path, FedDRAVLP, min_clients=2, rho=1.0, eta=1.0, stage1_steps=3, stage2_steps=7)
    phases = ctrl.round_phases(0)
    assert [p.task_name for p in phases] == [TaskName.TRAIN_DEEP, "train"]
    assert [p.groups for p in phases] == [("deep",), ("all",)] and [p.local_steps for p in phases] == [3, 7]
    payload = ctrl.task_payload(0, FLModel(params=_global()), phases[0])
    assert payload.meta[TaskMeta.TRAINABLE_GROUPS] == ["deep"] and payload.meta[TaskMeta.LOCAL_STEPS] == 3
    assert payload.meta[TaskMeta.ANCHOR_WEIGHT] == 1.0
    base = _global()
    deep_keys = ctrl.expected_keys(["deep"])
    deep_results = [
        _result(r.meta["client_name"], {k: r.params[k] for k in deep_keys}, 10, loss)
        for r, loss in zip(_round(base, [1, 2, 3]), [1.0, 2.0, 3.0])
    ]
    mid = ctrl.aggregate(0, FLModel(params=base), deep_results, phases[0])
    after_stage1 = dict(ctrl._lambda)
    ctrl.aggregate(0, mid, _round(base, [9.0, 0.0, 0.0]), phases[1])
    assert ctrl._lambda == after_stage1  # stage 2 reuses the round's lambda
    fedaid = _controller(tmp_path / "aid", FedDRAVLP, two_stage=False, anchor_weight=0.0)
    assert fedaid.method == "fedaid" and [p.task_name for p in fedaid.round_phases(0)] == ["train"]
    assert TaskMeta.ANCHOR_WEIGHT not in fedaid.task_payload(0, FLModel(params=_global())).meta


def test_lambda_is_persisted_with_the_model_and_restored(tmp_path):
    ctrl = _controller(tmp_path, FedDRAVLP, min_clients=2, rho=1.0, eta=1.0, two_stage=False)
    base = _global()
    new = ctrl.aggregate(0, FLModel(params=base), _round(base, [1.0, 2.0, 3.0]))
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, new.params, new.meta[TaskMeta.ROUND], "tiny", new.meta[TaskMeta.CONTROLLER_STATE])
    ckpt = read_checkpoint(path)
    resumed = _controller(tmp_path / "again", FedDRAVLP, min_clients=2, rho=1.0, eta=1.0, two_stage=False)
    meta = {TaskMeta.ROUND: ckpt["round"], TaskMeta.CONTROLLER_STATE: ckpt["state"]}
    resumed.info = lambda *_: None
    assert resumed.first_round(FLModel(params=ckpt["params"], meta=meta)) == 1
    assert resumed._lambda == pytest.approx(ctrl._lambda)


def test_bad_settings_fail_at_construction():
    with pytest.raises(ValueError, match="rho.*signal"):
        FedDRAVLP(rho=-1, signal="nope")
