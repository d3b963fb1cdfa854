"""Training objectives: what one batch costs. The loop owns optimisation; an objective owns the loss.

Keeping the two apart is what lets FedAvg, FedProx, FedDRA's anchor term and the baselines share one loop: a method
swaps the objective (or wraps it), never the loop.
"""

from __future__ import annotations

import copy
from typing import Protocol

import torch
from torch import nn

from flare_vlp.algorithms import anchor_loss, contrastive_loss

__all__ = ["Objective", "ContrastiveObjective", "AnchoredObjective", "batch_to_device"]


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

    def loss(self, out, batch: dict) -> torch.Tensor:
        """ITA of the embeddings ``out`` of ``batch``."""
        labels = batch.get("labels") if self.positives != "diagonal" else None
        return contrastive_loss(
            out.image_embeds, out.text_embeds, out.logit_scale, labels=labels, positives=self.positives
        )

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        out = self.embed(model, batch)
        loss = self.loss(out, batch)
        return loss, {"ita": float(loss.detach()), "logit_scale": float(out.logit_scale.detach())}


class AnchoredObjective:
    """FedDRA / FedAID local loss: ``base + weight * (MSE(z_v, zbar_v) + MSE(z_t, zbar_t))`` (methods.md 1, step 2).

    The anchors ``zbar`` are the embeddings of the SAME batch by a frozen copy of the round's global model, taken when
    this objective is built (right after the site loaded the global weights). Each call the copy runs with the local
    model's per-module train/eval flags (so BatchNorm normalises both with the same kind of statistics and the loss is
    exactly zero while the two models are equal) but never with dropout. A frozen, identical text encoder is shared
    with the local model instead of copied.

    Args:
        model: the local model, holding the global weights now.
        base: the alignment objective (its ``embed`` gives the local embeddings).
        weight: ``lambda_anchor`` (> 0).
    """

    def __init__(self, model: nn.Module, base: ContrastiveObjective, weight: float):
        if not weight > 0:
            raise ValueError(f"anchor weight must be > 0, got {weight}")
        self.base = base
        self.weight = float(weight)
        share = {}
        text = getattr(model, "text_encoder", None)
        if text is not None and not any(p.requires_grad for p in text.parameters()):
            share[id(text)] = text
        self.anchor = copy.deepcopy(model, memo=share)
        self.anchor.requires_grad_(False)  # the shared text encoder is frozen already

    def _mirror_modes(self, model: nn.Module) -> None:
        for local, frozen in zip(model.modules(), self.anchor.modules()):
            frozen.training = local.training and not isinstance(frozen, nn.modules.dropout._DropoutNd)

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        out = self.base.embed(model, batch)
        self._mirror_modes(model)
        with torch.no_grad():
            ref = self.base.embed(self.anchor, batch)
        ita = self.base.loss(out, batch)
        anchor = anchor_loss(out.image_embeds, out.text_embeds, ref.image_embeds, ref.text_embeds)
        loss = ita + self.weight * anchor
        return loss, {
            "ita": float(ita.detach()),
            "anchor": float(anchor.detach()),
            "logit_scale": float(out.logit_scale.detach()),
        }
