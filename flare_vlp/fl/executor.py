"""The one flare_vlp site component: a FLARE ``Executor`` hosting a method's client algorithm.

It does the FLARE side only: build the site's :class:`~flare_vlp.methods.client.SiteContext` (config with the
role's overrides, device, data source, the site-local store), convert ``FLModel`` <-> task + message
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
from flare_vlp.methods.site_store import SiteStore

__all__ = ["ClientAlgoExecutor", "STORE_FOLDER"]

STORE_FOLDER = "flare_vlp_store"
"""Folder of the site stores inside a site's FLARE workspace (``<workspace>/flare_vlp_store/<store_name>``)."""


class ClientAlgoExecutor(Executor):
    """Runs the client algorithm of ``method``'s ``role`` at this site.

    Args:
        method: registered method name.
        role: the site's role (its client algorithm); single-role methods use ``default``.
        role_options: keyword options of the role's client algorithm.
        config: preset name or YAML path of the experiment config.
        config_overrides: nested dict merged over the config (the job's, then the role's).
        data_dir: SynthCXR folder; generated (once, under a file lock) when missing. Ignored with ``manifest``.
        manifest: path of a manifest (JSONL/CSV) holding this site's rows.
        site_map: FLARE site name -> manifest site name; default: the same name (``site-1`` -> ``site-1``).
        local_steps: optimizer steps per training task; default: one epoch of the site's train split.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available); batches follow the model, and
            training autocasts to bf16 on CUDA (``train.amp: auto``).
        num_threads: torch CPU threads of this site (default: torch's choice). Simulated sites share one machine;
            one thread each avoids oversubscribing its cores.
        store_dir: the site store's folder; ``{site}`` is replaced by the site name. Default:
            ``<site workspace>/flare_vlp_store/<store_name>``.
        store_name: the store's namespace (the recipe passes the job name, so a restarted job finds its state).
    """

    def __init__(
        self,
        method: str,
        role: str = DEFAULT_ROLE,
        role_options: dict | None = None,
        config: str = "tiny",
        config_overrides: dict | None = None,
        data_dir: str | None = None,
        manifest: str | None = None,
        site_map: dict | None = None,
        local_steps: int | None = None,
        device: str = "cpu",
        num_threads: int | None = None,
        store_dir: str | None = None,
        store_name: str = "default",
    ):
        super().__init__()
        if local_steps is not None and local_steps < 1:
            raise ValueError(f"`local_steps` must be >= 1 or None, got {local_steps}")
        get_method(method).client_cls(role)  # an unknown method or role fails at construction
        self._method = method
        self._role = role
        self._role_options = role_options
        self._config = config
        self._config_overrides = config_overrides
        self._data_dir = data_dir
        self._manifest = manifest
        self._site_map = site_map
        self._local_steps = local_steps
        self._device = device
        self._num_threads = num_threads
        self._store_dir = store_dir
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
        if self._store_dir:
            return Path(self._store_dir.replace("{site}", site)).expanduser()
        return Path(fl_ctx.get_engine().get_workspace().get_root_dir()) / STORE_FOLDER / self._store_name

    def _ensure_algo(self, fl_ctx: FLContext) -> bool:
        """Build the site's context and algorithm once; log (and remember) a clear error instead of raising."""
        if self.algo is not None or self._setup_error is not None:
            return self.algo is not None
        name = fl_ctx.get_identity_name()
        self._fl_ctx = fl_ctx
        try:
            if self._num_threads:
                import torch

                torch.set_num_threads(self._num_threads)
            site, algo = start_site(
                self._method,
                self._role,
                self._role_options,
                site=name,
                config=self._config,
                config_overrides=self._config_overrides,
                store=SiteStore(self.store_root(fl_ctx, name), name),
                device=self._device,
                data_dir=self._data_dir,
                manifest=self._manifest,
                site_map=self._site_map,
                local_steps=self._local_steps,
                logger=self.logger,
                stream=self._stream,
            )
        except Exception as e:  # reported to the server as a task error, never a crashed client
            self._setup_error = f"site {name!r}: cannot set up the {self._method} {self._role!r} role: {e}"
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
