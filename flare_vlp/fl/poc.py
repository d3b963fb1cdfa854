"""The POC system's lifecycle for flare_vlp: a ``PocEnv`` in a chosen workspace, its loopback project, its admin kit,
and a stop that leaves no process behind.

``PocEnv.deploy`` provisions the workspace afresh (from ``project_conf_path``), starts the server and clients, and
submits the job; :func:`prepare_poc_env` (called by the recipes' ``process_env``) gives it flare_vlp's project.yml,
whose builder allows flare_vlp components at every site and whose server binds 127.0.0.1
(see :mod:`flare_vlp.fl.provision`). ``PocEnv.stop`` asks the server to shut the system down and waits only for the
server; :func:`stop_poc` then ends, by PID, every process still running from that workspace.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import yaml
from nvflare.recipe.poc_env import PocEnv

from flare_vlp.fl.provision import BUILDER_PATH, POC_ADMIN, write_poc_project

__all__ = ["cmdline", "end_processes", "make_poc_env", "prepare_poc_env", "poc_admin_kit", "poc_pids", "stop_poc"]

LOGIN_TIMEOUT = 60.0
"""Seconds the job submission waits for the freshly started server (2 busy cores can take a while)."""


def make_poc_env(workspace: str | Path, clients: list[str], *, project_file: str | Path | None = None) -> PocEnv:
    """A ``PocEnv`` for ``clients`` in ``workspace`` (instead of ``NVFLARE_POC_WORKSPACE`` / ``~/.nvflare``).

    ``project_file`` is a POC project.yml to provision from; by default the recipe writes flare_vlp's loopback
    project beside the workspace (:func:`prepare_poc_env`).
    """
    env = PocEnv(
        num_clients=len(clients),
        clients=list(clients),
        project_conf_path=str(project_file or ""),
        extra={"login_timeout": LOGIN_TIMEOUT},
    )
    env.poc_workspace = str(Path(workspace).absolute())
    return env


def project_file_for(env: PocEnv) -> Path:
    """Where flare_vlp writes the POC project.yml: beside the workspace, since a POC restart removes the workspace."""
    workspace = Path(env.poc_workspace).absolute()
    return workspace.with_name(f"{workspace.name}.project.yml")


def prepare_poc_env(env: PocEnv) -> None:
    """Make ``env`` provision flare_vlp's project: write it if ``env`` has no project.yml, else check that the given
    one lists :class:`~flare_vlp.fl.provision.AllowFlareVLPBuilder` (without it every site refuses the job).

    Raises:
        ValueError: the given project.yml cannot be read or lacks the builder.
    """
    if not env.project_conf_path:
        clients = env.clients or [f"site-{i + 1}" for i in range(env.num_clients)]
        env.project_conf_path = str(write_poc_project(project_file_for(env), clients))
        return
    path = Path(env.project_conf_path)
    try:
        project = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot read the POC project file: {e}") from e
    builders = [b.get("path") for b in project.get("builders") or [] if isinstance(b, dict)]
    if BUILDER_PATH not in builders:
        raise ValueError(
            f"{path}: 'builders' lacks {BUILDER_PATH}; add it after StaticFileBuilder so every POC site allows "
            "flare_vlp components (or leave project_conf_path empty to use flare_vlp's project)"
        )


def poc_admin_kit(workspace: str | Path) -> Path:
    """The project admin's startup kit of the POC in ``workspace`` (``<ws>/<project>/prod_NN/admin@nvidia.com``)."""
    candidates = sorted(Path(workspace).glob(f"*/prod_*/{POC_ADMIN}"))
    if not candidates:
        raise FileNotFoundError(f"{workspace}: no POC admin startup kit '*/prod_*/{POC_ADMIN}' (is it provisioned?)")
    return candidates[-1]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _is_live(pid: int) -> bool:
    """Running (zombies count as ended: they hold no resources, only their parent's bookkeeping)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def poc_pids(workspace: str | Path) -> list[int]:
    """PIDs of this user's running processes started from ``workspace`` (server, clients, their job processes and
    start-script loops: each names the workspace or a path inside it on its command line), start-script loops first."""
    workspace = str(Path(workspace).absolute())
    uid = os.getuid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
        except OSError:
            continue
        cmd = cmdline(int(entry.name))
        if (workspace + os.sep in cmd or workspace + " " in cmd) and _is_live(int(entry.name)):
            found.append((0 if "start.sh" in cmd else 1, int(entry.name)))
    return [pid for _, pid in sorted(found)]


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    alive = [p for p in pids if _is_live(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if _is_live(p)]
    return alive


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def end_processes(root: str | Path, *, grace: float = 20.0, sigterm: bool = True) -> list[int]:
    """Wait up to ``grace`` seconds for every process started from ``root`` (:func:`poc_pids`) to end, then send
    SIGTERM (unless ``sigterm`` is false) and at last SIGKILL to those still running, by PID.

    Returns:
        The PIDs that had to be signalled.
    """
    left = _wait_gone(poc_pids(root), grace)
    left = sorted(set(left) | set(poc_pids(root)))
    if not left:
        return []
    if sigterm:
        _signal(left, signal.SIGTERM)
        still = _wait_gone(left, 5.0)
    else:
        still = left
    _signal(still, signal.SIGKILL)
    _wait_gone(still, 5.0)
    return left


def stop_poc(env: PocEnv, *, grace: float = 20.0) -> list[int]:
    """Shut the POC system down and make sure none of its processes survives; idempotent.

    Asks the server for an orderly shutdown (``PocEnv.stop``, workspace kept), waits up to ``grace`` seconds, then
    sends SIGTERM and at last SIGKILL to every process still running from the workspace.

    Returns:
        The PIDs that had to be signalled (empty after a clean shutdown).
    """
    workspace = env.poc_workspace
    if poc_pids(workspace):
        try:
            env.stop(clean_up=False)
        except Exception as e:  # a failed orderly stop is followed by the signals below
            print(f"POC: orderly stop failed ({e}); ending its processes by PID")
    return end_processes(workspace, grace=grace)
