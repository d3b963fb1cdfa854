"""The one flare_vlp site component: a FLARE ``Executor`` hosting a method's client algorithm.

It does the FLARE side only: start the site from the run spec (:func:`~flare_vlp.methods.client.start_site`: config
with the role's overrides, device, data source, the site-local store), convert ``FLModel`` <-> task + message
(:mod:`flare_vlp.fl.exchange`), dispatch by task name (the algorithm's training tasks, ``validate``,
``submit_model``), and check every outgoing message against the algorithm's declaration
(:func:`flare_vlp.methods.payload.check_outgoing`) before it leaves: a tensor the algorithm does not declare
shareable (a personal adapter, a head, raw data) is an error and nothing is sent. Errors reach the server as task
return codes, never as a crashed client.
"""

from __future__ import annotations

from pathlib import Path

from nvflare.apis.event_type import EventType
from nvflare.apis.executor import Executor
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable, make_reply
from nvflare.apis.signal import Signal
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

from flare_vlp.fl.analytics import stream_scalars
from flare_vlp.fl.exchange import from_flmodel, task_from_flmodel, to_flmodel
from flare_vlp.methods.client import ClientAlgo, SiteContext, seal_reply, start_site
from flare_vlp.methods.messages import Message, Task, TaskName
from flare_vlp.methods.payload import DisclosureError, check_incoming
from flare_vlp.methods.registry import DEFAULT_ROLE, get_method
from flare_vlp.methods.run_spec import RunSpec
from flare_vlp.methods.site_store import SiteStore

__all__ = ["ClientAlgoExecutor", "STORE_FOLDER"]

STORE_FOLDER = "flare_vlp_store"
"""Folder of the site stores inside a site's FLARE workspace (``<workspace>/flare_vlp_store/<store_name>``)."""


class ClientAlgoExecutor(Executor):
    """Runs the client algorithm of ``role`` of the run ``spec`` at this site.

    Args:
        spec: the run, as the plain dict of :meth:`~flare_vlp.methods.run_spec.RunSpec.to_dict` (its config, the
            role's overrides and options, data source, local steps, the site's device and threads, store folder).
            The SynthCXR folder is generated (once, under a file lock) when missing. Devices: batches follow the
            model, and training autocasts to bf16 on CUDA (``train.amp: auto``). Simulated sites share one machine:
            ``num_threads`` 1 each avoids oversubscribing its cores.
        role: the site's role (its client algorithm); single-role methods use ``default``.
        store_name: the site store's namespace under ``<site workspace>/flare_vlp_store/`` when the spec names no
            ``store_dir`` (the recipe passes the job name, so a restarted job finds its state).
    """

    def __init__(self, spec: dict, role: str = DEFAULT_ROLE, store_name: str = "default"):
        super().__init__()
        self.run_spec = RunSpec.from_dict(spec)
        get_method(self.run_spec.method).client_cls(role)  # an unknown role fails at construction
        self._spec = spec  # as given: what FLARE's job export writes back
        self._role = role
        self._store_name = store_name
        self.algo: ClientAlgo | None = None
        self.algo_site: SiteContext | None = None
        self._setup_error: str | None = None
        self._fl_ctx: FLContext | None = None

    # -- set-up ---------------------------------------------------------------------------------------------------

    def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
        if event_type == EventType.START_RUN:
            self._ensure_algo(fl_ctx)
        elif event_type == EventType.END_RUN and self.algo is not None:
            self.algo.finalize()

    def store_root(self, fl_ctx: FLContext, site: str) -> Path:
        if self.run_spec.store_dir:
            return Path(self.run_spec.store_path(site, "")).expanduser()
        return Path(fl_ctx.get_engine().get_workspace().get_root_dir()) / STORE_FOLDER / self._store_name

    def _ensure_algo(self, fl_ctx: FLContext) -> bool:
        """Build the site's context and algorithm once; log (and remember) a clear error instead of raising."""
        if self.algo is not None or self._setup_error is not None:
            return self.algo is not None
        name = fl_ctx.get_identity_name()
        self._fl_ctx = fl_ctx
        spec = self.run_spec
        try:
            if spec.num_threads:
                import torch

                torch.set_num_threads(spec.num_threads)
            store = SiteStore(self.store_root(fl_ctx, name), name)
            site, algo = start_site(spec, name, store=store, role=self._role, logger=self.logger, stream=self._stream)
        except Exception as e:  # reported to the server as a task error, never a crashed client
            self._setup_error = f"site {name!r}: cannot set up the {spec.method} {self._role!r} role: {e}"
            self.log_error(fl_ctx, self._setup_error)
            return False
        self.algo, self.algo_site = algo, site
        return True

    # -- dispatch -------------------------------------------------------------------------------------------------

    def execute(self, task_name: str, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        if not self._ensure_algo(fl_ctx):
            self.log_error(fl_ctx, f"task {task_name!r} refused: {self._setup_error}")
            return make_reply(ReturnCode.EXECUTION_EXCEPTION)
        declaration = self.algo.declaration()
        known = {*declaration.train_tasks, TaskName.VALIDATE, TaskName.SUBMIT}
        if task_name not in known:
            self.log_error(fl_ctx, f"unknown task {task_name!r}; known: {sorted(known)}")
            return make_reply(ReturnCode.TASK_UNKNOWN)
        site = fl_ctx.get_identity_name()
        self._fl_ctx = fl_ctx
        try:
            model_in = FLModelUtils.from_shareable(shareable) if task_name != TaskName.SUBMIT else None
            task = task_from_flmodel(task_name, model_in) if model_in is not None else Task(task_name)
            message = from_flmodel(model_in) if model_in is not None else Message()
            check_incoming(site, declaration, message)
            if task_name == TaskName.VALIDATE:
                reply = self.algo.evaluate(task, message)
            elif task_name == TaskName.SUBMIT:
                reply = self.algo.get_weights(task)
            else:
                reply = self.algo.train(task, message, should_abort=lambda: abort_signal.triggered)
            if reply is None or abort_signal.triggered:
                return make_reply(ReturnCode.TASK_ABORTED)
            # the declaration as it stands after the task (as the in-process runner seals): an algorithm that builds
            # its model from the first task's options (the LoRA methods) knows its shareable keys only then
            seal_reply(self.algo_site, self.algo.declaration(), reply, message)
        except DisclosureError as e:
            self.log_error(fl_ctx, f"task {task_name!r}: reply NOT sent: {e}")
            return make_reply(ReturnCode.EXECUTION_EXCEPTION)
        except Exception as e:  # a failed task must reach the server as a return code, never kill the client
            self.log_exception(fl_ctx, f"site {site!r}: task {task_name!r} failed: {e}")
            return make_reply(ReturnCode.EXECUTION_EXCEPTION)
        out = to_flmodel(reply)
        out.current_round = task.round if model_in is not None else None
        return FLModelUtils.to_shareable(out)

    # -- live metrics (FLARE analytics events; see flare_vlp.fl.analytics) ---------------------------------------

    def _stream(self, tag: str, metrics: dict, step: int) -> None:
        """Stream the numeric ``metrics`` to the server as ``<tag>/<key>`` scalars at ``step`` (TensorBoard and
        metrics.jsonl there). Best effort: a failed send is logged and never fails the task."""
        try:
            stream_scalars(self, self._fl_ctx, tag, metrics, step)
        except Exception as e:
            self.log_warning(self._fl_ctx, f"cannot stream {tag!r} metrics at step {step}: {e}")
