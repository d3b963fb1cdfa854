"""Real FLARE deployments on loopback: a POC system (server + 2 client processes) provisioned by flare_vlp, and the
prod path (``ProdEnv`` with an admin startup kit) against a POC system provisioned like a real one.

Every test that starts processes owns a POC workspace whose finalizer ends, by PID, any process still running from it,
so a failing test leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flare_vlp.fl.poc import make_poc_env, poc_admin_kit, poc_pids, prepare_poc_env, stop_poc
from flare_vlp.fl.provision import BUILDER_PATH, write_poc_project
from flare_vlp.recipes.run import DataSource, RunSpec, run_federated

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


def _listening(pids: list[int]) -> list[str]:
    """``ip:port`` of every TCP socket in LISTEN state held by ``pids`` (from /proc/net/tcp, tcp6)."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                host, port = fields[1].split(":")
                if len(host) == 8:
                    ip = ".".join(str(int(host[i : i + 2], 16)) for i in (6, 4, 2, 0))
                else:
                    ip = "::1" if host == "00000000000000000000000001000000" else host
                found.append(f"{ip}:{int(port, 16)}")
    return found


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
            seen["listening"] = _listening(seen["pids"])

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


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_prod_env_runs_against_a_provisioned_system(tmp_path, tiny_data_dir, poc_workspace):
    """The prod path as a user takes it: a system provisioned WITHOUT flare_vlp's builder, each site's kit allowed with
    ``flare-vlp jobs allow``, the system started by ``nvflare poc start``, then ``flare-vlp run --env prod``."""
    from flare_vlp.cli import main

    project = yaml.safe_load(write_poc_project(tmp_path / "project.yml", CLIENTS).read_text())
    project["builders"] = [b for b in project["builders"] if b["path"] != BUILDER_PATH]
    (tmp_path / "project.yml").write_text(yaml.safe_dump(project))
    prod = _provision(poc_workspace, tmp_path / "project.yml")
    for site in ["localhost", *CLIENTS]:
        assert main(["jobs", "allow", str(prod / site / "local")]) == 0
    nvflare = Path(sys.executable).with_name("nvflare")
    env = {**os.environ, "NVFLARE_POC_WORKSPACE": str(poc_workspace)}
    try:
        started = subprocess.run([str(nvflare), "poc", "start"], env=env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, (started.stdout + started.stderr)[-3000:]
        out = tmp_path / "run"
        argv = ["run", "--method", "fedprox", "--config", "tiny", "--out", str(out), "--env", "prod"]
        argv += ["--startup-kit", str(poc_admin_kit(poc_workspace)), "--username", "admin@nvidia.com"]
        argv += ["--data-dir", str(tiny_data_dir), "--rounds", "1", "--local-steps", "2", "--timeout", "180"]
        # the CLI takes no config overrides: the sites run `tiny` as is (a few seconds more than FAST)
        assert main(argv) == 0
    finally:
        stop_poc(make_poc_env(poc_workspace, CLIENTS))
    assert (out / "models" / "global.safetensors").is_file() and (out / "summary.json").is_file()
    assert list((out / "flare" / "result").rglob("models/global.safetensors")), "the downloaded job result"
    sites = {json.loads(line).get("site") for line in (out / "metrics.jsonl").read_text().splitlines()}
    assert set(CLIENTS) <= sites
