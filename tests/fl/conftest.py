"""Settings and shared systems of the FLARE plugin tests (the tiny SynthCXR folder is the session fixture
``tiny_data_dir``).

``deployment``: ONE dashboard-provisioned FLARE system (dashboard, server and 2 sites from their kits, TLS with
mutual authentication) for the whole session: test_dashboard reads its dashboard and kits, test_drills runs its
failure drills on it (each leaves it whole for the next), test_poc runs ``flare-vlp run --env prod`` against it.
Starting it costs a dashboard, a provisioning and three FLARE processes: once, not once per module.

``fedavg_sim``: ONE FedAvg job in the simulator (``MethodRecipe`` + ``SimEnv``, 3 clients of which 2 have data,
2 rounds) for the recipe test (test_jobs) and the metric-streaming test (test_analytics).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FAST = {"train": {"bn_recalibration_batches": 1}}
"""Config overrides that keep a tiny round to about a second on 2 CPU cores."""


@pytest.fixture(scope="session")
def deployment(tmp_path_factory, tiny_data_dir):
    """The dashboard-provisioned system (a :class:`~flare_vlp.fl.system.FlareSystem` with ``dashboard``, ``kits``,
    ``data_dir`` and ``credential`` set on it). site-2 may run the drills' corrupting executor (this folder on its
    PYTHONPATH, its module allowed in its kit). Afterwards no process of it is left running, the dashboard included."""
    from corrupting_executor import CorruptingExecutor
    from deployment_helpers import DEPLOY_CREDENTIAL, DEPLOY_SITES, HELPERS, SERVER_ENV, all_loopback, listening

    from flare_vlp.fl.poc import poc_pids
    from flare_vlp.recipes.dashboard_run import provision_and_start

    root = tmp_path_factory.mktemp("deployment") / "deploy"
    site_env = {"site-2": {"PYTHONPATH": HELPERS}, "server": SERVER_ENV}
    dashboard, kits, flare = provision_and_start(
        root, DEPLOY_SITES, credential=DEPLOY_CREDENTIAL, site_env=site_env, echo=lambda line: None
    )
    try:
        resources = kits.clients["site-2"] / "local" / "resources.json"
        allow = json.loads(resources.read_text())
        allow["class_allow_list"].append(CorruptingExecutor.__module__ + ".")
        resources.write_text(json.dumps(allow))  # read by each job's site process, so it applies to jobs from now on
        flare.data_dir, flare.kits, flare.dashboard, flare.credential = (
            tiny_data_dir,
            kits,
            dashboard,
            DEPLOY_CREDENTIAL,
        )
        addresses = listening(poc_pids(root) + [dashboard.process.pid])
        assert all_loopback(addresses), addresses
        yield flare
    finally:
        flare.stop()
        dashboard.stop()
    left = poc_pids(root)
    assert not left, f"processes of the shared deployment survived: {left}"
    assert dashboard.process.poll() is not None


@pytest.fixture(scope="session")
def fedavg_sim(tmp_path_factory, tiny_data_dir) -> dict:
    """FedAvg, 2 data sites + ``site-3`` without data, 2 rounds, ``min_clients=2``: ``result`` (the simulator's
    workspace) and ``run_dir`` (metrics.jsonl, tensorboard/, models/)."""
    from nvflare.recipe import SimEnv

    from flare_vlp.methods.run_spec import DataSource, RunSpec
    from flare_vlp.recipes import MethodRecipe

    root = tmp_path_factory.mktemp("fedavg_sim")
    spec = RunSpec("fedavg", num_rounds=2, min_clients=2, data=DataSource(data_dir=str(tiny_data_dir)), local_steps=2,
                   num_threads=1, config_overrides=FAST)  # fmt: skip
    result = MethodRecipe(spec, run_dir=root / "run").run(SimEnv(num_clients=3, workspace_root=str(root / "ws")))
    return {"result": Path(result.get_result()), "run_dir": root / "run"}
