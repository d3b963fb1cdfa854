"""A test-only site that corrupts its update on the wire: a real :class:`ClientAlgoExecutor` that trains as usual,
then replaces its reply's weights by NaN (round 0) or by a tensor of the wrong shape (later rounds).

It models a faulty or hostile site whose update passes its own checks (the executor seals the reply first) and
reaches the server broken. Site processes import it by class path: put this folder on the site's ``PYTHONPATH`` and
allow the ``corrupting_executor.`` prefix in its ``local/resources.json``.
"""

from __future__ import annotations

import numpy as np
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.apis.signal import Signal
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

from flare_vlp.fl.executor import ClientAlgoExecutor

__all__ = ["CORRUPT_MESSAGE", "CorruptingExecutor"]

CORRUPT_MESSAGE = "corrupting: sending"


class CorruptingExecutor(ClientAlgoExecutor):
    """Round 0: the first weight tensor of the reply becomes all NaN; later rounds: it loses its last row.

    Args:
        as :class:`ClientAlgoExecutor` (``*args, **kwargs``).
    """

    def execute(self, task_name: str, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        reply = super().execute(task_name, shareable, fl_ctx, abort_signal)
        if task_name != "train" or not reply.get("DXO"):
            return reply
        model = FLModelUtils.from_shareable(reply)
        if not model.params:
            return reply
        key = sorted(model.params)[0]
        value = np.asarray(model.params[key])
        if int(model.current_round or 0) == 0:
            model.params[key], kind = np.full_like(value, np.nan, dtype=np.float32), "NaN"
        else:
            model.params[key], kind = value.reshape(-1)[:-1].copy(), "wrong shape"
        self.log_warning(fl_ctx, f"{CORRUPT_MESSAGE} {kind} in {key!r}, round {model.current_round}")
        return FLModelUtils.to_shareable(model)
