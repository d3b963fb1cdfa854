"""Zero-shot classification: score each finding by prompt similarity, report AUC per finding and macro."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from flare_vlp.evaluation.metrics import per_finding_auc
from flare_vlp.evaluation.prompts import prompts_for

__all__ = ["prompt_directions", "zero_shot_scores", "zero_shot_auc"]


def prompt_directions(findings: Sequence[str], embed: Callable[[list[str]], torch.Tensor]) -> torch.Tensor:
    """F x E: mean positive prompt embedding minus mean negative prompt embedding, per finding."""
    rows = []
    for finding in findings:
        pos, neg = prompts_for(finding)
        rows.append(embed(pos).mean(0) - embed(neg).mean(0))
    return torch.stack(rows)


def zero_shot_scores(image_embeds: torch.Tensor, directions: torch.Tensor) -> np.ndarray:
    """N x F scores cos(z, pos) - cos(z, neg) (= z . direction, since the prompt means are linear)."""
    return (image_embeds.float() @ directions.float().T).numpy()


def zero_shot_auc(image_embeds: torch.Tensor, labels: np.ndarray, directions: torch.Tensor, findings: Sequence[str]):
    return per_finding_auc(labels, zero_shot_scores(image_embeds, directions), findings)
