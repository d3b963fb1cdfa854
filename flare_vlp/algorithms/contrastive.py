"""Image-text contrastive alignment (ITA / InfoNCE, CLIP style) with label-aware positives.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision" (https://arxiv.org/abs/2103.00020)
and Zhang et al., ConVIRT (https://arxiv.org/abs/2010.00747): with l2-normalised embeddings ``Z_v, Z_t`` (B x D) and
``S = logit_scale * Z_v Z_t^T`` (B x B),

    L_ITA = 0.5 * (CE(S, I) + CE(S^T, I))                                   (methods.md, section 0)

Medical batches often hold several studies with the same findings (e.g. many "no finding" reports), which makes the
plain diagonal target wrong: those off-diagonal pairs are true matches. ``positives`` chooses how to treat them:

* ``"diagonal"``: plain CLIP, only ``(i, i)`` is positive.
* ``"labels"`` (default): pairs whose label vectors are identical are positives; the target of row ``i`` is the
  row-normalised positive mask, ``T_ij = P_ij / sum_j' P_ij'``, and the loss is the soft cross-entropy in both
  directions. With all-distinct labels ``P = I`` and the loss equals ``"diagonal"`` exactly.
* ``"dedupe"``: the target stays the diagonal, but off-diagonal positives are removed from the softmax denominator
  (they are neither pushed apart nor pulled together). With ``P = I`` it too equals ``"diagonal"`` exactly: all three
  modes share one soft cross-entropy.

``labels=None`` makes every mode fall back to ``"diagonal"``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["POSITIVES", "positive_mask", "contrastive_logits", "contrastive_loss", "contrastive_accuracy"]

POSITIVES: tuple[str, ...] = ("diagonal", "labels", "dedupe")
"""Valid values of ``positives``."""


def _check_pair(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> None:
    if image_embeds.ndim != 2 or image_embeds.shape != text_embeds.shape:
        raise ValueError(
            "`image_embeds` and `text_embeds` must both be B x D with the same shape, got "
            f"{tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}."
        )
    if image_embeds.shape[0] == 0:
        raise ValueError("`image_embeds` is an empty batch (B = 0).")


def positive_mask(labels: torch.Tensor | None, batch_size: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean B x B mask of positive pairs: ``P_ij = (labels_i == labels_j)`` over the whole label vector.

    Args:
        labels: B x C multi-hot label vectors, or B class indices; ``None`` gives the identity (diagonal positives).
        batch_size: B, checked against ``labels``.
        device: device of the mask when ``labels`` is None.

    Returns:
        B x B bool tensor with a true diagonal.

    Raises:
        ValueError: if ``labels`` does not have B rows or has more than 2 dimensions.
    """
    if labels is None:
        return torch.eye(batch_size, dtype=torch.bool, device=device)
    if labels.ndim not in (1, 2) or labels.shape[0] != batch_size:
        raise ValueError(f"`labels` must be B or B x C with B = {batch_size}, got shape {tuple(labels.shape)}.")
    flat = labels.reshape(batch_size, -1)
    return (flat[:, None, :] == flat[None, :, :]).all(dim=-1)


def contrastive_logits(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor | float
) -> torch.Tensor:
    """Similarity logits ``S = logit_scale * Z_v Z_t^T`` (B x B); row i scores image i against every text."""
    _check_pair(image_embeds, text_embeds)
    return logit_scale * image_embeds @ text_embeds.T


def _soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # mean_i [ -sum_j T_ij log softmax(S)_ij ]. Terms with T_ij = 0 are zeroed before the product, so a -inf logit
    # (dropped from the denominator by "dedupe") adds 0 rather than 0 * -inf = nan. Every mode goes through this one
    # function, so with P = I all three compute the same value with the same kernels, bit for bit.
    log_probs = F.log_softmax(logits, dim=-1).masked_fill(targets == 0, 0.0)
    return -(targets * log_probs).sum(dim=-1).mean()


def contrastive_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor | float,
    labels: torch.Tensor | None = None,
    positives: Literal["diagonal", "labels", "dedupe"] = "labels",
) -> torch.Tensor:
    """Symmetric image-text InfoNCE, ``0.5 * (CE(S, T) + CE(S^T, T^T))``.

    Args:
        image_embeds: B x D l2-normalised image embeddings ``Z_v``.
        text_embeds: B x D l2-normalised text embeddings ``Z_t`` (row i pairs with image i).
        logit_scale: ``exp(log_scale) = 1 / tau`` (a scalar tensor when learnable; CLIP init 1 / 0.07).
        labels: optional B x C multi-hot (or B class-index) labels that define extra positives.
        positives: ``"diagonal"``, ``"labels"`` (default) or ``"dedupe"`` (see the module docstring).

    Returns:
        Scalar loss tensor (differentiable w.r.t. embeddings and ``logit_scale``).

    Raises:
        ValueError: on an unknown ``positives``, mismatched shapes or a ``labels`` size that is not B.

    Example:
        >>> z = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
        >>> loss = contrastive_loss(z, z, torch.tensor(14.3), labels=torch.eye(4))
    """
    if positives not in POSITIVES:
        raise ValueError(f"`positives` must be one of {POSITIVES}, got {positives!r}.")
    logits = contrastive_logits(image_embeds, text_embeds, logit_scale)
    batch = logits.shape[0]
    if labels is None or positives == "diagonal":
        targets = torch.eye(batch, dtype=logits.dtype, device=logits.device)
        return 0.5 * (_soft_cross_entropy(logits, targets) + _soft_cross_entropy(logits.T, targets))
    mask = positive_mask(labels.to(logits.device), batch)
    if positives == "labels":
        targets = mask.to(logits.dtype)
        targets = targets / targets.sum(dim=-1, keepdim=True)  # P is symmetric, so T^T's rows normalise the same way
        return 0.5 * (_soft_cross_entropy(logits, targets) + _soft_cross_entropy(logits.T, targets))
    # "dedupe": drop off-diagonal positives from the denominator, keep the diagonal target.
    eye = torch.eye(batch, dtype=torch.bool, device=logits.device)
    masked = logits.masked_fill(mask & ~eye, float("-inf"))
    targets = eye.to(logits.dtype)
    return 0.5 * (_soft_cross_entropy(masked, targets) + _soft_cross_entropy(masked.T, targets))


@torch.no_grad()
def contrastive_accuracy(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, labels: torch.Tensor | None = None
) -> tuple[float, float]:
    """Top-1 in-batch retrieval accuracy ``(image->text, text->image)``.

    A retrieval counts as correct when the best-scoring candidate is a positive: the paired item, or, with
    ``labels``, any item with an identical label vector.

    Args:
        image_embeds: B x D image embeddings.
        text_embeds: B x D text embeddings.
        labels: optional B x C (or B) labels defining extra positives.

    Returns:
        ``(i2t, t2i)`` accuracies in [0, 1].
    """
    logits = contrastive_logits(image_embeds, text_embeds, 1.0)
    mask = positive_mask(None if labels is None else labels.to(logits.device), logits.shape[0], logits.device)
    index = torch.arange(logits.shape[0], device=logits.device)
    i2t = mask[index, logits.argmax(dim=1)].float().mean().item()
    t2i = mask[logits.argmax(dim=0), index].float().mean().item()
    return i2t, t2i
