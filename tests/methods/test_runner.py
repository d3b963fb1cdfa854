"""The in-process runner drives the same strategy and client algorithms as a FLARE job: same global model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flare_vlp.fl.persistor import MODEL_FILE, load_checkpoint, read_checkpoint
from flare_vlp.methods.run_spec import DataSource, RunSpec
from flare_vlp.methods.runner import run_in_process
from flare_vlp.recipes import MethodRecipe

FAST = {"train": {"bn_recalibration_batches": 1}}
SETTINGS = {
    "rho": 0.5,
    "eta": 1.0,
    "stage1_steps": 1,
    "stage2_steps": 2,
    "dro_batch_size": 4,
}  # tiny: 6 and 18 val rows


@pytest.mark.slow
def test_runner_gives_the_simulator_global_model(tmp_path, tiny_data_dir):
    """FedDRA (two tasks a round, lambda), 2 sites, 2 rounds, tiny, one torch thread per site on both sides.

    Same seeds, same data order, same messages (the wire carries float32 exactly); each site runs in its own
    process in the simulator and one after the other here, each with one torch thread, so every kernel sees the
    same inputs in the same order. Compared within 1e-6 absolute rather than bit for bit: a simulator site process
    and this one may pick different (equally valid) CPU kernels for a few ops, which moves the last bits.
    """
    from nvflare.recipe import SimEnv

    spec = RunSpec("feddra", method_settings=SETTINGS, config="tiny", num_rounds=2, min_clients=2, local_steps=2,
                   data=DataSource(data_dir=str(tiny_data_dir)), config_overrides=FAST, num_threads=1)  # fmt: skip
    recipe = MethodRecipe(spec, run_dir=tmp_path / "sim")
    result = recipe.run(SimEnv(num_clients=2, workspace_root=str(tmp_path / "ws"))).get_result()
    flare, last_round = load_checkpoint(Path(result) / "server" / "simulate_job" / "app_server" / MODEL_FILE)
    assert last_round == 1

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = run_in_process(spec.replace(sites=("site-1", "site-2")), tmp_path / "inproc")
    finally:
        torch.set_num_threads(threads)
    local = run.global_weights()
    assert sorted(local) == sorted(flare)
    for key in local:
        np.testing.assert_allclose(local[key], flare[key], rtol=0, atol=1e-6, err_msg=key)
    sim_lambda = read_checkpoint(Path(result) / "server" / "simulate_job" / "app_server" / MODEL_FILE)["state"]
    assert run.strategy.state()["lambda"] == pytest.approx(sim_lambda["lambda"], abs=1e-9)
