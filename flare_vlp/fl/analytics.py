"""Live per-site metrics through FLARE's analytics events: sites stream scalars, the server writes them down.

A site fires ``analytix_log_stats`` events (:func:`stream_scalars`); ``ConvertToFedEvent`` on the client forwards
them to the server as ``fed.analytix_log_stats``, where :class:`VLPAnalyticsReceiver` writes every scalar twice:
into TensorBoard event files per site (``RUN_DIR/tensorboard/<site>/``) for watching a run live, and as one
``{"event": "stream", ...}`` line into ``RUN_DIR/metrics.jsonl``, the same file (and folder) the controller writes,
so ``flare-vlp report`` and ad-hoc scripts see one record of the run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nvflare.apis.analytix import ANALYTIC_EVENT_TYPE, AnalyticsData, AnalyticsDataType, TrackConst
from nvflare.apis.dxo import from_shareable
from nvflare.apis.fl_component import FLComponent
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.apis.utils.analytix_utils import create_analytic_dxo, send_analytic_dxo
from nvflare.app_common.utils.file_utils import resolve_path_under_root
from nvflare.app_common.widgets.streaming import AnalyticsReceiver

from flare_vlp.experiments.run_folder import json_safe

__all__ = ["STREAM_EVENT", "JsonlAppender", "VLPAnalyticsReceiver", "numeric_scalars", "stream_scalars"]

STREAM_EVENT = "stream"
"""The ``event`` field of streamed records in metrics.jsonl."""

_SINGLE = (AnalyticsDataType.SCALAR, AnalyticsDataType.METRIC)
_MANY = (AnalyticsDataType.SCALARS, AnalyticsDataType.METRICS)


def numeric_scalars(values: Mapping[str, Any]) -> dict[str, float]:
    """The plain numbers of ``values`` (bools, strings, lists dropped): only those can be streamed as scalars."""
    out = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            item = getattr(value, "item", None)  # numpy / torch 0-d scalars
            if not callable(item) or getattr(value, "shape", ()) != ():
                continue
            value = item()
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
        out[str(key)] = float(value)
    return out


def stream_scalars(
    component: FLComponent, fl_ctx: FLContext, tag: str, values: Mapping[str, Any], step: int, **fields: Any
) -> int:
    """Fire one analytics event carrying the numeric entries of ``values`` as ``<tag>/<key>`` scalars at ``step``.

    One event per call (not per scalar) keeps the fed-event traffic to one message. ``fields`` (e.g. ``round=3``)
    travel along and land in every metrics.jsonl record. The event is fired in a fresh context so the caller's task
    context is left untouched. Returns the number of scalars sent (0: nothing fired, e.g. a bare context without a
    FLARE engine, as in unit tests, has nobody to stream to).
    """
    scalars = numeric_scalars(values)
    engine = fl_ctx.get_engine()
    if not scalars or engine is None:
        return 0
    dxo = create_analytic_dxo(
        tag=tag, value=scalars, data_type=AnalyticsDataType.METRICS, global_step=int(step), **fields
    )
    with engine.new_context() as ctx:
        send_analytic_dxo(component, dxo=dxo, fl_ctx=ctx, event_type=ANALYTIC_EVENT_TYPE)
    return len(scalars)


class JsonlAppender:
    """Appends JSON lines to a file another writer (the controller's :class:`RunFolder`) appends to as well.

    The file is opened unbuffered in append mode and each record is ONE ``write`` of a complete line: with
    ``O_APPEND`` the kernel puts every write at the current end, so lines of concurrent writers never interleave.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: Mapping[str, Any]) -> None:
        data = (json.dumps(json_safe(dict(record))) + "\n").encode("utf-8")
        written = os.write(self._fd, data)
        if written != len(data):  # never seen on a local file; fail loudly rather than leave half a line unnoticed
            raise OSError(f"{self.path}: short append ({written} of {len(data)} bytes)")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class VLPAnalyticsReceiver(AnalyticsReceiver):
    """Server widget: streamed site scalars -> ``RUN_DIR/tensorboard/<site>/`` event files + metrics.jsonl lines.

    Args:
        run_dir: the run folder; give the controller's ``run_dir`` (default: the server's app folder, as the
            controller's default).
        tb_folder: TensorBoard root inside ``run_dir`` (relative).

    Handles the local and the ``fed.`` analytics event (``AnalyticsReceiver``'s default).
    """

    def __init__(self, run_dir: str | None = None, tb_folder: str = "tensorboard"):
        super().__init__()
        if os.path.isabs(tb_folder):
            raise ValueError(f"`tb_folder` must be relative to run_dir, got {tb_folder!r}")
        self._run_dir = run_dir
        self._tb_folder = tb_folder
        self._tb_root: str | None = None
        self._jsonl: JsonlAppender | None = None
        self._writers: dict[str, Any] = {}

    def initialize(self, fl_ctx: FLContext) -> None:
        if self._run_dir:
            root = Path(self._run_dir)
        else:
            root = Path(fl_ctx.get_engine().get_workspace().get_app_dir(fl_ctx.get_job_id()))
        root.mkdir(parents=True, exist_ok=True)
        self._tb_root = resolve_path_under_root(str(root), self._tb_folder, "tb_folder")
        os.makedirs(self._tb_root, exist_ok=True)
        self._jsonl = JsonlAppender(root / "metrics.jsonl")
        self.log_info(
            fl_ctx, f"streamed site metrics -> {root / 'metrics.jsonl'}; `tensorboard --logdir {self._tb_root}`"
        )

    def save(self, fl_ctx: FLContext, shareable: Shareable, record_origin: str) -> None:
        data = AnalyticsData.from_dxo(from_shareable(shareable))
        if data is None:
            return
        if data.data_type in _SINGLE:
            scalars = {data.tag: data.value}
        elif data.data_type in _MANY:
            scalars = {f"{data.tag}/{k}": v for k, v in data.value.items()}
        else:
            self.log_debug(
                fl_ctx, f"ignored {data.data_type} record {data.tag!r} from {record_origin}", fire_event=False
            )
            return
        extra = {
            k: v for k, v in (data.kwargs or {}).items() if k not in (TrackConst.GLOBAL_STEP_KEY, TrackConst.PATH_KEY)
        }
        writer = self._writer(record_origin)
        now = round(time.time(), 3)
        for tag, value in scalars.items():
            value = float(value)
            if data.step is None:
                writer.add_scalar(tag, value)
            else:
                writer.add_scalar(tag, value, global_step=data.step)
            record = {"event": STREAM_EVENT, "time": now, "site": record_origin, "tag": tag, "value": value}
            record["step"] = data.step
            self._jsonl.append({**record, **{k: v for k, v in extra.items() if k not in record}})

    def finalize(self, fl_ctx: FLContext) -> None:
        for writer in self._writers.values():
            writer.flush()
            writer.close()
        self._writers.clear()
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None

    def _writer(self, site: str):
        """The site's TensorBoard writer, created on its first scalar (tensorboard imported only then)."""
        writer = self._writers.get(site)
        if writer is None:
            from torch.utils.tensorboard import SummaryWriter

            log_dir = resolve_path_under_root(self._tb_root, site, "record_origin")
            writer = self._writers[site] = SummaryWriter(log_dir=log_dir, flush_secs=10)
        return writer
