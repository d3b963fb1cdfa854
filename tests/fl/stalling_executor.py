"""A test-only site that stops answering: a real :class:`ClientAlgoExecutor` whose training task blocks until aborted.

It models a client that is connected (heartbeats keep flowing) but never returns its result in time, so the
server's task ``timeout`` is the only thing that ends the round. It waits on FLARE's abort signal without using CPU,
and returns as soon as the job ends (FLARE triggers every running task's abort signal at END_RUN).

Simulator clients import it by class path in their own processes: put this folder on ``PYTHONPATH`` and allow the
``stalling_executor.`` prefix in the workspace's ``local/resources.json`` (it is not under ``flare_vlp.``).
"""

from __future__ import annotations

import time

from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable, make_reply
from nvflare.apis.signal import Signal
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

from flare_vlp.fl.executor import ClientAlgoExecutor

__all__ = ["StallingExecutor", "STALL_MESSAGE"]

STALL_MESSAGE = "stalling: not answering round"


class StallingExecutor(ClientAlgoExecutor):
    """Trains normally before round ``stall_from_round``; from then on blocks each training task until aborted.

    Args:
        stall_from_round: first round whose training task never answers.
        others: as :class:`ClientAlgoExecutor` (``*args, **kwargs``: FLARE's job export walks the base class's
            signature for them, as its own ``Scaffold`` relies on).
    """

    def __init__(self, *args, stall_from_round: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self._stall_from_round = stall_from_round

    def execute(self, task_name: str, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        if task_name != "train":
            return super().execute(task_name, shareable, fl_ctx, abort_signal)
        rnd = int(FLModelUtils.from_shareable(shareable).current_round or 0)
        if rnd < self._stall_from_round:
            return super().execute(task_name, shareable, fl_ctx, abort_signal)
        self.log_warning(fl_ctx, f"{STALL_MESSAGE} {rnd} until aborted")
        while not abort_signal.triggered:
            time.sleep(0.2)
        self.log_info(fl_ctx, f"aborted while stalling in round {rnd}")
        return make_reply(ReturnCode.TASK_ABORTED)
