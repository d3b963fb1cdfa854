"""Training objectives: what one batch costs. The loop owns optimisation; an objective owns the loss.

Keeping the two apart is what lets FedAvg, FedProx, FedDRA's anchor term and the baselines share one loop: a method
swaps the objective (or wraps it), never the loop.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from flare_vlp.algorithms import contrastive_loss

__all__ = ["Objective", "ContrastiveObjective", "batch_to_device"]


class Objective(Protocol):
    """Maps (model, batch) to a scalar loss and a dict of float logs."""

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]: ...


def batch_to_device(batch: dict, device: torch.device | str) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


class ContrastiveObjective:
    """Image-text contrastive alignment (ITA), with duplicate-report handling chosen by ``positives``.

    Args:
        positives: ``labels`` (pairs with identical label vectors are positives; default), ``dedupe`` (mask
            duplicates out of the denominator) or ``diagonal`` (plain CLIP).
    """

    def __init__(self, positives: str = "labels"):
        self.positives = positives

    def embed(self, model: nn.Module, batch: dict):
        return model(batch["image"], batch["input_ids"], batch["attention_mask"])

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        out = self.embed(model, batch)
        labels = batch.get("labels") if self.positives != "diagonal" else None
        loss = contrastive_loss(
            out.image_embeds, out.text_embeds, out.logit_scale, labels=labels, positives=self.positives
        )
        return loss, {"ita": float(loss.detach()), "logit_scale": float(out.logit_scale.detach())}
