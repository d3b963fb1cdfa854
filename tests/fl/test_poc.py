"""Real FLARE deployments on loopback: a POC system (server + 2 client processes) provisioned by flare_vlp, and the
prod path (``ProdEnv`` with an admin startup kit) against the session's dashboard-provisioned system
(tests/fl/conftest.py ``deployment``), after ``flare-vlp jobs allow`` on kits provisioned without flare_vlp's builder.

Every test that starts processes owns a POC workspace whose finalizer ends, by PID, any process still running from it,
so a failing test leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

import pytest
import yaml
from deployment_helpers import listening

from flare_vlp.fl.poc import make_poc_env, poc_pids, prepare_poc_env
from flare_vlp.fl.provision import BUILDER_PATH, write_poc_project
from flare_vlp.methods.run_spec import DataSource, RunSpec
from flare_vlp.recipes.run import run_federated

FAST = {"train": {"bn_recalibration_batches": 1}}  # as tests/fl/conftest.py: a tiny round in about a second
CLIENTS = ["site-1", "site-2"]
QUICK = {**FAST, "eval": {"untrained_floor": False}}
"""FAST plus no untrained-model evaluation: the run folder's contents stay the same, the test stays short."""
SPEC = {"num_rounds": 1, "local_steps": 2, "config_overrides": QUICK}


def _provision(workspace: Path, project: Path) -> Path:
    """Provision a POC workspace the way ``PocEnv`` does (no ``~/.nvflare`` config is written); returns prod_00."""
    from nvflare.tool.poc.poc_commands import prepare_poc_provision

    prepare_poc_provision([], len(CLIENTS), str(workspace), None, project_conf_path=str(project))
    return next(workspace.glob("*/prod_00"))


def _is_live(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def poc_workspace(tmp_path):
    """A POC workspace path; afterwards no process started from it survives (SIGKILL by PID, then asserted)."""
    workspace = tmp_path / "poc"
    yield workspace
    left = poc_pids(workspace)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"POC processes survived the test and were killed: {left}"


def test_poc_project_binds_loopback_and_allows_flare_vlp(tmp_path):
    prod = _provision(tmp_path / "poc", write_poc_project(tmp_path / "project.yml", CLIENTS, port=18002))
    server = json.loads((prod / "localhost" / "startup" / "fed_server.json").read_text())["servers"][0]
    assert server["service"]["target"] == "localhost:18002" and server["admin_port"] == 18002
    for site in ["localhost", *CLIENTS]:
        resources = json.loads((prod / site / "local" / "resources.json.default").read_text())
        assert "flare_vlp." in resources["class_allow_list"], site
    assert json.loads((prod / "localhost" / "local" / "resources.json").read_text())["class_allow_list"][-1] == (
        "flare_vlp."
    )
    client = json.loads((prod / "site-1" / "startup" / "fed_client.json").read_text())
    assert client["servers"][0]["service"]["target"] == "localhost:18002"


def test_prepare_poc_env_writes_or_checks_the_project(tmp_path):
    env = make_poc_env(tmp_path / "ws", CLIENTS)
    prepare_poc_env(env)
    project = yaml.safe_load(Path(env.project_conf_path).read_text())
    assert Path(env.project_conf_path).parent == tmp_path  # beside the workspace, which a POC restart removes
    assert BUILDER_PATH in [b["path"] for b in project["builders"]]
    assert [p["name"] for p in project["participants"] if p["type"] == "client"] == CLIENTS
    project["builders"] = [b for b in project["builders"] if b["path"] != BUILDER_PATH]
    bare = tmp_path / "bare.yml"
    bare.write_text(yaml.safe_dump(project))
    with pytest.raises(ValueError, match=f"bare.yml: 'builders' lacks {BUILDER_PATH}"):
        prepare_poc_env(make_poc_env(tmp_path / "ws2", CLIENTS, project_file=bare))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_fedavg_runs_in_poc_on_loopback_and_stops_every_process(tmp_path, tiny_data_dir, poc_workspace):
    seen = {}

    def echo(line: str) -> None:
        print(line)
        if line.startswith("POC: submitted job"):  # the system is up: record its processes and listeners
            seen["pids"] = poc_pids(poc_workspace)
            seen["listening"] = listening(seen["pids"])

    out = tmp_path / "run"
    spec = RunSpec("fedavg", data=DataSource(data_dir=str(tiny_data_dir)), **SPEC)
    summary = run_federated(spec, out, env="poc", poc_workspace=poc_workspace, echo=echo, timeout=180)
    assert (out / "models" / "global.safetensors").is_file()
    assert json.loads((out / "summary.json").read_text())["summary"] == pytest.approx(summary)
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {e["site"] for e in events if e["event"] == "site"} == set(CLIENTS)
    assert len(seen["pids"]) >= 3, seen  # server + 2 clients (plus start-script loops and job processes)
    assert seen["listening"] and all(a.startswith("127.0.0.1:") for a in seen["listening"]), seen["listening"]
    assert not [p for p in seen["pids"] if _is_live(p)], "POC processes survived run_federated"
    assert poc_pids(poc_workspace) == []


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_ctrl_c_while_the_job_runs_stops_the_poc_system(tmp_path, tiny_data_dir, poc_workspace):
    """Ctrl-C (KeyboardInterrupt in the waiting main thread) right after submission: no process survives."""
    seen = {}

    def echo(line: str) -> None:
        print(line)
        if line.startswith("POC: submitted job"):
            seen["pids"] = poc_pids(poc_workspace)
            raise KeyboardInterrupt

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        spec = RunSpec("fedavg", data=DataSource(data_dir=str(tiny_data_dir)), **SPEC)
        run_federated(spec, out, env="poc", poc_workspace=poc_workspace, echo=echo, timeout=180)
    assert len(seen["pids"]) >= 3, seen
    assert not [p for p in seen["pids"] if _is_live(p)] and poc_pids(poc_workspace) == []
    assert not out.exists(), "an interrupted run leaves no run folder"


def test_jobs_allow_lets_a_kit_provisioned_without_the_builder_run_flare_vlp(tmp_path):
    """The first step of the prod path a user takes with a system provisioned WITHOUT flare_vlp's builder: each
    site's kit allowed with ``flare-vlp jobs allow`` (the prod run itself: the next test)."""
    from flare_vlp.cli import main

    project = yaml.safe_load(write_poc_project(tmp_path / "project.yml", CLIENTS).read_text())
    project["builders"] = [b for b in project["builders"] if b["path"] != BUILDER_PATH]
    (tmp_path / "project.yml").write_text(yaml.safe_dump(project))
    prod = _provision(tmp_path / "poc", tmp_path / "project.yml")
    for site in ["localhost", *CLIENTS]:
        local = prod / site / "local"
        assert "flare_vlp." not in json.loads((local / "resources.json.default").read_text())["class_allow_list"]
        assert main(["jobs", "allow", str(local)]) == 0
        allow = json.loads((local / "resources.json").read_text())["class_allow_list"]
        assert "flare_vlp." in allow and any(a.startswith("nvflare.") for a in allow), site


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_prod_env_runs_against_a_provisioned_system(tmp_path, tiny_data_dir, deployment):
    """``flare-vlp run --env prod`` as a user runs it: with the admin's startup kit of a provisioned, running system
    (the session's dashboard-provisioned ``deployment``, tests/fl/conftest.py)."""
    from flare_vlp.cli import main

    out = tmp_path / "run"
    argv = ["run", "--method", "fedprox", "--config", "tiny", "--out", str(out), "--env", "prod"]
    argv += ["--startup-kit", str(deployment.admin_kit), "--username", deployment.username]
    argv += ["--data-dir", str(tiny_data_dir), "--rounds", "1", "--local-steps", "2", "--timeout", "180"]
    # the CLI takes no config overrides: the sites run `tiny` as is (a few seconds more than FAST)
    assert main(argv) == 0
    assert (out / "models" / "global.safetensors").is_file() and (out / "summary.json").is_file()
    assert list((out / "flare" / "result").rglob("models/global.safetensors")), "the downloaded job result"
    sites = {json.loads(line).get("site") for line in (out / "metrics.jsonl").read_text().splitlines()}
    assert set(CLIENTS) <= sites
