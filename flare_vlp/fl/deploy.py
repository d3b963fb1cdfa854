"""Running a flare_vlp recipe to the end in a real FLARE deployment: a POC system on this machine or a provisioned
(e.g. dashboard-provisioned) system reached with an admin startup kit.

Both submit through the recipe (``recipe.run(env)``: PocEnv provisions and starts the POC first) and then follow the
job with one FLARE API session until it ends. POC: the server runs here and writes its run folder in place, so
nothing is downloaded, and the POC system is always stopped (every process, by PID if need be), also on errors and
Ctrl-C. Prod: the server writes on its own machine, so the job result (the server's job workspace, with the
controller's ``metrics.jsonl`` and ``models/global.safetensors`` in its app folder) is downloaded through the FLARE
API; Ctrl-C aborts the job.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from nvflare.apis.job_def import RunStatus
from nvflare.fuel.flare_api.api_spec import MonitorReturnCode
from nvflare.fuel.flare_api.flare_api import Session
from nvflare.recipe.poc_env import PocEnv
from nvflare.recipe.prod_env import ProdEnv
from nvflare.recipe.spec import Recipe

from flare_vlp.fl.controller import PROGRESS_GROUP
from flare_vlp.fl.poc import poc_admin_kit, stop_poc
from flare_vlp.fl.system import admin_session

__all__ = ["RUN_FILES", "collect_run_files", "failure_events", "job_progress", "no_sigint", "run_in_poc", "run_in_prod"]

RUN_FILES = ("metrics.jsonl", "config.yaml", "models", "plots", "tensorboard")
"""What the server's components write into their run folder (files and folders; see ``flare_vlp.fl.controllers``)."""

Echo = Callable[[str], None]
PROGRESS_DELAY = 4.0
"""Seconds after a job turns RUNNING before its round progress is asked for (earlier asks only fill the server's
error log: its job process is not up yet)."""


def _session(username: str, kit: str | Path, login_timeout: float) -> Session:
    return admin_session(kit, username, timeout=login_timeout)


def job_progress(sess: Session, job_id: str) -> dict | None:
    """The flare_vlp controller's progress (``round``, ``num_rounds``, ``task``) from the server's job stats, or
    ``None`` while the job is not running (or runs no flare_vlp controller)."""
    try:
        stats = sess.show_stats(job_id, "server")
    except Exception:  # not deployed yet, finished, or the server is busy: no progress to show
        return None
    todo = [stats]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            if isinstance(item.get(PROGRESS_GROUP), dict):
                return item[PROGRESS_GROUP]
            todo.extend(item.values())
    return None


def _follow(sess: Session, job_id: str, timeout: float, echo: Echo) -> None:
    """Wait for ``job_id`` to end, echoing its status and each round as it starts; raise unless it completed.
    ``timeout`` 0 waits for ever; on timeout it aborts."""
    seen = {"status": None, "progress": None, "since": 0.0}

    def on_poll(_sess, _job_id, meta, *_args, **_kwargs) -> bool:
        status = meta.get("status")
        if status != seen["status"]:
            echo(f"job {job_id}: {status}")
            seen["status"], seen["since"] = status, time.monotonic()
        # the server's job process needs a few seconds after RUNNING before it can answer for its stats
        running = status == RunStatus.RUNNING.value and time.monotonic() - seen["since"] > PROGRESS_DELAY
        progress = job_progress(sess, job_id) if running else None
        if progress and progress.get("round") is not None:
            step = (progress["round"], progress.get("task"))
            if step != seen["progress"]:
                echo(f"job {job_id}: round {progress['round'] + 1}/{progress['num_rounds']} ({progress['task']})")
                seen["progress"] = step
        return True

    rc, meta = sess.monitor_job_and_return_job_meta(job_id, timeout=timeout, poll_interval=2.0, cb=on_poll)
    if rc == MonitorReturnCode.TIMEOUT:
        sess.abort_job(job_id)
        raise TimeoutError(f"job {job_id} did not finish within {timeout:.0f} s; it was aborted")
    status = (meta or {}).get("status")
    if status != RunStatus.FINISHED_COMPLETED.value:
        raise RuntimeError(f"job {job_id} ended with status {status}; see the server's and sites' log.txt")


@contextlib.contextmanager
def no_sigint() -> Iterator[None]:
    """Hold Ctrl-C back while a cleanup runs (main thread only; elsewhere signals cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_in_poc(recipe: Recipe, env: PocEnv, *, timeout: float = 0, echo: Echo = print) -> str:
    """Provision and start the POC system, run ``recipe`` in it, wait for the job, and stop the system.

    Args:
        recipe: a flare_vlp recipe (its ``run_dir`` must be a local path: the POC server writes there).
        env: e.g. :func:`flare_vlp.fl.poc.make_poc_env`.
        timeout: seconds to wait for the job (0: no limit); on timeout the job is aborted.

    Returns:
        The job id.

    Raises:
        TimeoutError / RuntimeError: the job did not complete; the POC system is stopped in any case.
    """
    try:
        job_id = recipe.run(env).get_job_id()
        echo(f"POC: submitted job {job_id} (workspace {env.poc_workspace})")
        sess = _session(env.username, poc_admin_kit(env.poc_workspace), env.get_extra_prop("login_timeout", 10))
        try:
            _follow(sess, job_id, timeout, echo)
        finally:
            sess.close()
        return job_id
    except Exception:
        _echo_error_logs(env.poc_workspace, echo)
        raise
    finally:
        with no_sigint():
            killed = stop_poc(env)
        echo(f"POC: stopped{f' (ended leftover processes {killed} by PID)' if killed else ''}")


def _echo_error_logs(workspace: str | Path, echo: Echo, lines: int = 15) -> None:
    """Show the end of every non-empty ``error_log.txt`` of the POC sites and their job folders (the workspace may
    be inside a run folder that is removed on failure)."""
    for log in sorted(Path(workspace).glob("*/prod_*/**/error_log.txt")):
        text = log.read_text(errors="replace").strip().splitlines()
        if text:
            echo(f"--- {log} (last {min(lines, len(text))} lines)\n" + "\n".join(text[-lines:]))


def run_in_prod(recipe: Recipe, env: ProdEnv, dest: str | Path, *, timeout: float = 0, echo: Echo = print) -> Path:
    """Submit ``recipe`` to a provisioned system, wait for the job and download its result into ``dest``.

    Every site (server included) must allow flare_vlp components once: ``flare-vlp jobs allow <kit>/local``.

    Returns:
        The downloaded job result folder.

    Raises:
        TimeoutError / RuntimeError: the job did not complete. KeyboardInterrupt aborts the job, then propagates.
    """
    job_id = recipe.run(env).get_job_id()
    echo(f"prod: submitted job {job_id} as {env.username}")
    sess = _session(env.username, env.startup_kit_location, env.login_timeout)
    try:
        try:
            _follow(sess, job_id, timeout, echo)
        except KeyboardInterrupt:
            with no_sigint():
                sess.abort_job(job_id)
            echo(f"prod: aborted job {job_id}")
            raise
        except RuntimeError as e:  # the job failed: fetch its result for the reason the server recorded
            raise RuntimeError(f"{e}{_failure_reason(sess, job_id, dest)}") from e
        Path(dest).mkdir(parents=True, exist_ok=True)
        result = sess.download_job_result(job_id, destination=str(dest))
    finally:
        sess.close()
    if not result or not Path(result).is_dir():
        raise RuntimeError(f"job {job_id}: the FLARE API returned no result folder (got {result!r})")
    return Path(result)


def failure_events(result: str | Path) -> list[dict]:
    """The controller's ``failed`` events (round, task, reason naming the sites) in a downloaded job result."""
    events = []
    for metrics in sorted(Path(result).rglob("metrics.jsonl")):
        for line in metrics.read_text().splitlines():
            event = json.loads(line) if line.strip() else {}
            if event.get("event") == "failed":
                events.append(event)
    return events


def _failure_reason(sess: Session, job_id: str, dest: str | Path) -> str:
    """``"; server: <reason>"`` from the failed job's downloaded result, or ``""`` if it cannot be had."""
    try:
        Path(dest).mkdir(parents=True, exist_ok=True)
        result = sess.download_job_result(job_id, destination=str(dest))
    except Exception:  # the download is a courtesy: the job's own error is raised anyway
        return ""
    events = failure_events(result) if result else []
    return "; server: " + "; ".join(e["reason"] for e in events) if events else ""


def collect_run_files(result: str | Path, run_dir: str | Path) -> list[Path]:
    """Copy the controller's run files from a downloaded job result (its server app folder) into ``run_dir``.

    Raises:
        FileNotFoundError: the result holds no ``models/global.safetensors``.
    """
    result, run_dir = Path(result), Path(run_dir)
    models = sorted(result.rglob("models/global.safetensors"))
    if not models:
        raise FileNotFoundError(f"{result}: the job result holds no models/global.safetensors (did the job finish?)")
    app_dir = models[0].parent.parent
    copied = []
    for name in RUN_FILES:
        source, target = app_dir / name, run_dir / name
        if source.is_dir():
            copied.append(Path(shutil.copytree(source, target, dirs_exist_ok=True)))
        elif source.is_file():
            copied.append(Path(shutil.copy2(source, target)))
    return copied
