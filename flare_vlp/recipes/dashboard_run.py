"""``flare-vlp deploy dashboard``: a whole dashboard-provisioned FLARE deployment on this machine, in one run folder.

Steps (each stopped by PID afterwards, also on errors and Ctrl-C): start the FLARE dashboard on 127.0.0.1
(:class:`~flare_vlp.fl.dashboard.DashboardServer`); provision through its REST API — the project with server
``localhost`` on a free port, the client sites and an admin user registered and approved, the project frozen, every
kit downloaded and unlocked, flare_vlp allowed in the server's and each site's kit
(:func:`~flare_vlp.fl.dashboard.provision_with_dashboard`); start the server and the clients from their kits
(:class:`~flare_vlp.fl.system.FlareSystem`: TLS with mutual authentication, as provisioned); then ``flare-vlp run
--env prod`` with the admin's kit (:func:`~flare_vlp.recipes.run.run_federated`): submit through the FLARE API,
follow round by round, download the job result, evaluate. Layout of ``OUT``::

    OUT/deploy/dashboard/   the dashboard's web root (db.sqlite, dashboard.log)
    OUT/deploy/kits/        <name>.zip as downloaded, <name>/ unlocked (each site's log.txt and job folders)
    OUT/deploy/deployment.json  dashboard URL, FL port, kits, what the dashboard listed
    OUT/run/                the run folder (metrics.jsonl, models/, summary.json; flare/result: the job result)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from flare_vlp.fl.dashboard import DashboardServer, Kits, provision_with_dashboard
from flare_vlp.fl.deploy import no_sigint
from flare_vlp.fl.poc import end_processes
from flare_vlp.fl.system import FlareSystem
from flare_vlp.methods.run_spec import RunSpec
from flare_vlp.recipes.run import run_federated

__all__ = ["DEFAULT_CREDENTIAL", "provision_and_start", "run_with_dashboard"]

DEFAULT_CREDENTIAL = "admin@flare-vlp.org:change-me-123:flarevlp"
"""The dashboard's project admin (``email:password:org``); pass your own for anything but a local trial."""


def provision_and_start(
    deploy_dir: str | Path,
    clients: list[str],
    *,
    credential: str = DEFAULT_CREDENTIAL,
    site_env: dict[str, dict] | None = None,
    echo: Callable[[str], None] = print,
) -> tuple[DashboardServer, Kits, FlareSystem]:
    """Start the dashboard, provision ``clients`` through it and start the system from the kits.

    The caller stops both (``system.stop()``, ``dashboard.stop()``); on an error here both are stopped already.
    """
    deploy_dir = Path(deploy_dir).absolute()
    dashboard = DashboardServer(deploy_dir / "dashboard", credential)
    system = None
    try:
        t0 = time.perf_counter()
        dashboard.start()
        echo(f"dashboard: up on {dashboard.url} (web root {dashboard.web_root})")
        kits = provision_with_dashboard(dashboard.url, credential, deploy_dir / "kits", clients)
        approved = {c["name"]: c["approval_state"] for c in kits.listing["clients"]}
        echo(f"dashboard: project '{kits.project}' frozen; sites approved {approved}; kits in {deploy_dir / 'kits'}")
        (deploy_dir / "deployment.json").write_text(
            json.dumps(
                {"dashboard": dashboard.url, "fl_port": kits.port, "server": str(kits.server), "admin": str(kits.admin),
                 "admin_user": kits.admin_user, "clients": {k: str(v) for k, v in kits.clients.items()},
                 "listing": kits.listing},
                indent=2,
            )
        )  # fmt: skip
        system = FlareSystem(
            deploy_dir / "kits", kits.server, kits.clients, kits.admin, kits.admin_user, site_env=site_env
        )
        system.start()
        echo(f"FLARE: server 127.0.0.1:{kits.port} and sites {clients} up ({time.perf_counter() - t0:.0f} s)")
        return dashboard, kits, system
    except BaseException:
        with no_sigint():
            if system is not None:
                system.stop()
            dashboard.stop()
            end_processes(deploy_dir, grace=0)
        raise


def run_with_dashboard(
    out_dir: str | Path,
    spec: RunSpec,
    *,
    credential: str = DEFAULT_CREDENTIAL,
    timeout: float = 0,
    echo: Callable[[str], None] = print,
) -> dict:
    """Provision through the dashboard, run ``spec`` on the system it provisioned, stop everything.

    Args:
        out_dir: a new folder (see the module docstring for its layout).
        spec: the run; its ``sites`` are the client sites provisioned (default: ``site-1..site-N``, one per SynthCXR
            site of its config). Checked before anything starts.
        timeout: seconds to wait for the job (0: no limit).

    Returns:
        The run's headline summary (as ``flare-vlp run``).

    Raises:
        ValueError: ``out_dir`` is not empty, or a bad run spec (before anything starts).
    """
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir}: exists and is not empty; choose a new folder for the deployment")
    if spec.sites is None:
        sites = int(spec.load_config().data.synth.get("sites", 2))
        spec = spec.replace(sites=tuple(f"site-{i + 1}" for i in range(sites)))
    spec.validate()  # a bad spec fails here, before anything starts
    clients = list(spec.sites)
    dashboard, kits, system = provision_and_start(out_dir / "deploy", clients, credential=credential, echo=echo)
    try:
        return run_federated(
            spec, out_dir / "run", env="prod", startup_kit=kits.admin, username=kits.admin_user, timeout=timeout,
            echo=echo,
        )  # fmt: skip
    finally:
        with no_sigint():
            left = system.stop()
            dashboard.stop()
            left += end_processes(out_dir / "deploy", grace=0)
        echo(f"FLARE: stopped{f' (ended leftover processes {left} by PID)' if left else ''}; dashboard stopped")
