"""Provisioning through the FLARE dashboard on loopback: its web app under gunicorn, driven through its REST API.

The dashboard (``nvflare.dashboard``) is FLARE's web service for distributed provisioning: the project admin sets the
project up and freezes it, users and sites register and are approved, and each downloads its own startup kit (a zip
locked with a PIN the downloader chooses). ``nvflare dashboard --start`` needs docker and ``--local`` binds 0.0.0.0
and keeps its database inside site-packages; :class:`DashboardServer` runs the same Flask app
(``nvflare.dashboard.wsgi:app``) under gunicorn bound to 127.0.0.1, with its web root (sqlite database, gunicorn
pid file and log) in a folder of the caller's choice. :class:`DashboardAPI` is a thin client of its REST routes
(``/nvflare-dashboard/api/v1/...``), and :func:`provision_with_dashboard` does what the people of a project do there,
in order: set the project (server ``localhost`` so the FL server binds loopback only, its port), register and approve
the client sites and an admin user, freeze, download and unlock every kit, allow flare_vlp components in each, and
keep the server's job store inside its kit (:func:`~flare_vlp.fl.system.keep_server_storage_in_kit`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import requests

from flare_vlp.fl.policy import allow_flare_vlp
from flare_vlp.fl.provision import LOOPBACK_SERVER, free_port
from flare_vlp.fl.system import keep_server_storage_in_kit
from flare_vlp.utils.io import atomic_output_dir

__all__ = ["API_PREFIX", "DashboardAPI", "DashboardError", "DashboardServer", "Kits", "provision_with_dashboard"]

API_PREFIX = "/nvflare-dashboard/api/v1"
START_TIMEOUT = 60.0
"""Seconds the dashboard may take to answer after gunicorn starts (it creates its database on first start)."""


class DashboardError(RuntimeError):
    """A dashboard request failed; the message names the route, the HTTP status and the dashboard's answer."""


def _static_folder() -> str:
    import nvflare.dashboard.application as app

    return str(Path(app.__file__).parent / "static")


class DashboardServer:
    """The FLARE dashboard's Flask app under gunicorn on ``127.0.0.1:port``; a context manager that stops it by PID.

    Args:
        web_root: the dashboard's folder (``NVFL_WEB_ROOT``): ``db.sqlite``, ``gunicorn.pid``, ``dashboard.log``.
        credential: the project admin, ``email:password:org`` (seeded on the first start only).
        port: a free one by default.
    """

    def __init__(self, web_root: str | Path, credential: str, *, port: int | None = None):
        if credential.count(":") != 2 or not all(credential.split(":")):
            raise ValueError(f"dashboard credential must be 'email:password:org', got {credential!r}")
        self.web_root = Path(web_root).absolute()
        self.credential = credential
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> DashboardServer:
        self.web_root.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "NVFL_WEB_ROOT": str(self.web_root),
            "NVFL_CREDENTIAL": self.credential,
            "NVFL_DASHBOARD_STATIC_FOLDER": _static_folder(),
            "SECRET_KEY": secrets.token_hex(16),
        }
        gunicorn = [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{self.port}", "-w", "1", "--timeout", "120"]
        gunicorn += ["--pid", str(self.web_root / "gunicorn.pid"), "nvflare.dashboard.wsgi:app"]
        log = open(self.web_root / "dashboard.log", "ab")  # noqa: SIM115 (the child keeps it)
        try:
            self.process = subprocess.Popen(
                gunicorn, cwd=self.web_root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DashboardError(f"the dashboard exited with code {self.process.returncode}; {self._log_tail()}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(self.url + API_PREFIX + "/project", timeout=5).ok:
                    return
            time.sleep(0.3)
        self.stop()
        raise DashboardError(f"the dashboard did not answer on {self.url} within {START_TIMEOUT:.0f} s")

    def _log_tail(self, lines: int = 15) -> str:
        log = self.web_root / "dashboard.log"
        text = log.read_text(errors="replace").splitlines() if log.is_file() else []
        return f"end of {log}:\n" + "\n".join(text[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM gunicorn (it stops its worker), SIGKILL after ``grace`` seconds; idempotent."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class DashboardAPI:
    """The dashboard's REST API as one logged-in user (``login`` first)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/") + API_PREFIX
        self.http = requests.Session()

    def call(self, method: str, route: str, body: dict | None = None, *, expect=(200, 201)) -> requests.Response:
        reply = self.http.request(method, self.url + route, json=body, timeout=120)
        if reply.status_code not in expect:
            raise DashboardError(f"{method} {route}: HTTP {reply.status_code}: {reply.text.strip()[:300]}")
        return reply

    def login(self, email: str, password: str) -> dict:
        try:
            reply = self.call("POST", "/login", {"email": email, "password": password})
        except DashboardError as e:
            raise DashboardError(f"dashboard login of {email!r} refused (wrong email or password?): {e}") from e
        self.http.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"
        return reply.json()["user"]

    def project(self) -> dict:
        return self.call("GET", "/project").json()["project"]

    def set_project(self, **fields) -> dict:
        answer = self.call("PATCH", "/project", fields).json()
        if "project" not in answer:
            raise DashboardError(f"PATCH /project {sorted(fields)}: {answer}")
        return answer["project"]

    def add_client(self, name: str, org: str, *, num_gpus: int = 0, gpu_mem: int = 0) -> int:
        body = {"name": name, "organization": org, "capacity": {"num_of_gpus": num_gpus, "mem_per_gpu_in_GiB": gpu_mem}}
        return self.call("POST", "/clients", body).json()["client"]["id"]

    def clients(self) -> list[dict]:
        return self.call("GET", "/clients").json()["client_list"]

    def approve_client(self, client_id: int) -> None:
        self.call("PATCH", f"/clients/{client_id}", {"approval_state": 100})

    def add_user(self, email: str, password: str, org: str, role: str) -> int:
        body = {"email": email, "password": password, "name": email, "organization": org, "role": role}
        return self.call("POST", "/users", body).json()["user"]["id"]

    def users(self) -> list[dict]:
        return self.call("GET", "/users").json()["user_list"]

    def approve_user(self, user_id: int) -> None:
        self.call("PATCH", f"/users/{user_id}", {"approval_state": 100})

    def download_kit(self, kind: str, item_id: int, dest: str | Path, pin: str) -> Path:
        """Download kit ``item_id`` of ``kind`` (``servers``, ``clients``, ``users``), a PIN-locked zip, to ``dest``."""
        reply = self.call("POST", f"/{kind}/{item_id}/blob", {"pin": pin})
        if not reply.content.startswith(b"PK"):
            raise DashboardError(f"POST /{kind}/{item_id}/blob: no kit, the dashboard said {reply.text.strip()[:200]}")
        dest = Path(dest)
        dest.write_bytes(reply.content)
        return dest


def unlock_kit(zip_path: str | Path, dest: str | Path, pin: str) -> Path:
    """Extract a dashboard kit zip locked with ``pin`` into ``dest`` (start scripts made executable again).

    The kit is extracted into a temporary folder beside ``dest`` and moved into place only when every file
    decrypted and passed its CRC: a wrong PIN leaves nothing behind, and an older kit at ``dest`` is replaced
    whole (its certificates belong to another provisioning), never merged. (ZipCrypto's one-byte password check lets
    about 1 wrong PIN in 256 through; such a PIN then fails in decompression, as ``zlib.error``, or in the CRC.)
    """
    dest = Path(dest)
    if dest.exists() and not (dest / "startup").is_dir():
        raise DashboardError(f"{zip_path}: cannot unlock the startup kit into {dest}: it exists and is not a kit")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # an older kit of this name (a re-provisioned project) is replaced whole, never merged
    with atomic_output_dir(dest, overwrite=True) as staging:
        try:
            with zipfile.ZipFile(zip_path) as z:
                z.extractall(staging, pwd=pin.encode())
        except (RuntimeError, zipfile.BadZipFile, zlib.error) as e:
            raise DashboardError(f"{zip_path}: cannot unlock the startup kit (wrong PIN or damaged zip): {e}") from e
        for script in staging.glob("startup/*.sh"):
            script.chmod(0o755)
    return dest


@dataclass
class Kits:
    """The unlocked startup kits of a dashboard-provisioned project."""

    project: str
    server: Path
    clients: dict[str, Path]
    admin: Path
    admin_user: str
    port: int
    listing: dict = field(default_factory=dict)
    """What the dashboard showed the project admin: ``clients`` and ``users`` with their approval states."""


def provision_with_dashboard(
    url: str,
    credential: str,
    kits_dir: str | Path,
    clients: list[str],
    *,
    project: str = "flare_vlp",
    admin: str = "lead@flare-vlp.org",
    admin_role: str = "lead",
    port: int | None = None,
) -> Kits:
    """Set up, freeze and download a project through the dashboard at ``url``, as its project admin.

    Args:
        url: the dashboard (:class:`DashboardServer`).
        credential: the project admin's ``email:password:org``.
        kits_dir: where the kit zips and the unlocked kits go (``<kits_dir>/<name>/``).
        clients: the client sites to register and approve.
        project: short name (at most 16 characters: the dashboard cuts it).
        admin: the admin user to register and approve (it submits jobs with its kit).
        admin_role: its FLARE role (``lead`` may submit jobs, ``project_admin`` is the seeded user only).
        port: the FL and admin port of the server (a free one by default).

    Raises:
        ValueError: no clients, duplicate names, a project name over 16 characters.
        DashboardError: a request the dashboard refused, naming the route.
    """
    if not clients or len(set(clients)) != len(clients):
        raise ValueError(f"dashboard project needs distinct client names, got {clients}")
    if len(project) > 16:
        raise ValueError(f"dashboard project name must have at most 16 characters, got {project!r}")
    email, password, org = credential.split(":")
    port = port or free_port()
    api = DashboardAPI(url)
    api.login(email, password)
    api.set_project(
        short_name=project,
        title=f"{project}: federated vision-language pre-training",
        description="provisioned by flare_vlp.fl.dashboard",
        server1=LOOPBACK_SERVER,  # the FL server binds loopback only when its name is a loopback host
        server_props={"fed_learn_port": port, "admin_port": port},
        app_location="",
    )
    client_ids = {name: api.add_client(name, org) for name in clients}
    for client_id in client_ids.values():
        api.approve_client(client_id)
    admin_id = api.add_user(admin, secrets.token_hex(8), org, admin_role)
    api.approve_user(admin_id)
    api.set_project(frozen=True)
    kits_dir = Path(kits_dir).absolute()
    kits_dir.mkdir(parents=True, exist_ok=True)
    pin = secrets.token_hex(6)

    def fetch(kind: str, item_id: int, name: str) -> Path:
        zip_path = api.download_kit(kind, item_id, kits_dir / f"{name}.zip", pin)
        return unlock_kit(zip_path, kits_dir / name, pin)

    kits = Kits(
        project=project,
        server=fetch("servers", 1, LOOPBACK_SERVER),
        clients={name: fetch("clients", cid, name) for name, cid in client_ids.items()},
        admin=fetch("users", admin_id, admin),
        admin_user=admin,
        port=port,
        listing={"clients": api.clients(), "users": api.users()},
    )
    for kit in [kits.server, *kits.clients.values()]:
        allow_flare_vlp(kit / "local")
    keep_server_storage_in_kit(kits.server)
    return kits
