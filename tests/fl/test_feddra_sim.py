"""FedDRA end to end in the FLARE simulator, ONE run (2 sites, 2 rounds) read by every test here: two tasks per
round, DRO weights logged and persisted; the in-process runner gives the same global model; a job resumed from its
checkpoint restores the weights and goes on. (The exported FedAID job under `nvflare simulator`: test_jobs.py.)"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from flare_vlp.fl.persistor import MODEL_FILE, load_checkpoint, read_checkpoint
from flare_vlp.methods.run_spec import DataSource, RunSpec
from flare_vlp.methods.runner import run_in_process
from flare_vlp.recipes import MethodRecipe

pytestmark = pytest.mark.slow

FAST = {"train": {"bn_recalibration_batches": 1}}
SETTINGS = {"rho": 0.5, "eta": 1.0, "stage1_steps": 1, "stage2_steps": 2, "dro_batch_size": 4}  # tiny: 6, 18 val rows
SITES = ("site-1", "site-2")


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _spec(tiny_data_dir: Path, num_rounds: int) -> RunSpec:
    return RunSpec("feddra", method_settings=SETTINGS, config="tiny", num_rounds=num_rounds, min_clients=2,
                   local_steps=2, data=DataSource(data_dir=str(tiny_data_dir)), config_overrides=FAST,
                   num_threads=1)  # fmt: skip


def _simulate(spec: RunSpec, root: Path, name: str, resume_from: Path | None = None) -> Path:
    """Run ``spec`` in the simulator (run folder ``root/name``); returns the persisted global-state checkpoint."""
    from nvflare.recipe import SimEnv

    recipe = MethodRecipe(spec, run_dir=root / name, resume_from=resume_from)
    result = recipe.run(SimEnv(num_clients=2, workspace_root=str(root / f"ws-{name}"))).get_result()
    return Path(result) / "server" / "simulate_job" / "app_server" / MODEL_FILE


@pytest.fixture(scope="module")
def feddra_run(tmp_path_factory, tiny_data_dir) -> dict:
    """FedDRA (two tasks a round, lambda), 2 sites, 2 rounds, tiny, one torch thread per site."""
    root = tmp_path_factory.mktemp("feddra")
    spec = _spec(tiny_data_dir, num_rounds=2)
    return {"spec": spec, "checkpoint": _simulate(spec, root, "first"), "events": _events(root / "first"), "root": root}


def test_feddra_runs_two_phases_per_round_and_persists_its_weights(feddra_run):
    events = feddra_run["events"]
    tasks = [(e["round"], e["task"], e["site"], e["steps"]) for e in events if e["event"] == "site"]
    assert sorted(tasks) == sorted((r, t, s, n) for r in (0, 1) for t, n in (("train_deep", 1), ("train", 2))
                                   for s in SITES)  # fmt: skip
    assert [(e["round"], e["task"]) for e in events if e["event"] == "round"] == [
        (0, "train_deep"), (0, "train"), (1, "train_deep"), (1, "train"),
    ]  # fmt: skip
    dros = [e for e in events if e["event"] == "dro"]
    assert [d["round"] for d in dros] == [0, 1]
    for dro in dros:
        assert set(dro["lmbda"]) == set(SITES) and sum(dro["lmbda"].values()) == pytest.approx(1.0)
        assert dro["divergence"] <= SETTINGS["rho"] * (1 + 1e-9)
        assert dro["signal_batches"] == "fixed" and all(math.isfinite(v) for v in dro["losses"].values())  # scored
    ckpt = read_checkpoint(feddra_run["checkpoint"])
    assert ckpt["round"] == 1 and ckpt["state"]["lambda"] == pytest.approx(dros[-1]["lmbda"])


def test_runner_gives_the_simulator_global_model(feddra_run, tmp_path):
    """The in-process runner drives the same strategy and client algorithms as the FLARE job: same global model.

    Same seeds, same data order, same messages (the wire carries float32 exactly); each site runs in its own
    process in the simulator and one after the other here, each with one torch thread, so every kernel sees the
    same inputs in the same order. Compared within 1e-6 absolute rather than bit for bit: a simulator site process
    and this one may pick different (equally valid) CPU kernels for a few ops, which moves the last bits.
    """
    flare, last_round = load_checkpoint(feddra_run["checkpoint"])
    assert last_round == 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = run_in_process(feddra_run["spec"].replace(sites=SITES), tmp_path / "inproc")
    finally:
        torch.set_num_threads(threads)
    local = run.global_weights()
    assert sorted(local) == sorted(flare)
    for key in local:
        np.testing.assert_allclose(local[key], flare[key], rtol=0, atol=1e-6, err_msg=key)
    sim_lambda = read_checkpoint(feddra_run["checkpoint"])["state"]
    assert run.strategy.state()["lambda"] == pytest.approx(sim_lambda["lambda"], abs=1e-9)


def test_a_job_resumed_from_the_checkpoint_restores_the_weights_and_goes_on(feddra_run, tiny_data_dir):
    saved = read_checkpoint(feddra_run["checkpoint"])
    resumed_ckpt = _simulate(_spec(tiny_data_dir, num_rounds=3), feddra_run["root"], "resumed",
                             resume_from=feddra_run["checkpoint"])  # fmt: skip
    resumed = _events(feddra_run["root"] / "resumed")
    assert {e["round"] for e in resumed if e["event"] == "site"} == {2}
    (dro,) = [e for e in resumed if e["event"] == "dro"]
    assert dro["round"] == 2 and set(dro["lmbda"]) == set(saved["state"]["lambda"])
    assert read_checkpoint(resumed_ckpt)["round"] == 2
    server_log = (resumed_ckpt.parents[2] / "log.txt").read_text()
    assert f"restored DRO weights {saved['state']['lambda']}" in server_log
