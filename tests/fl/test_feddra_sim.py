"""FedDRA end to end in the FLARE simulator: two tasks per round, DRO weights logged and persisted, resume restores
them; the exported FedAID job runs under `nvflare simulator`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flare_vlp.fl.persistor import MODEL_FILE, read_checkpoint
from flare_vlp.fl.policy import allow_flare_vlp
from flare_vlp.methods.run_spec import DataSource, RunSpec
from flare_vlp.recipes import MethodRecipe
from flare_vlp.recipes.export import export_jobs

FAST = {"train": {"bn_recalibration_batches": 1}}
SITE_ARGS = {"num_threads": 1, "config_overrides": FAST}


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _run(tmp_path, tiny_data_dir, name, num_rounds, resume_from=None):
    from nvflare.recipe import SimEnv

    settings = {"rho": 0.05, "eta": 2.0, "stage1_steps": 1, "stage2_steps": 2, "dro_batch_size": 4}
    spec = RunSpec("feddra", method_settings=settings, num_rounds=num_rounds, min_clients=2,
                   data=DataSource(data_dir=str(tiny_data_dir)), **SITE_ARGS)  # fmt: skip
    recipe = MethodRecipe(spec, run_dir=tmp_path / name, resume_from=resume_from)
    result = recipe.run(SimEnv(num_clients=2, workspace_root=str(tmp_path / f"ws-{name}"))).get_result()
    return Path(result) / "server" / "simulate_job" / "app_server" / MODEL_FILE


@pytest.mark.slow
def test_feddra_runs_two_phases_per_round_and_resumes_its_weights(tmp_path, tiny_data_dir):
    saved = _run(tmp_path, tiny_data_dir, "first", num_rounds=1)
    events = _events(tmp_path / "first")
    tasks = [(e["task"], e["site"], e["steps"]) for e in events if e["event"] == "site"]
    assert sorted(tasks) == sorted(
        [("train_deep", s, 1) for s in ("site-1", "site-2")] + [("train", s, 2) for s in ("site-1", "site-2")]
    )
    assert [e["task"] for e in events if e["event"] == "round"] == ["train_deep", "train"]
    (dro,) = [e for e in events if e["event"] == "dro"]
    assert sum(dro["lmbda"].values()) == pytest.approx(1.0) and dro["divergence"] <= 0.05 * (1 + 1e-9)
    assert dro["signal_batches"] == "fixed" and all(math.isfinite(v) for v in dro["losses"].values())  # scored
    ckpt = read_checkpoint(saved)
    assert ckpt["round"] == 0 and ckpt["state"]["lambda"] == pytest.approx(dro["lmbda"])
    _run(tmp_path, tiny_data_dir, "resumed", num_rounds=2, resume_from=saved)
    resumed = _events(tmp_path / "resumed")
    assert {e["round"] for e in resumed if e["event"] == "site"} == {1}
    (dro2,) = [e for e in resumed if e["event"] == "dro"]
    assert dro2["round"] == 1 and set(dro2["lmbda"]) == set(dro["lmbda"])


@pytest.mark.slow
def test_exported_fedaid_job_runs_in_nvflare_simulator(tmp_path, tiny_data_dir):
    jobs = export_jobs(
        tmp_path / "jobs", config="tiny", data_dir=tiny_data_dir, num_rounds=1, n_clients=2, local_steps=2, **SITE_ARGS
    )
    workspace = tmp_path / "ws"
    allow_flare_vlp(workspace / "local")
    nvflare = Path(sys.executable).with_name("nvflare")
    cmd = [str(nvflare), "simulator", str(jobs["fedaid"]), "-w", str(workspace), "-n", "2", "-t", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    ckpt = read_checkpoint(workspace / "server" / "simulate_job" / "app_server" / MODEL_FILE)
    assert ckpt["round"] == 0 and set(ckpt["state"]["lambda"]) == {"site-1", "site-2"}
    log = (workspace / "server" / "log.txt").read_text()
    assert "DRO weights" in log and "train_deep" not in log
