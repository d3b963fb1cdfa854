"""Why a FLARE run failed, in one line: what ``flare-vlp run`` shows last instead of FLARE's return code.

The controller records a failed task in the run folder (``failed``: every refused reply and every silent site);
anything else that stops a job (a strategy that cannot start, a site that cannot set up) is an ERROR a flare_vlp
component logged in the FLARE logs, among FLARE's own connection noise.
"""

from __future__ import annotations

import re
from pathlib import Path

from flare_vlp.fl.controller import StrategyController
from flare_vlp.fl.deploy import failure_events
from flare_vlp.fl.executor import ClientAlgoExecutor
from flare_vlp.fl.persistor import GlobalStatePersistor

__all__ = ["failure_cause"]

_ERROR_LINE = re.compile(r" - ([\w.]+) - ERROR - (?:\[[^\]]*\](?::| -) )?(.*)$")
"""An ERROR line of a FLARE log: ``<time> - <logger> - ERROR - [<FLARE context>] - <message>`` (or ``]: ``)."""


def failure_cause(run_dir: str | Path) -> str | None:
    """Why a FLARE run under ``run_dir`` failed: the controller's ``failed`` record (a task with too few valid
    replies, with every reason), else the first ERROR a flare_vlp component logged in the FLARE logs below
    ``run_dir`` (the server's first, then the sites'; FLARE's own connection noise is skipped), with its log file;
    ``None`` when neither says."""
    ours = {cls.__name__ for cls in (StrategyController, ClientAlgoExecutor, GlobalStatePersistor)}
    failed = failure_events(run_dir)
    if failed:
        return failed[0]["reason"]
    logs = sorted(Path(run_dir).rglob("log.txt"), key=lambda p: ("server" not in p.parts, str(p)))
    for log in logs:  # relative names: a failed run folder is removed, its logs with it
        for line in log.read_text(errors="replace").splitlines():
            match = _ERROR_LINE.search(line)
            if not match or match.group(2).startswith("Traceback"):
                continue
            if match.group(1) in ours or match.group(1).startswith("flare_vlp"):
                return f"{match.group(2).strip()} ({log.relative_to(run_dir)})"
    return None
