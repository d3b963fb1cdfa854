"""Settings and shared systems of the FLARE plugin tests (the tiny SynthCXR folder is the session fixture
``tiny_data_dir``).

``deployment``: ONE dashboard-provisioned FLARE system (dashboard, server and 2 sites from their kits, TLS with
mutual authentication) for the whole session: test_dashboard reads its dashboard and kits, test_drills runs its
failure drills on it (each leaves it whole for the next), test_poc runs ``flare-vlp run --env prod`` against it.
Starting it costs a dashboard, a provisioning and three FLARE processes: once, not once per module.
"""

from __future__ import annotations

import json

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
