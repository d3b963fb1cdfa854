"""FedDRA / FedAID server strategy without a FLARE runtime: DRO weights as aggregation weights, rho = 0 = FedAvg bit
for bit, phases, anchors in the task options, lambda logged, persisted and restored."""

from __future__ import annotations

import json

import numpy as np
import pytest
from controller_helpers import _combine, _global, _reply, _shifted, _strategy

from flare_vlp.algorithms.aggregate import weighted_average
from flare_vlp.algorithms.dro import chi_square_divergence
from flare_vlp.fl.persistor import read_checkpoint, save_checkpoint
from flare_vlp.methods.messages import TaskName
from flare_vlp.methods.strategy import ServerContext


def _round(base, losses, counts=(30, 10, 20), local_loss=0.5):
    return {
        f"site-{i + 1}": _reply(_shifted(base, float(i)), n, global_val_loss=loss, val_loss=local_loss)
        for i, (n, loss) in enumerate(zip(counts, losses))
    }


@pytest.mark.parametrize("center", ["uniform", "samples"])
def test_rho_zero_reproduces_fedavg_with_the_centre_as_weights_bit_for_bit(tmp_path, center):
    """Same path on both sides (weighted_average over the same sorted sites, equal weights): equal bit for bit."""
    base = _global()
    counts = (30, 30, 30) if center == "uniform" else (30, 10, 20)
    replies = _round(base, [2.0, 3.0, 4.0], counts)
    dra = _strategy(tmp_path / "dra", "fedaid", rho=0.0, center=center)
    avg = _strategy(tmp_path / "avg", "fedavg")
    got = _combine(dra, dra.round_tasks(0)[0], replies)
    want = _combine(avg, avg.round_tasks(0)[0], replies)
    for key in want:
        assert np.array_equal(got[key], want[key]), key
    dra.run.close()
    logged = [json.loads(x) for x in (tmp_path / "dra" / "metrics.jsonl").read_text().splitlines()]
    dro = [e for e in logged if e["event"] == "dro"]
    assert len(dro) == 1 and dro[0]["divergence"] == pytest.approx(0.0, abs=1e-15)


def test_higher_loss_sites_gain_weight_inside_the_ball(tmp_path):
    ctrl = _strategy(tmp_path, "fedaid", rho=0.05, eta=5.0)
    base = _global()
    for rnd in range(4):
        _combine(ctrl, ctrl.round_tasks(rnd)[0], _round(base, [1.0, 2.0, 3.0]))
        lam = np.array([ctrl.state()["lambda"][f"site-{i}"] for i in (1, 2, 3)])
        assert np.all(lam >= 0) and lam.sum() == pytest.approx(1.0)
        assert chi_square_divergence(lam) <= 0.05 * (1 + 1e-12)
    assert lam[0] < lam[1] < lam[2]
    ctrl.run.close()
    events = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [e["binding"] for e in events if e["event"] == "dro"][-1] is True


def test_lambda_acts_as_aggregation_weights(tmp_path):
    ctrl = _strategy(tmp_path, "fedaid", rho=1.0, eta=1.0)
    base = _global()
    replies = _round(base, [1.0, 2.0, 4.0])
    new = _combine(ctrl, ctrl.round_tasks(0)[0], replies)
    lam = {s: ctrl.state()["lambda"][s] for s in ("site-1", "site-2", "site-3")}
    expected = weighted_average({s: r.weights for s, r in replies.items()}, lam, reference=base)
    key = "image_head.weight"
    np.testing.assert_allclose(new[key], expected[key], rtol=1e-6)
    w = np.exp(np.array([1.0, 2.0, 4.0]))
    np.testing.assert_allclose(list(lam.values()), w / w.sum(), rtol=1e-9)  # rho = 1 does not bind here


def test_excess_signal_subtracts_the_local_loss(tmp_path):
    ctrl = _strategy(tmp_path, "fedaid", rho=1.0, eta=1.0, signal="excess")
    base = _global()
    replies = {
        "site-1": _reply(base, 10, global_val_loss=3.0, val_loss=2.5),
        "site-2": _reply(base, 10, global_val_loss=2.0, val_loss=1.0),
    }
    _combine(ctrl, ctrl.round_tasks(0)[0], replies)
    assert ctrl.state()["lambda"]["site-2"] == pytest.approx(np.exp(1.0) / (np.exp(0.5) + np.exp(1.0)))


def test_missing_loss_keeps_the_site_where_it_is_and_warns(tmp_path):
    ctrl = _strategy(tmp_path, "fedaid", rho=1.0, eta=1.0)
    base = _global()
    _combine(ctrl, ctrl.round_tasks(0)[0], _round(base, [1.0, 3.0, float("nan")]))
    assert any("site-3" in m for m in ctrl.logged.messages)
    w = np.exp([1.0, 3.0, 2.0])  # site-3's loss := the lambda-weighted mean of the others = 2
    assert ctrl.state()["lambda"]["site-3"] == pytest.approx(w[2] / w.sum())


def test_two_stage_tasks_options_and_one_lambda_step_per_round(tmp_path):
    ctrl = _strategy(tmp_path, "feddra", rho=1.0, eta=1.0, stage1_steps=3, stage2_steps=7)
    tasks = ctrl.round_tasks(0)
    assert [t.name for t in tasks] == [TaskName.TRAIN_DEEP, "train"] and [t.index for t in tasks] == [0, 1]
    assert [t.groups for t in tasks] == [("deep",), ("all",)] and [t.local_steps for t in tasks] == [3, 7]
    assert all(t.options == {"anchor_weight": 1.0} for t in tasks)
    base = _global()
    deep_keys = ctrl.expected_keys(["deep"])
    deep = {
        s: _reply({k: r.weights[k] for k in deep_keys}, 10, global_val_loss=loss)
        for (s, r), loss in zip(_round(base, [1, 2, 3]).items(), [1.0, 2.0, 3.0])
    }
    _combine(ctrl, tasks[0], deep)
    after_stage1 = dict(ctrl.state()["lambda"])
    _combine(ctrl, tasks[1], _round(base, [9.0, 0.0, 0.0]))
    assert ctrl.state()["lambda"] == after_stage1  # stage 2 reuses the round's lambda
    fedaid = _strategy(tmp_path / "aid", "fedaid", anchor_weight=0.0)
    assert [t.name for t in fedaid.round_tasks(0)] == ["train"] and fedaid.round_tasks(0)[0].options == {}


def test_lambda_is_persisted_with_the_model_and_restored(tmp_path):
    ctrl = _strategy(tmp_path, "fedaid", rho=1.0, eta=1.0)
    base = _global()
    new = _combine(ctrl, ctrl.round_tasks(0)[0], _round(base, [1.0, 2.0, 3.0]))
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, new, 0, "tiny", ctrl.state())
    ckpt = read_checkpoint(path)
    resumed = _strategy(tmp_path / "again", "fedaid", rho=1.0, eta=1.0)
    resumed.initialize(ServerContext(resumed.ctx.cfg, 2, 2, logger=resumed.ctx.logger), ckpt["params"], ckpt["state"])
    assert resumed.state()["lambda"] == pytest.approx(ctrl.state()["lambda"])
    assert all(np.array_equal(resumed.global_weights()[k], new[k]) for k in new)


def test_bad_settings_fail_at_construction(tmp_path):
    with pytest.raises(ValueError, match="fl.rho"):
        _strategy(tmp_path, "feddra", rho=-1)
    with pytest.raises(ValueError, match="fl.signal"):
        _strategy(tmp_path, "feddra", signal="nope")
