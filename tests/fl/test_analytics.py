"""Streamed site metrics: the receiver writes metrics.jsonl lines and TensorBoard files; the simulator delivers."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from nvflare.apis.analytix import AnalyticsDataType
from nvflare.apis.event_type import EventType
from nvflare.apis.fl_constant import EventScope, FLContextKey, ReservedKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.utils.analytix_utils import create_analytic_dxo
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from flare_vlp.experiments.run_folder import RunFolder
from flare_vlp.fl.analytics import JsonlAppender, VLPAnalyticsReceiver, numeric_scalars, stream_scalars
from flare_vlp.fl.executor import ClientAlgoExecutor
from flare_vlp.methods.run_spec import RunSpec

FAST = {"train": {"bn_recalibration_batches": 1}}  # a tiny round in about a second


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _fire(receiver: VLPAnalyticsReceiver, site: str, dxo) -> None:
    """Deliver ``dxo`` as the server sees a site's event: a ``fed.`` event whose data names the sending peer."""
    data = dxo.to_shareable()
    data.set_peer_props({ReservedKey.IDENTITY_NAME: site})
    ctx = FLContext()
    ctx.set_prop(FLContextKey.EVENT_DATA, data, private=True, sticky=False)
    ctx.set_prop(FLContextKey.EVENT_SCOPE, EventScope.FEDERATION, private=True, sticky=False)
    receiver.handle_event("fed.analytix_log_stats", ctx)


def test_receiver_writes_jsonl_lines_and_tensorboard_per_site(tmp_path):
    run_dir = tmp_path / "run"
    receiver = VLPAnalyticsReceiver(run_dir=str(run_dir))
    receiver.handle_event(EventType.START_RUN, FLContext())
    metrics = {"train_loss": 1.5, "val_loss": float("nan"), "steps": 2}
    _fire(receiver, "site-1", create_analytic_dxo("round", metrics, AnalyticsDataType.METRICS, global_step=0, round=0))
    _fire(
        receiver, "site-1", create_analytic_dxo("round", {"train_loss": 1.25}, AnalyticsDataType.METRICS, global_step=1)
    )
    _fire(receiver, "site-2", create_analytic_dxo("train/loss", 2.0, AnalyticsDataType.SCALAR, global_step=7))
    receiver.handle_event(EventType.END_RUN, FLContext())

    stream = [e for e in _events(run_dir) if e["event"] == "stream"]
    assert [(e["site"], e["tag"], e["step"]) for e in stream] == [
        ("site-1", "round/train_loss", 0),
        ("site-1", "round/val_loss", 0),
        ("site-1", "round/steps", 0),
        ("site-1", "round/train_loss", 1),
        ("site-2", "train/loss", 7),
    ]
    assert stream[0]["value"] == 1.5 and stream[0]["round"] == 0
    assert stream[1]["value"] is None, "NaN is written as null (strict JSON)"
    tb = run_dir / "tensorboard"
    assert sorted(p.name for p in tb.iterdir()) == ["site-1", "site-2"]
    site1 = _scalars(tb / "site-1")
    assert site1["round/train_loss"] == [(0, 1.5), (1, 1.25)] and site1["round/steps"] == [(0, 2.0)]
    assert _scalars(tb / "site-2") == {"train/loss": [(7, 2.0)]}


def test_receiver_refuses_a_site_name_that_escapes_the_tensorboard_folder(tmp_path):
    receiver = VLPAnalyticsReceiver(run_dir=str(tmp_path))
    receiver.handle_event(EventType.START_RUN, FLContext())
    _fire(receiver, "../evil", create_analytic_dxo("x", 1.0, AnalyticsDataType.SCALAR, global_step=0))
    receiver.handle_event(EventType.END_RUN, FLContext())
    assert not (tmp_path / "evil").exists()
    assert not (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(ValueError, match="relative"):
        VLPAnalyticsReceiver(tb_folder="/abs")


def test_appends_from_two_writers_never_interleave(tmp_path):
    """The controller's RunFolder and the receiver append to one metrics.jsonl from different threads."""
    folder, appender = RunFolder(tmp_path), JsonlAppender(tmp_path / "metrics.jsonl")
    pad = "x" * 3000  # long lines make a torn or interleaved write likelier

    def controller():
        for i in range(300):
            folder.log("site", i=i, pad=pad)

    thread = threading.Thread(target=controller)
    thread.start()
    for i in range(300):
        appender.append({"event": "stream", "i": i, "pad": pad})
    thread.join()
    folder.close()
    appender.close()
    events = _events(tmp_path)
    assert len(events) == 600
    for kind in ("site", "stream"):
        assert [e["i"] for e in events if e["event"] == kind] == list(range(300))


def test_numeric_scalars_keeps_plain_numbers_only():
    values = {"a": 1, "b": np.float32(0.5), "c": True, "d": "text", "e": [1.0], "f": np.zeros(2)}
    assert numeric_scalars(values) == {"a": 1.0, "b": 0.5}


def test_streaming_without_a_flare_engine_sends_nothing():
    """An executor driven with a bare FLContext (unit tests, no FLARE runtime) trains without streaming."""
    spec = RunSpec("fedavg").to_dict()
    assert stream_scalars(ClientAlgoExecutor(spec), FLContext(), "round", {"train_loss": 1.0}, step=0) == 0
    executor = ClientAlgoExecutor(spec)
    executor._fl_ctx = FLContext()
    executor._stream("round", {"train_loss": 1.0}, step=0)


@pytest.mark.slow
def test_simulator_streams_both_sites_into_the_run_folder(fedavg_sim):
    """The session's FedAvg simulator job (tests/fl/conftest.py ``fedavg_sim``): both data sites' streamed metrics
    reach the run folder's metrics.jsonl and TensorBoard files."""
    run_dir = fedavg_sim["run_dir"]
    events = _events(run_dir)
    stream = [e for e in events if e["event"] == "stream"]
    for site in ("site-1", "site-2"):
        tags = {(e["tag"], e["step"]) for e in stream if e["site"] == site}
        assert {("train/loss", 0), ("train/loss", 1), ("round/train_loss", 0), ("round/val_loss", 0)} <= tags
        site_loss = next(e["train_loss"] for e in events if e["event"] == "site" and e["site"] == site)
        assert next(e["value"] for e in stream if e["site"] == site and e["tag"] == "round/train_loss") == site_loss
        assert "train/loss" in _scalars(run_dir / "tensorboard" / site)
