"""Recipes and exported jobs: the job folder names flare_vlp classes, and both simulators run it end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flare_vlp.config import ConfigError, load_config
from flare_vlp.experiments.builders import build_model
from flare_vlp.fl.failure import failure_cause
from flare_vlp.fl.persistor import MODEL_FILE, load_checkpoint, read_checkpoint
from flare_vlp.fl.policy import allow_flare_vlp
from flare_vlp.methods.run_spec import DataSource, RunSpec
from flare_vlp.recipes import MethodRecipe
from flare_vlp.recipes.export import export_jobs

FAST = {"train": {"bn_recalibration_batches": 1}}  # a tiny round in about a second
PUBLIC = {"data": {"synth": {"public_samples": 16}}}
SITE_ARGS = {"local_steps": 2, "num_threads": 1, "config_overrides": FAST}


CONTROLLER = "flare_vlp.fl.controller.StrategyController"
EXECUTOR = "flare_vlp.fl.executor.ClientAlgoExecutor"


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_export_names_flare_vlp_classes_and_ships_no_code(tmp_path, tiny_data_dir):
    paths = export_jobs(
        tmp_path / "jobs", config="tiny", data_dir=tiny_data_dir, num_rounds=3, n_clients=2,
        method_configs={"fedprox": {"mu": 0.1}},
    )  # fmt: skip
    from flare_vlp.recipes.export import exportable_methods

    assert sorted(paths) == sorted(exportable_methods())  # every method with a job (single role or default roles)
    assert {"fedaid", "fedavg", "feddra", "fedprox", "fedopal", "ffa_lora", "fedavg_full", "creamfl"} <= set(paths)
    roles = paths.pop("creamfl")  # per-site roles: one app per site, the method's default roles in site order
    assert _read(roles / "meta.json")["deploy_map"] == {"app_server": ["server"], "app_site-1": ["site-1"],
                                                        "app_site-2": ["site-2"]}  # fmt: skip
    for site, role in (("site-1", "image_text"), ("site-2", "image")):
        executor = _read(roles / f"app_{site}" / "config" / "config_fed_client.json")["executors"][0]["executor"]
        assert executor["path"] == EXECUTOR and executor["args"]["role"] == role
        spec = executor["args"]["spec"]
        assert spec["config_overrides"] == {"data": {"synth": {"public_samples": 64}}}  # job_overrides
        assert spec["data"]["data_dir"] == f"{tiny_data_dir.resolve()}-creamfl"  # its own SynthCXR config
        assert spec["roles"] == {"site-1": "image_text", "site-2": "image"}
    for method, job in paths.items():
        assert _read(job / "meta.json")["min_clients"] == 2
        server = _read(job / "app" / "config" / "config_fed_server.json")
        client = _read(job / "app" / "config" / "config_fed_client.json")
        workflow = server["workflows"][0]
        assert workflow["path"] == CONTROLLER and workflow["args"]["spec"]["method"] == method
        assert workflow["args"]["spec"]["num_rounds"] == 3
        assert server["components"][0]["path"] == "flare_vlp.fl.persistor.GlobalStatePersistor"
        executor = client["executors"][0]["executor"]
        assert executor["path"] == EXECUTOR and executor["args"]["spec"] == workflow["args"]["spec"]
        assert executor["args"]["spec"]["data"]["data_dir"] == str(tiny_data_dir.resolve())
        assert RunSpec.from_dict(executor["args"]["spec"]).to_dict() == executor["args"]["spec"]  # the round trip
        assert not list(job.rglob("custom")), "the installed flare_vlp must be used, not a copy under custom/"
    args = {m: _read(p / "app" / "config" / "config_fed_server.json")["workflows"][0]["args"] for m, p in paths.items()}
    assert args["fedprox"]["spec"]["method_settings"]["mu"] == 0.1
    assert "stage1_steps" in args["feddra"]["spec"]["method_settings"]
    assert "stage1_steps" not in args["fedaid"]["spec"]["method_settings"]


def test_recipes_fail_at_construction():
    data = DataSource(data_dir="x")
    with pytest.raises(ValueError, match="no data source; give `data_dir`"):
        MethodRecipe(RunSpec("fedavg", config="tiny", min_clients=2))
    with pytest.raises(ValueError, match=r"`fl\.fedprox\.mu` must be > 0"):
        RunSpec("fedprox", config="tiny", data=data, method_settings={"mu": 0})
    with pytest.raises(ConfigError, match="no config file or preset"):
        MethodRecipe(RunSpec("fedavg", config="tiyn", data=data, min_clients=2))
    with pytest.raises(ValueError, match="did you mean 'feddra'"):
        RunSpec("fedrda", data=data)
    with pytest.raises(ConfigError, match=r"`fl\.feddra\.rhoo`"):
        RunSpec("feddra", data=data, method_settings={"rhoo": 1})
    with pytest.raises(ValueError, match="give `roles`"):
        MethodRecipe(RunSpec("creamfl", data=data, min_clients=2, config_overrides=PUBLIC))
    with pytest.raises(ValueError, match="no site role 'txt'"):
        RunSpec("creamfl", data=data, roles={"site-1": "txt"})
    with pytest.raises(ValueError, match="give `min_clients` or `sites`"):
        MethodRecipe(RunSpec("fedavg", data=data))


def test_allow_list_keeps_the_defaults_and_adds_flare_vlp(tmp_path):
    path = allow_flare_vlp(tmp_path / "local")
    allow = _read(path)["class_allow_list"]
    assert "flare_vlp." in allow and any(a.startswith("nvflare.") for a in allow)
    assert _read(allow_flare_vlp(tmp_path / "local"))["class_allow_list"].count("flare_vlp.") == 1


@pytest.mark.slow
def test_fedavg_recipe_runs_in_simenv(fedavg_sim):
    """FedAvg, 2 data sites, 2 rounds; a third client without data fails its tasks and is left out each round
    (the session's ``fedavg_sim`` job, tests/fl/conftest.py)."""
    result, run_dir = fedavg_sim["result"], fedavg_sim["run_dir"]
    saved = Path(result) / "server" / "simulate_job" / "app_server" / MODEL_FILE
    params, last_round = load_checkpoint(saved)
    assert last_round == 1
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    per_site = {(e["round"], e["site"]) for e in events if e["event"] == "site"}
    assert per_site == {(r, s) for r in (0, 1) for s in ("site-1", "site-2")}
    assert all(np.isfinite(e["train_loss"]) for e in events if e["event"] == "site")
    assert [e["round"] for e in events if e["event"] == "round"] == [0, 1]
    assert {(e["round"], e["site"]) for e in events if e["event"] == "no_result"} == {(0, "site-3"), (1, "site-3")}
    client_log = (Path(result) / "site-3" / "log.txt").read_text()
    assert "site 'site-3' (data site 'site-3') has no train rows" in client_log
    cause = failure_cause(result)  # the first error a flare_vlp component logged (FLARE's own noise skipped)
    assert cause.startswith("site 'site-3': cannot set up the fedavg 'default' role: site 'site-3' (data site")
    assert cause.endswith("(site-3/log.txt)")
    cfg = load_config("tiny", FAST)
    initial = build_model(cfg.model, seed=cfg.seed).state_dict()
    assert not np.allclose(params["image_head.weight"], initial["image_head.weight"].numpy())
    assert (run_dir / "models" / "global.safetensors").is_file()


@pytest.mark.slow
def test_exported_job_runs_in_nvflare_simulator(tmp_path, tiny_data_dir):
    """The exported FedAID job (weights averaged with DRO site weights, one task a round) under `nvflare simulator`,
    as a user runs a job folder: 2 rounds averaged, the DRO weights persisted with the global model."""
    jobs = export_jobs(tmp_path / "jobs", config="tiny", data_dir=tiny_data_dir, num_rounds=2, n_clients=2, **SITE_ARGS)
    workspace = tmp_path / "ws"
    allow_flare_vlp(workspace / "local")
    nvflare = Path(sys.executable).with_name("nvflare")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [str(nvflare), "simulator", str(jobs["fedaid"]), "-w", str(workspace), "-n", "2", "-t", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    ckpt = read_checkpoint(workspace / "server" / "simulate_job" / "app_server" / MODEL_FILE)
    assert ckpt["round"] == 1 and set(ckpt["state"]["lambda"]) == {"site-1", "site-2"}
    log = (workspace / "server" / "log.txt").read_text()
    assert "round 1 train: averaged ['site-1', 'site-2']" in log
    assert "DRO weights" in log and "train_deep" not in log
