"""A test-only site that stops answering: a real :class:`VLPExecutor` whose training task blocks until aborted.

It models a client that is connected (heartbeats keep flowing) but never returns its result in time, so the
server's task ``timeout`` is the only thing that ends the round. It waits on FLARE's abort signal without using CPU,
and returns as soon as the job ends (FLARE triggers every running task's abort signal at END_RUN).

Simulator clients import it by class path in their own processes: put this folder on ``PYTHONPATH`` and allow the
``stalling_executor.`` prefix in the workspace's ``local/resources.json`` (it is not under ``flare_vlp.``).
"""

from __future__ import annotations

import time

from nvflare.apis.fl_context import FLContext
from nvflare.apis.signal import Signal
from nvflare.app_common.abstract.fl_model import FLModel

from flare_vlp.fl.executors import VLPExecutor

__all__ = ["StallingExecutor", "STALL_MESSAGE"]

STALL_MESSAGE = "stalling: not answering round"


class StallingExecutor(VLPExecutor):
    """Trains normally before round ``stall_from_round``; from then on blocks each training task until aborted.

    Args:
        stall_from_round: first round whose training task never answers.
        others: as :class:`VLPExecutor` (explicit: FLARE's job export reads the constructor signature).
    """

    def __init__(
        self,
        config: str = "tiny",
        data_dir: str | None = None,
        manifest: str | None = None,
        site_map: dict | None = None,
        local_steps: int | None = None,
        device: str = "cpu",
        config_overrides: dict | None = None,
        num_threads: int | None = None,
        stall_from_round: int = 0,
    ):
        super().__init__(
            config=config,
            data_dir=data_dir,
            manifest=manifest,
            site_map=site_map,
            local_steps=local_steps,
            device=device,
            config_overrides=config_overrides,
            num_threads=num_threads,
        )
        self._stall_from_round = stall_from_round

    def train(self, model_in: FLModel, fl_ctx: FLContext, abort_signal: Signal) -> FLModel | None:
        rnd = int(model_in.current_round or 0)
        if rnd < self._stall_from_round:
            return super().train(model_in, fl_ctx, abort_signal)
        self.log_warning(fl_ctx, f"{STALL_MESSAGE} {rnd} until aborted")
        while not abort_signal.triggered:
            time.sleep(0.2)
        self.log_info(fl_ctx, f"aborted while stalling in round {rnd}")
        return None
