"""FedDRA / FedAID server strategy without a FLARE runtime: DRO weights as aggregation weights, rho = 0 = FedAvg bit
for bit, phases, anchors in the task options, lambda logged, persisted and restored; which reply metric is the signal
(fixed batches or the full val pass), the reference's loss unit, the options each phase carries."""

from __future__ import annotations

import json

import numpy as np
import pytest
from controller_helpers import _combine, _global, _reply, _shifted, _strategy

from flare_vlp.algorithms.aggregate import weighted_average
from flare_vlp.algorithms.dro import chi_square_divergence
from flare_vlp.fl.persistor import read_checkpoint, save_checkpoint
from flare_vlp.methods.feddra.config import TRAIN_DEEP
from flare_vlp.methods.strategy import ServerContext


def _round(base, losses, counts=(30, 10, 20), local_loss=0.5):
    """Replies whose fixed-batch DRO losses are ``losses`` (the default ``signal_batches: fixed`` reads those)."""
    return {
        f"site-{i + 1}": _reply(_shifted(base, float(i)), n, dro_loss=loss, dro_local_loss=local_loss)
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
        "site-1": _reply(base, 10, dro_loss=3.0, dro_local_loss=2.5, global_val_loss=9.0, val_loss=0.0),
        "site-2": _reply(base, 10, dro_loss=2.0, dro_local_loss=1.0, global_val_loss=0.0, val_loss=0.0),
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
    assert [t.name for t in tasks] == [TRAIN_DEEP, "train"] and [t.index for t in tasks] == [0, 1]
    assert [t.groups for t in tasks] == [("deep",), ("all",)] and [t.local_steps for t in tasks] == [3, 7]
    # the scoring batches travel with the task whose replies move lambda (the round's first) only
    assert tasks[0].options == {"anchor_weight": 1.0, "dro_batches": 4, "dro_batch_size": 32}
    assert tasks[1].options == {"anchor_weight": 1.0}
    base = _global()
    deep_keys = ctrl.expected_keys(["deep"])
    deep = {
        s: _reply({k: r.weights[k] for k in deep_keys}, 10, dro_loss=loss)
        for (s, r), loss in zip(_round(base, [1, 2, 3]).items(), [1.0, 2.0, 3.0])
    }
    _combine(ctrl, tasks[0], deep)
    after_stage1 = dict(ctrl.state()["lambda"])
    _combine(ctrl, tasks[1], _round(base, [9.0, 0.0, 0.0]))
    assert ctrl.state()["lambda"] == after_stage1  # stage 2 reuses the round's lambda
    fedaid = _strategy(tmp_path / "aid", "fedaid", anchor_weight=0.0, signal_batches="full_pass")
    assert [t.name for t in fedaid.round_tasks(0)] == ["train"] and fedaid.round_tasks(0)[0].options == {}


def test_reference_options_travel_with_both_phases(tmp_path):
    ref = _strategy(tmp_path, "feddra", loss_scale="sum", stage2_start="local", dro_batches=2, dro_batch_size=8)
    deep, full = ref.round_tasks(3)
    common = {"anchor_weight": 1.0, "loss_scale": "sum", "stage2_start": "local"}
    assert deep.options == {**common, "dro_batches": 2, "dro_batch_size": 8} and full.options == common
    with pytest.raises(ValueError, match="fl.stage2_start"):  # FedAID has no stage 1 to start stage 2 from
        _strategy(tmp_path / "aid", "fedaid", stage2_start="local")


@pytest.mark.parametrize(
    ("batches", "read", "ignored"),
    [("fixed", "dro_loss", "global_val_loss"), ("full_pass", "global_val_loss", "dro_loss")],
)
def test_the_signal_is_the_metric_of_the_chosen_batches(tmp_path, batches, read, ignored):
    """Each form reads its own metric and only it: the other one, set to the opposite order, is ignored."""
    ctrl = _strategy(tmp_path, "fedaid", rho=1.0, eta=1.0, signal_batches=batches)
    base = _global()
    replies = {
        "site-1": _reply(base, 10, **{read: 1.0, ignored: 5.0}),
        "site-2": _reply(base, 10, **{read: 3.0, ignored: 0.0}),
    }
    _combine(ctrl, ctrl.round_tasks(0)[0], replies)
    assert ctrl.state()["lambda"]["site-2"] == pytest.approx(np.exp(3.0) / (np.exp(1.0) + np.exp(3.0)))


def test_normalized_signal_divides_by_the_chance_loss_of_its_batches(tmp_path):
    fixed = _strategy(tmp_path / "f", "fedaid", rho=1.0, eta=1.0, signal="normalized", dro_batch_size=8)
    full = _strategy(tmp_path / "p", "fedaid", rho=1.0, eta=1.0, signal="normalized", signal_batches="full_pass")
    base = _global()
    replies = {s: _reply(base, 10, dro_loss=v, global_val_loss=v) for s, v in (("site-1", 1.0), ("site-2", 3.0))}
    for ctrl, chance in ((fixed, np.log(8)), (full, np.log(fixed.ctx.cfg.train.batch_size))):
        _combine(ctrl, ctrl.round_tasks(0)[0], replies)
        w = np.exp(np.array([1.0, 3.0]) / chance)
        assert ctrl.state()["lambda"]["site-2"] == pytest.approx(w[1] / w.sum())


def test_sum_loss_scale_with_half_the_step_is_the_mean_scale_with_eta_one(tmp_path):
    """The reference's ITA is the SUM of the two cross-entropies: its eta 0.5 is our eta 1.0, over several rounds
    and with the ball binding."""
    runs = {
        "sum_half": _strategy(tmp_path / "a", "fedaid", rho=0.05, eta=0.5, loss_scale="sum"),
        "mean_one": _strategy(tmp_path / "b", "fedaid", rho=0.05, eta=1.0),
        "mean_half": _strategy(tmp_path / "c", "fedaid", rho=0.05, eta=0.5),
    }
    base = _global()
    for rnd, losses in enumerate(([2.0, 2.3, 2.1], [1.9, 2.4, 2.0], [1.8, 2.2, 2.2])):
        for ctrl in runs.values():
            _combine(ctrl, ctrl.round_tasks(rnd)[0], _round(base, losses))
    lam = {name: np.array(list(ctrl.state()["lambda"].values())) for name, ctrl in runs.items()}
    np.testing.assert_allclose(lam["sum_half"], lam["mean_one"], rtol=1e-9)
    assert np.abs(lam["sum_half"] - lam["mean_half"]).max() > 1e-3


def test_a_site_without_a_fixed_batch_loss_keeps_its_weight_and_is_named(tmp_path):
    """A val split smaller than one scoring batch: the site sends NaN; the server warns and leaves it in place."""
    ctrl = _strategy(tmp_path, "fedaid", rho=1.0, eta=1.0)
    base = _global()
    _combine(ctrl, ctrl.round_tasks(0)[0], _round(base, [1.0, 3.0, float("nan")]))
    (warning,) = [m for m in ctrl.logged.messages if "keep their weight" in m]
    assert "site-3" in warning
    assert "dro_loss" in warning and "dro_batch_size=32" in warning
    w = np.exp([1.0, 3.0, 2.0])
    assert ctrl.state()["lambda"]["site-3"] == pytest.approx(w[2] / w.sum())


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
    for key, value in (("dro_batch_size", 1), ("dro_batches", 0), ("signal_batches", "half"), ("loss_scale", "x")):
        with pytest.raises(ValueError, match=f"fl.{key}"):
            _strategy(tmp_path, "feddra", **{key: value})
