"""Learning-rate schedule: linear warmup, then cosine decay to a floor (or constant)."""

from __future__ import annotations

import math

import torch

__all__ = ["lr_multiplier", "build_scheduler", "round_window"]


def lr_multiplier(
    step: int, total_steps: int, warmup_steps: int, schedule: str = "cosine", min_ratio: float = 0.0
) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based).

    1) linear warmup from 1/warmup to 1 over ``warmup_steps``; 2) ``constant``: stay at 1; ``cosine``: decay from 1 to
    ``min_ratio`` over the remaining steps. Warmup matters for contrastive training: a cold start at full lr is what
    keeps a CLIP-style loss on its ln(batch) plateau.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"unknown schedule '{schedule}'; expected 'cosine' or 'constant'")
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int,
    schedule: str = "cosine",
    min_ratio: float = 0.0,
    start_step: int = 0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler whose step 0 is step ``start_step`` of the :func:`lr_multiplier` schedule (past the end: floor)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(start_step + step, total_steps, warmup_steps, schedule, min_ratio)
    )


def round_window(rnd: int, total_rounds: int, steps: int) -> tuple[int, int]:
    """``train_loop``'s ``schedule_window`` for round ``rnd`` of ``total_rounds`` with ``steps`` steps per round."""
    return rnd * steps, total_rounds * steps
