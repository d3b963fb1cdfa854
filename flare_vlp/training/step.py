"""One optimizer step, the same everywhere: forward under the configured autocast, a finite-loss check, backward,
gradient clipping, optimizer and scheduler step.

``train_loop`` and the hand-written loops of the site algorithms (LoRA fine-tuning's BCE + R_orth, CreamFL's public
regularisers and the server's distillation) all step through :func:`optimizer_step`, so none of them can skip the
experiment's ``train.amp``, ``train.grad_clip`` or the check that stops a run at the first NaN/Inf loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from flare_vlp.config import TrainConfig

__all__ = ["autocast", "optimizer_step"]

Forward = Callable[[], tuple[torch.Tensor, dict[str, float]]]
"""Computes one batch's scalar loss and its float logs (called under :func:`autocast`)."""


def autocast(cfg: TrainConfig, device: torch.device | str) -> torch.autocast:
    """bf16 autocast when ``cfg.amp`` is ``bf16``, or ``auto`` on a GPU; otherwise a disabled context."""
    device = torch.device(device)
    use = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use)


def optimizer_step(
    forward: Forward,
    *,
    params: Sequence[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    device: torch.device | str,
    step: int,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    where: str = "",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Run ``forward`` and take one step of ``optimizer`` on its loss; returns ``(loss, logs)``.

    Args:
        forward: the batch's loss and logs (a closure over the model and the batch).
        params: the optimizer's parameters (clipped together to ``cfg.grad_clip``; their norm is logged as
            ``grad_norm``).
        optimizer / scheduler: stepped in that order (no scheduler: a constant lr).
        cfg: ``amp`` and ``grad_clip`` come from here.
        device: where the model runs (decides ``amp: auto``).
        step: the step's number in its loop (named in the error).
        where: what loop this is, for the error (e.g. ``"site 'site-1' regulariser: "``).

    Raises:
        FloatingPointError: a non-finite loss, before anything is updated; names ``where``, the step and the logs.
    """
    with autocast(cfg, device):
        loss, logs = forward()
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{where}non-finite loss {float(loss.detach())} at step {step}; logs: {logs}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip is not None:
        logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss, logs
