"""A provisioned FLARE system on this machine, started from its startup kits and stopped by PID.

Each participant runs from its own kit folder as a site would: ``startup/sub_start.sh --once`` (the provisioned
start script without its restart loop, so a process that dies stays dead and a drill sees it), with TLS and mutual
authentication as provisioned (``connection_security: mtls`` in the kits of a dashboard project). The processes get
this interpreter's folder first on ``PATH`` (the start scripts call ``python3``), ``HF_HUB_OFFLINE=1`` and any extra
environment (e.g. ``CUDA_VISIBLE_DEVICES`` for a site's own GPU). :meth:`FlareSystem.stop` asks the server to shut
everything down through the admin kit, then ends by PID every process still running from the system's folder
(sites, their job processes), as :func:`flare_vlp.fl.poc.end_processes` does for POC.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from nvflare.fuel.flare_api.flare_api import Session, new_secure_session

from flare_vlp.fl.poc import cmdline, end_processes, poc_pids

__all__ = ["AdminLoginError", "FlareSystem", "admin_session", "keep_server_storage_in_kit", "start_site"]

CONNECT_TIMEOUT = 120.0
"""Seconds the server and the clients may take to come up and register (2 busy cores can take a while)."""


def keep_server_storage_in_kit(server_kit: str | Path) -> Path:
    """Point the server's job store and snapshot storage (``local/resources.json``) into ``<kit>/storage``.

    FLARE's defaults, ``/tmp/nvflare/jobs-storage`` and ``/tmp/nvflare/snapshot-storage``, are shared by every
    FLARE server of the machine (another project's, POC's); a folder of the kit's own keeps jobs apart and goes away
    with the kit. Returns the ``resources.json`` written.
    """
    local = Path(server_kit) / "local"
    path = local / "resources.json"
    resources = json.loads((path if path.is_file() else local / "resources.json.default").read_text())
    storage = (Path(server_kit) / "storage").absolute()
    resources["snapshot_persistor"]["args"]["storage"]["args"]["root_dir"] = str(storage / "snapshot")
    for component in resources["components"]:
        if component.get("id") == "job_manager":
            component["args"]["uri_root"] = str(storage / "jobs")
    path.write_text(json.dumps(resources, indent=4) + "\n")
    return path


def start_site(kit: str | Path, *, env: dict | None = None) -> subprocess.Popen:
    """Start the participant of startup kit ``kit`` (server or client) in its own session; output to
    ``<kit>/console.log``. The returned process IS the participant (``--once`` execs python)."""
    kit = Path(kit).absolute()
    script = kit / "startup" / "sub_start.sh"
    if not script.is_file():
        raise FileNotFoundError(f"{kit}: not a server or client startup kit (no startup/sub_start.sh)")
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    full_env = {**os.environ, "PATH": path, "HF_HUB_OFFLINE": "1", **(env or {})}
    with open(kit / "console.log", "ab") as log:
        return subprocess.Popen(
            ["bash", str(script), "--once"], cwd=kit, env=full_env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


class AdminLoginError(RuntimeError):
    """The FLARE admin login failed; the message names the user, the kit, the server and the likely causes."""


def admin_session(admin_kit: str | Path, username: str, *, timeout: float = CONNECT_TIMEOUT) -> Session:
    """A FLARE API session with the admin's kit (TLS, the admin's certificate); waits up to ``timeout`` for login.

    Raises:
        AdminLoginError: the server refused the login or could not be reached; FLARE's own error
            (e.g. ``FLCommunicationError: error:client_registration``) is kept in the message.
    """
    try:
        return new_secure_session(username=username, startup_kit_location=str(admin_kit), timeout=timeout)
    except Exception as e:
        admin = {}
        with contextlib.suppress(OSError, ValueError, KeyError):
            admin = json.loads((Path(admin_kit) / "startup" / "fed_admin.json").read_text())["admin"]
        raise AdminLoginError(
            f"FLARE admin login as {username!r} with startup kit {admin_kit} failed "
            f"(server {admin.get('host')}:{admin.get('port')}, kit of user {admin.get('username')!r} in project "
            f"{admin.get('project_name')!r}): {type(e).__name__}: {e}. The user name must be the one the kit was "
            "issued to, the kit must come from this server's project, and the server must be up."
        ) from e


class FlareSystem:
    """Server and clients of a provisioned project, each from its kit, under one folder ``root``.

    Args:
        root: the folder holding every kit (processes are found by it on their command line).
        server: the server's kit. clients: site name -> kit. admin: the admin's kit; username: its user.
        site_env: site name -> extra environment of that site's process (its GPU, its data path variables).
    """

    def __init__(
        self,
        root: str | Path,
        server: Path,
        clients: dict[str, Path],
        admin: Path,
        username: str,
        *,
        site_env: dict[str, dict] | None = None,
    ):
        self.root = Path(root).absolute()
        self.server_kit, self.client_kits, self.admin_kit, self.username = server, dict(clients), admin, username
        self.site_env = dict(site_env or {})
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, *, timeout: float = CONNECT_TIMEOUT) -> FlareSystem:
        """Start the server, then every client; return once all clients are registered with the server."""
        self.start_server()
        for name in self.client_kits:
            self.start_client(name)
        self.wait_for_clients(list(self.client_kits), timeout=timeout)
        return self

    def start_server(self) -> subprocess.Popen:
        self.processes["server"] = start_site(self.server_kit, env=self.site_env.get("server"))
        return self.processes["server"]

    def start_client(self, name: str) -> subprocess.Popen:
        if name not in self.client_kits:
            raise ValueError(f"no startup kit for site {name!r}; sites: {sorted(self.client_kits)}")
        self.processes[name] = start_site(self.client_kits[name], env=self.site_env.get(name))
        return self.processes[name]

    def session(self, timeout: float = CONNECT_TIMEOUT) -> Session:
        return admin_session(self.admin_kit, self.username, timeout=timeout)

    def wait_for_clients(self, names: list[str], *, timeout: float = CONNECT_TIMEOUT) -> None:
        """Wait until every site in ``names`` is registered with the server.

        Raises:
            TimeoutError: naming the sites that did not register (and each one's process state).
        """
        deadline = time.monotonic() + timeout
        sess = self.session(timeout)
        try:
            connected: set[str] = set()
            while time.monotonic() < deadline:
                connected = {c.name for c in sess.get_connected_client_list()}
                if set(names) <= connected:
                    return
                time.sleep(1.0)
        finally:
            sess.close()
        missing = sorted(set(names) - connected)
        exited = [n for n in missing if n in self.processes and self.processes[n].poll() is not None]
        raise TimeoutError(
            f"sites {missing} did not register with the server within {timeout:.0f} s (processes exited: {exited}); "
            f"see <kit>/console.log and <kit>/log.txt under {self.root}"
        )

    def kill(self, name: str, *, job_id: str | None = None) -> list[int]:
        """SIGKILL participant ``name`` (``server`` or a site) with its job processes (a crashed machine), or with
        ``job_id`` only that job's process of it (a crashed training process; the site itself stays up and reports
        the dead job to the server). Returns the PIDs killed."""
        kit = self.server_kit if name == "server" else self.client_kits[name]
        pids = poc_pids(kit)
        if job_id is not None:
            pids = [pid for pid in pids if job_id in cmdline(pid)]
            if not pids:
                raise ProcessLookupError(f"no process of job {job_id} at {name!r} (has the job started there?)")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if name in self.processes and job_id is None:
            self.processes[name].wait(10)
        return pids

    def stop(self, *, grace: float = 20.0) -> list[int]:
        """Shut the system down through the admin (best effort), then end every process under ``root`` by PID.

        Returns:
            The PIDs that had to be signalled (empty after a clean shutdown).
        """
        if self.processes.get("server") and self.processes["server"].poll() is None:
            try:
                sess = self.session(timeout=10)
                try:
                    sess.shutdown("all", wait=False)
                finally:
                    sess.close()
            except Exception as e:  # a failed orderly stop is followed by the signals below
                print(f"FLARE system: orderly shutdown failed ({e}); ending its processes by PID")
        left = end_processes(self.root, grace=grace)
        for process in self.processes.values():
            if process.poll() is None:  # cannot happen after end_processes; reap to leave no zombie
                process.kill()
            process.wait(5)
        return left

    def __enter__(self) -> FlareSystem:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
