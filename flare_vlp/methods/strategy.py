"""The server side of a method: a pure-Python :class:`ServerStrategy` driven by a round loop (FLARE's controller or
the in-process runner), in the spirit of NVFlare's ``FedAvg(aggregator=...)`` + ``ModelAggregator``.

The loop asks the strategy, per round, for its tasks (phases); per task, for the message each site gets; then hands
it every reply, one by one (:meth:`ServerStrategy.accept`: validated per payload kind, kept or refused with a
reason), and asks it to combine what it accepted into the next state (:meth:`ServerStrategy.aggregate`, which gets
the task and so the round). The strategy owns all state that must survive a server restart: the global weights it
serves (:meth:`global_weights`) and plain-Python extras (:meth:`state`, e.g. FedDRA's lambda), persisted after
every round and handed back by :meth:`initialize` on resume.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flare_vlp.algorithms.aggregate import UpdateValidationError
from flare_vlp.config import ExperimentConfig
from flare_vlp.data.manifest import Manifest
from flare_vlp.methods.messages import Message, Task, TaskMeta
from flare_vlp.methods.payload import validate_metrics

__all__ = ["RoundFailedError", "RoundResult", "ServerContext", "ServerStrategy", "settle_task"]


class RoundFailedError(RuntimeError):
    """A round that cannot produce the next global state (too few valid replies)."""


@dataclass
class ServerContext:
    """What a strategy gets from its loop.

    Args:
        cfg: the experiment config.
        num_rounds: total rounds of the run.
        min_clients: fewest valid replies a task accepts.
        log_event: ``log_event(event, **fields)`` appends a record to the run's metrics.jsonl.
        logger: where the strategy logs (FLARE's component logger on a FLARE server).
        data_dir: the SynthCXR folder the sites use, for strategies that read shared data (a public split).
        manifest: a manifest path, likewise.
    """

    cfg: ExperimentConfig
    num_rounds: int
    min_clients: int
    log_event: Callable[..., None] = field(default=lambda event, **fields: None)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("flare_vlp.server"))
    data_dir: str | None = None
    manifest: str | None = None

    def rows(self, purpose: str = "the shared data") -> Manifest:
        """Every row of the run's data (SynthCXR generated once, under a lock, when the folder is missing).

        Raises:
            ValueError: no ``data_dir``, ``manifest`` nor ``data.manifest`` (``purpose`` says what needed it).
        """
        from flare_vlp.experiments.site_data import SiteDataError, run_manifest

        try:
            return run_manifest(self.cfg, self.data_dir, self.manifest)
        except SiteDataError as e:
            raise ValueError(f"the server has no data source for {purpose}: {e}") from None


@dataclass
class RoundResult:
    """What one task's combination did: the sites combined, those refused (site -> reason), and extras to log."""

    sites: list[str]
    rejected: dict[str, str]
    info: dict[str, Any] = field(default_factory=dict)


class ServerStrategy(ABC):
    """Base of every server strategy.

    Subclasses implement :meth:`setup`, :meth:`round_tasks`, :meth:`global_message`, :meth:`check_reply`,
    :meth:`combine` and :meth:`global_weights`; they may extend :meth:`state` / :meth:`restore`, and override
    :meth:`task_message` when sites get different messages.

    Args:
        config: the method's typed config (its dataclass from the registry).
    """

    verb = "combined"
    """How the round log names what :meth:`combine` does ("averaged", "ensembled", ...)."""

    def __init__(self, config: Any):
        self.config = config
        self.ctx: ServerContext | None = None
        self._accepted: dict[str, Message] = {}
        self._sent: tuple[Task, Message] | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def initialize(
        self, ctx: ServerContext, params: Mapping[str, np.ndarray] | None = None, state: Mapping | None = None
    ) -> None:
        """Build the global state: fresh (``params`` ``None``), or restored from a checkpoint's params and state."""
        self.ctx = ctx
        self.setup(params)
        if state:
            self.restore(state)

    @abstractmethod
    def setup(self, params: Mapping[str, np.ndarray] | None) -> None:
        """Build the server's model/state once; load ``params`` when resuming."""

    def state(self) -> dict:
        """Plain-Python state persisted with the global weights (and given to :meth:`restore`)."""
        return {}

    def restore(self, state: Mapping) -> None:  # noqa: B027  (optional hook)
        """Restore what :meth:`state` returned."""

    # -- a round ------------------------------------------------------------------------------------------------

    @abstractmethod
    def round_tasks(self, rnd: int) -> list[Task]:
        """The tasks (phases) of round ``rnd``, in order; each is sent, answered and combined before the next."""

    @abstractmethod
    def global_message(self, task: Task) -> Message:
        """The one message every site gets for ``task`` (built once per task, see :meth:`task_message`)."""

    def task_message(self, task: Task, site: str) -> Message:
        """The message ``site`` gets for ``task``: by default :meth:`global_message`, built once per task, so every
        site gets the same object and the loop broadcasts it. Override for per-site messages."""
        if self._sent is None or self._sent[0] is not task:
            self._sent = (task, self.global_message(task))
        return self._sent[1]

    @abstractmethod
    def check_reply(self, task: Task, site: str, reply: Message) -> None:
        """Validate one reply for its payload kinds; raise ``UpdateValidationError`` naming site and key."""

    @abstractmethod
    def combine(self, task: Task, replies: Mapping[str, Message]) -> dict[str, Any]:
        """Fold the accepted replies (site -> message, sorted by site) into the next state; returns info to log."""

    @abstractmethod
    def global_weights(self) -> dict[str, np.ndarray]:
        """The global weights to persist and to hand out as the run's model (may be empty)."""

    # -- the accept / aggregate / reset cycle the loops drive ---------------------------------------------------

    def log_reply(self, task: Task, site: str, reply: Message) -> None:
        """One ``site`` record in metrics.jsonl: the reply's metrics, n_k, data site and role."""
        extra = {k: reply.meta[k] for k in (TaskMeta.N_SAMPLES, TaskMeta.SITE, TaskMeta.ROLE) if k in reply.meta}
        self.ctx.log_event("site", round=task.round, task=task.name, site=site, **reply.metrics, **extra)

    def accept(self, task: Task, site: str, reply: Message) -> str | None:
        """Keep ``reply`` if valid (metrics numeric, then :meth:`check_reply`); otherwise return the reason it was
        refused (and log it)."""
        try:
            validate_metrics(site, reply.metrics)
            self.check_reply(task, site, reply)
        except UpdateValidationError as e:
            reason = str(e)
            self.ctx.logger.warning(f"round {task.round} {task.name}: excluded reply of {site}: {reason}")
            self.ctx.log_event("rejected", round=task.round, task=task.name, site=site, reason=reason)
            return reason
        self._accepted[site] = reply
        return None

    def aggregate(self, task: Task, rejected: Mapping[str, str] | None = None) -> RoundResult:
        """Combine the accepted replies of ``task``; then forget them.

        Raises:
            RoundFailedError: fewer than ``min_clients`` accepted replies, or the combination itself failed; the
                message lists every rejection reason.
        """
        rejected = dict(rejected or {})
        accepted = {site: self._accepted[site] for site in sorted(self._accepted)}
        self.reset()
        try:
            if len(accepted) < self.ctx.min_clients:
                raise RoundFailedError(
                    f"only {len(accepted)} valid update(s) of {len(accepted) + len(rejected)} "
                    f"(need min_clients={self.ctx.min_clients}); valid: {sorted(accepted)}; rejected: {rejected}"
                )
            info = self.combine(task, accepted)
        except (RoundFailedError, UpdateValidationError) as e:
            self.ctx.log_event("round_failed", round=task.round, task=task.name, reason=str(e))
            raise RoundFailedError(f"round {task.round} failed: {e}") from e
        self.ctx.logger.info(f"round {task.round} {task.name}: {self.verb} {sorted(accepted)} {info}")
        self.ctx.log_event(
            "round", round=task.round, task=task.name, sites=sorted(accepted), rejected=sorted(rejected), **info
        )
        return RoundResult(sorted(accepted), rejected, info)

    def reset(self) -> None:
        """Drop the replies accepted so far (after a task, or when a task is abandoned)."""
        self._accepted = {}


def settle_task(
    strategy: ServerStrategy, task: Task, replies: Mapping[str, Message], missing: Sequence[str] = ()
) -> RoundResult:
    """The host cycle of one task, the same in every host (FLARE's controller, the in-process runner): each site
    without a result is logged (``no_result``), each reply is logged (``site``) and accepted or refused
    (``rejected``), in site order, then the accepted ones are combined (``round``).

    Args:
        strategy: the initialized strategy (its context logs the records).
        task: the task the replies answer.
        replies: site -> reply, as received.
        missing: sites that were sent ``task`` and gave no result (a task error, an abort or a timeout).

    Raises:
        RoundFailedError: the task cannot produce the next state; the message gives every rejection and every site
            without a result, and the ``failed`` record holds it (after the strategy's ``round_failed``).
    """
    ctx, missing = strategy.ctx, sorted(missing)
    for site in missing:
        ctx.logger.warning(
            f"round {task.round} {task.name}: no result from {site} (task error, abort or timeout; see its log)"
        )
        ctx.log_event("no_result", round=task.round, task=task.name, site=site)
    rejected = {}
    for site in sorted(replies):
        ctx.logger.info(f"round {task.round} {task.name} site {site}: {replies[site].metrics}")
        strategy.log_reply(task, site, replies[site])
        reason = strategy.accept(task, site, replies[site])
        if reason is not None:
            rejected[site] = reason
    try:
        return strategy.aggregate(task, rejected)
    except RoundFailedError as e:
        reason = str(e)
        if missing:
            reason += f"; no {task.name} result from {missing} (a dead or stalled site, a task error or a timeout)"
        ctx.logger.error(reason)
        ctx.log_event("failed", round=task.round, task=task.name, reason=reason, no_result=missing)
        raise RoundFailedError(reason) from e
