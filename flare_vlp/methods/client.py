"""The site side of a method: a :class:`ClientAlgo` hosted by one generic executor (FLARE's or the in-process runner's).

The shape is MONAI's ``monai.fl.client.ClientAlgo`` (initialize / train / get_weights / evaluate / finalize), over
flare_vlp's :class:`~flare_vlp.methods.messages.Message` instead of MONAI's ``ExchangeObject``. Each algorithm also
declares what it receives, trains and lets leave the site (:meth:`ClientAlgo.declaration`); the host checks every
outgoing message against it (:func:`flare_vlp.methods.payload.check_outgoing`) before anything is sent.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flare_vlp.config import ExperimentConfig, TrainConfig
from flare_vlp.methods.messages import Message, Task, TaskMeta
from flare_vlp.methods.payload import Declaration, check_outgoing
from flare_vlp.methods.site_store import SiteStore
from flare_vlp.training.schedule import round_window

if TYPE_CHECKING:
    from flare_vlp.data.manifest import Manifest
    from flare_vlp.experiments.site_data import SiteData
    from flare_vlp.methods.run_spec import RunSpec

__all__ = ["ClientAlgo", "SiteContext", "resolve_device", "run_schedule_window", "seal_reply", "start_site"]

ShouldAbort = Callable[[], bool]


def run_schedule_window(train: TrainConfig, task: Task, steps: int) -> tuple[int, int] | None:
    """``train_loop``'s ``schedule_window`` for a task of ``steps`` private steps: ``(round * steps, total_rounds *
    steps)``, so one lr warmup + decay spans the whole run at every site, whatever its algorithm; ``None`` (a fresh
    schedule per round) with ``train.federated_schedule: round`` or a task without a round count."""
    if train.federated_schedule == "round" or not task.total_rounds:
        return None
    return round_window(int(task.round), int(task.total_rounds), steps)


Streamer = Callable[[str, Mapping[str, Any], int], None]


def resolve_device(device: str) -> str:
    """``cpu`` / ``cuda`` / ``cuda:N`` as given; ``auto`` = ``cuda`` when torch sees a GPU, else ``cpu``.

    Raises:
        ValueError: an unknown device string, or ``cuda`` on a machine without one (named, not a late CUDA error).
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device here (use cpu or auto)")
        return device
    raise ValueError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto")


@dataclass
class SiteContext:
    """What a client algorithm gets from its host: who it is, the experiment, its data source, its local store.

    Args:
        site: the FLARE client name.
        cfg: the experiment config of this site (the job's config with the site role's overrides).
        store: the site-local persistent store (never sent; survives restarts of the site and of the job).
        device: resolved torch device string (``cpu``, ``cuda``, ...).
        data_dir: SynthCXR folder (generated once if missing) or ``None``.
        manifest: a manifest with this site's rows, or ``None``.
        site_map: FLARE site name -> manifest site name.
        local_steps: default optimizer steps per training task (``None``: one epoch).
        role: the site's role in the job.
        logger: where the algorithm logs (FLARE's component logger at a FLARE site).
        stream: ``stream(tag, metrics, step)`` sends live scalars to the server (best effort; may be a no-op).
    """

    site: str
    cfg: ExperimentConfig
    store: SiteStore
    device: str = "cpu"
    data_dir: str | None = None
    manifest: str | None = None
    site_map: Mapping[str, str] | None = None
    local_steps: int | None = None
    role: str = "default"
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("flare_vlp.site"))
    stream: Streamer = field(default=lambda tag, metrics, step: None)

    def site_data(self, cfg: ExperimentConfig | None = None, *, images: bool = True) -> SiteData:
        """This site's shard, model, tokenizer and loaders under ``cfg`` (default: the site's config), read from
        the context's data source (:func:`~flare_vlp.experiments.site_data.load_site_data`)."""
        from flare_vlp.experiments.site_data import load_site_data

        return load_site_data(
            cfg or self.cfg, self.site, data_dir=self.data_dir, manifest=self.manifest, site_map=self.site_map,
            images=images,
        )  # fmt: skip

    def rows(self) -> Manifest:
        """Every row of the run's data source (:func:`~flare_vlp.experiments.site_data.run_manifest`)."""
        from flare_vlp.experiments.site_data import run_manifest

        return run_manifest(self.cfg, self.data_dir, self.manifest)


class ClientAlgo(ABC):
    """A method's site-side algorithm. Subclasses implement the abstract methods; the host does all FLARE I/O.

    Args:
        options: role settings from the job (plain values; e.g. a model variant). Unknown keys are an error of the
            subclass's constructor.
    """

    def __init__(self, **options: Any):
        if options:
            raise ValueError(f"{type(self).__name__} takes no options, got {sorted(options)}")

    @abstractmethod
    def initialize(self, site: SiteContext) -> None:
        """Build data, model and state (called once per site process, before the first task)."""

    @abstractmethod
    def declaration(self) -> Declaration:
        """What this algorithm receives, trains and may send (available after :meth:`initialize`)."""

    @abstractmethod
    def train(self, task: Task, message: Message, should_abort: ShouldAbort) -> Message | None:
        """Run a training task on the received ``message``; the reply, or ``None`` when aborted."""

    @abstractmethod
    def evaluate(self, task: Task, message: Message) -> Message:
        """Evaluate the received global state on the site's validation data; a reply with metrics."""

    def get_weights(self, task: Task) -> Message:
        """The site's shareable state (FLARE's ``submit_model`` task); by default nothing shareable."""
        return Message()

    def finalize(self) -> None:  # noqa: B027  (optional hook)
        """Release resources at the end of the job (the site store is already written by then)."""


def seal_reply(site: SiteContext, declaration: Declaration, reply: Message, received: Message) -> Message:
    """The last step before a reply leaves a site (FLARE executor and in-process runner alike): check it against
    the algorithm's ``declaration`` (:func:`~flare_vlp.methods.payload.check_outgoing`; raises
    ``DisclosureError``) and stamp the site's role into its meta."""
    public = received.representations.ids if received.representations is not None else None
    check_outgoing(site.site, declaration, reply, public)
    reply.meta.setdefault(TaskMeta.ROLE, site.role)
    return reply


def start_site(
    spec: RunSpec,
    site: str,
    *,
    store: SiteStore,
    role: str | None = None,
    logger: logging.Logger | None = None,
    stream: Streamer | None = None,
) -> tuple[SiteContext, ClientAlgo]:
    """Build one site of the run ``spec`` (its role's config, its resolved device, its data source and store, the
    role's client algorithm with its options) and initialize it: the one way a site starts, at a FLARE site and in
    the in-process runner alike.

    Args:
        spec: the run (:class:`~flare_vlp.methods.run_spec.RunSpec`).
        site: the FLARE client name.
        store: the site's store.
        role: the site's role (default: the one ``spec`` gives ``site``).
        logger / stream: as :class:`SiteContext` (defaults: a ``flare_vlp.site.<site>`` logger, no streaming).
    """
    from flare_vlp.methods.registry import get_method

    role = role or spec.role_of(site)
    ctx = SiteContext(
        site=site,
        cfg=spec.load_config(role),
        store=store,
        device=resolve_device(spec.device_of(site)),
        data_dir=spec.data.data_dir,
        manifest=spec.data.manifest,
        site_map=spec.data.site_map,
        local_steps=spec.local_steps,
        role=role,
        logger=logger or logging.getLogger(f"flare_vlp.site.{site}"),
        **({"stream": stream} if stream is not None else {}),
    )
    algo = get_method(spec.method).client_cls(role)(**spec.role_options(role))
    algo.initialize(ctx)
    return ctx, algo
