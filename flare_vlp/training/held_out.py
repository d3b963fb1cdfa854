"""An objective measured, not trained: its sample-weighted mean over a loader or over fixed batches, in eval mode.

Every site algorithm reports such figures (a val loss, FedDRA's DRO signal, CreamFL's private-task loss), so they
live here beside the objectives rather than in any one method's client.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from flare_vlp.training.objectives import Objective, batch_to_device

__all__ = ["mean_loss", "batches_loss"]


@torch.no_grad()
def mean_loss(model: torch.nn.Module, loader, objective: Objective, device: str) -> float:
    """Sample-weighted mean objective over ``loader`` in eval mode (a site's validation loss); NaN when empty."""
    model.to(device).eval()
    total, count = 0.0, 0
    for batch in loader:
        loss, _ = objective(model, batch_to_device(batch, device))
        n = int(batch["labels"].shape[0])  # report-only batches have no image
        total += float(loss) * n
        count += n
    return total / count if count else float("nan")


@torch.no_grad()
def batches_loss(
    model: torch.nn.Module, dataset, collate, batches: Sequence[np.ndarray], objective: Objective, device: str
) -> float:
    """Mean objective over the given equal-size batches of ``dataset`` rows, in eval mode (the fixed DRO signal)."""
    loader = DataLoader(dataset, batch_sampler=[b.tolist() for b in batches], collate_fn=collate)
    model.to(device).eval()
    losses = [float(objective(model, batch_to_device(batch, device))[0]) for batch in loader]
    return float(np.mean(losses)) if losses else float("nan")
