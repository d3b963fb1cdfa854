"""A site that never answers: the round goes on without it once ``min_clients`` answered, and its ``timeout`` ends
it when too few did.

One real simulator job (tiny config, 3 clients, FedAvg, ``min_clients=2``, 2 rounds), run once per module:

- ``site-3`` never answers (from round 0): round 0 is averaged over site-1 and site-2 once they answered and the
  ``wait_after_min_s`` grace for the others ran out, ``site-3`` is logged as ``no_result``, and the global model of
  round 0 is persisted;
- ``site-2`` stops answering too from round 1: only site-1 is left, below ``min_clients``, so the task's timeout ends
  round 1, which fails loudly (``round_failed`` + panic) and leaves the persisted global model of round 0 as it was.

The silent sites run :class:`stalling_executor.StallingExecutor` (a real VLPExecutor whose training task blocks
until the job aborts it); the job must still end, with no process left behind.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from nvflare.job_config.api import FedJob
from stalling_executor import STALL_MESSAGE, StallingExecutor

from flare_vlp.config import load_config
from flare_vlp.experiments.builders import build_model
from flare_vlp.fl.controller import StrategyController
from flare_vlp.fl.executor import ClientAlgoExecutor
from flare_vlp.fl.failure import failure_cause
from flare_vlp.fl.persistor import MODEL_FILE, GlobalStatePersistor, load_checkpoint
from flare_vlp.fl.policy import allow_flare_vlp
from flare_vlp.methods.run_spec import DataSource, RunSpec

pytestmark = pytest.mark.slow

FAST = {"train": {"bn_recalibration_batches": 1}}
SITES = ["site-1", "site-2", "site-3"]
STALL_FROM = {"site-2": 1, "site-3": 0}  # first round each silent site does not answer
TIMEOUT_S = 30
"""Round-0's clock starts when the server schedules the task, before the sites have started, so it must cover
start-up plus a tiny round: measured 9 s from scheduling to both answers (3 tiny sites on 2 cores, during the full
suite), a margin over 3x. Round 1 (too few sites) waits the whole timeout."""
WAIT_AFTER_MIN_S = 3
"""Seconds round 0 still waits for site-3 once site-1 and site-2 answered (the controller's default, 3600, would
make the round last until the timeout)."""
HELPER_MODULE = StallingExecutor.__module__


def _job(data_dir: Path, run_dir: Path) -> FedJob:
    """FedAvg: site-1 on ClientAlgoExecutor, site-2/site-3 (site-1's data) on the stalling executor."""
    job = FedJob(name="timeout_vlp", min_clients=2)
    job.set_app_packages(["flare_vlp", HELPER_MODULE])  # installed / on PYTHONPATH: nothing copied to custom/
    job.to_server(GlobalStatePersistor("tiny"), id="persistor")
    data = DataSource(data_dir=str(data_dir), site_map={site: "site-1" for site in STALL_FROM})
    spec = RunSpec("fedavg", config="tiny", num_rounds=2, min_clients=2, task_timeout=TIMEOUT_S,
                   wait_after_min_s=WAIT_AFTER_MIN_S, config_overrides=FAST, data=data, local_steps=2,
                   num_threads=1).to_dict()  # fmt: skip
    job.to_server(StrategyController(spec, run_dir=str(run_dir)))
    job.to(ClientAlgoExecutor(spec), "site-1")
    for site, first in STALL_FROM.items():
        job.to(StallingExecutor(spec, stall_from_round=first), site)
    return job


def _run(job: FedJob, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int | None, float]:
    """Run ``job`` in the simulator; the stalling class is allowed and importable in the client processes."""
    allowed = allow_flare_vlp(workspace / "local")
    resources = json.loads(allowed.read_text())
    resources["class_allow_list"].append(f"{HELPER_MODULE}.")
    allowed.write_text(json.dumps(resources, indent=4) + "\n")
    helper_dir = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (helper_dir, os.environ.get("PYTHONPATH")) if p))
    t0 = time.perf_counter()
    status = job.simulator_run(str(workspace), clients=SITES, threads=len(SITES))
    return status, time.perf_counter() - t0


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that name ``text`` (simulator workers get their workspace as an argument)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append(f"{pid}: {cmd[:200]}")
    return found


def _assert_no_process_left(workspace: Path) -> None:
    deadline = time.monotonic() + 10
    while _processes_mentioning(str(workspace)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _processes_mentioning(str(workspace)), _processes_mentioning(str(workspace))


def _assert_valid_global(params: dict[str, np.ndarray]) -> None:
    cfg = load_config("tiny", FAST)
    initial = build_model(cfg.model, seed=cfg.seed).state_dict()
    assert set(initial) <= set(params)
    for key, value in initial.items():
        assert params[key].shape == tuple(value.shape), key
        if params[key].dtype.kind == "f":
            assert np.isfinite(params[key]).all(), key
    assert not np.allclose(params["image_head.weight"], initial["image_head.weight"].numpy())


@pytest.fixture(scope="module")
def timeout_run(tmp_path_factory, tiny_data_dir) -> dict:
    """Run the job once; the tests below read its workspace, metrics and exit status."""
    root = tmp_path_factory.mktemp("timeout")
    run_dir, workspace = root / "run", root / "ws"
    with pytest.MonkeyPatch.context() as monkeypatch:
        status, seconds = _run(_job(tiny_data_dir, run_dir), workspace, monkeypatch)
    return {
        "status": status,
        "seconds": seconds,
        "workspace": workspace,
        "events": _events(run_dir),
        "run_dir": run_dir,
        "server_log": (workspace / "server" / "log.txt").read_text(),
    }


def test_round_completes_without_the_site_that_never_answers(timeout_run):
    events, log = timeout_run["events"], timeout_run["server_log"]
    rounds = [e for e in events if e["event"] == "round"]
    assert [(e["round"], e["sites"]) for e in rounds] == [(0, ["site-1", "site-2"])]
    assert (0, "site-3") in {(e["round"], e["site"]) for e in events if e["event"] == "no_result"}
    assert {(e["round"], e["site"]) for e in events if e["event"] == "site" and e["round"] == 0} == {
        (0, "site-1"),
        (0, "site-2"),
    }
    assert "task train exit with status TaskCompletionStatus.TIMEOUT" in log
    assert re.search(r"round 0\b[^\n]*: no result from site-3", log)
    assert re.search(r"round 0\b[^\n]*: averaged \['site-1', 'site-2'\]", log)
    assert timeout_run["seconds"] >= TIMEOUT_S + WAIT_AFTER_MIN_S, "round 1 waits its timeout, round 0 its grace"
    round0 = next(e for e in events if e["event"] == "round")
    failed = next(e for e in events if e["event"] == "round_failed")
    assert failed["time"] - round0["time"] >= TIMEOUT_S, "round 1 ended by its timeout"
    site3_log = (timeout_run["workspace"] / "site-3" / "log.txt").read_text()
    assert f"{STALL_MESSAGE} 0" in site3_log and "aborted while stalling in round 0" in site3_log


def test_failed_round_keeps_the_persisted_global_model(timeout_run):
    events, log = timeout_run["events"], timeout_run["server_log"]
    assert {(e["round"], e["site"]) for e in events if e["event"] == "no_result"} == {
        (0, "site-3"),
        (1, "site-2"),
        (1, "site-3"),
    }
    failed = [e for e in events if e["event"] == "round_failed"]
    assert len(failed) == 1 and failed[0]["round"] == 1, failed
    assert "only 1 valid update(s) of 1 (need min_clients=2)" in failed[0]["reason"]
    assert "round 1 failed: only 1 valid update(s)" in log and "FATAL_SYSTEM_ERROR" in log
    # what `flare-vlp run` shows as its last line: the cause, from the run folder's `failed` record or the server log
    cause = "round 1 failed: only 1 valid update(s) of 1 (need min_clients=2)"
    assert failure_cause(timeout_run["run_dir"]).startswith(cause)
    assert failure_cause(timeout_run["workspace"]).startswith(cause)
    assert failure_cause(timeout_run["workspace"]).endswith("(server/log.txt)")
    saved = timeout_run["workspace"] / "server" / "simulate_job" / "app_server" / MODEL_FILE
    params, last_round = load_checkpoint(saved)
    assert last_round == 0, "the failed round must not overwrite the global model of round 0"
    _assert_valid_global(params)
    assert not (timeout_run["run_dir"] / "models" / "global.safetensors").exists(), "a failed run publishes no model"


def test_simulator_ends_and_leaves_no_process(timeout_run):
    _assert_no_process_left(timeout_run["workspace"])
    # 2: the simulator's exit status for a run that ended in a panic (FATAL_SYSTEM_ERROR); SimEnv raises on it
    assert timeout_run["status"] == 2, f"simulator exit status {timeout_run['status']}"
