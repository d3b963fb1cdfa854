"""Image-text contrastive loss: CLIP reference values, label-aware positives, dedupe, gradients, bad arguments."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from flare_vlp.algorithms.contrastive import contrastive_accuracy, contrastive_loss, positive_mask


def _embeds(batch: int = 6, dim: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(batch, dim, generator=gen), dim=-1)
    text = F.normalize(torch.randn(batch, dim, generator=gen), dim=-1)
    return image, text


def test_diagonal_matches_clip_formula():
    image, text = _embeds()
    scale = torch.tensor(1 / 0.07)
    logits = scale * image @ text.T
    target = torch.arange(6)
    expected = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    torch.testing.assert_close(contrastive_loss(image, text, scale, positives="diagonal"), expected)
    # labels=None falls back to the diagonal in every mode
    for mode in ("labels", "dedupe"):
        torch.testing.assert_close(contrastive_loss(image, text, scale, positives=mode), expected)


def test_distinct_labels_equal_diagonal_exactly():
    image, text = _embeds()
    labels = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [0, 0, 0]])
    diagonal = contrastive_loss(image, text, torch.tensor(10.0), positives="diagonal")
    # Bit for bit: every mode runs the same ops (one soft cross-entropy) on the same logits, so no CPU can differ.
    assert torch.equal(contrastive_loss(image, text, torch.tensor(10.0), labels=labels, positives="labels"), diagonal)
    assert torch.equal(contrastive_loss(image, text, torch.tensor(10.0), labels=labels, positives="dedupe"), diagonal)


def test_labels_mode_hand_computed():
    # Two identical label vectors: rows 0 and 1 each target {0, 1} with 1/2.
    image = torch.eye(3)
    text = torch.eye(3)
    labels = torch.tensor([[1, 0], [1, 0], [0, 1]])
    scale = 2.0
    loss = contrastive_loss(image, text, scale, labels=labels, positives="labels")
    log_z = math.log(math.exp(2) + 2)
    row01 = -(0.5 * (2 - log_z) + 0.5 * (0 - log_z))
    row2 = -(2 - log_z)
    assert loss.item() == pytest.approx((2 * row01 + row2) / 3, rel=1e-6)


def test_dedupe_removes_duplicates_from_denominator():
    image = torch.eye(3)
    text = torch.eye(3)
    labels = torch.tensor([0, 0, 1])
    loss = contrastive_loss(image, text, 2.0, labels=labels, positives="dedupe")
    rows01 = -(2 - math.log(math.exp(2) + 1))  # the duplicate is masked, one negative remains
    row2 = -(2 - math.log(math.exp(2) + 2))
    assert loss.item() == pytest.approx((2 * rows01 + row2) / 3, rel=1e-6)


def test_gradients_reach_embeddings_and_learnable_scale():
    image, text = _embeds()
    image.requires_grad_(True)
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    labels = torch.tensor([0, 0, 1, 2, 2, 3])
    for mode in ("diagonal", "labels", "dedupe"):
        loss = contrastive_loss(image, text, log_scale.exp(), labels=labels, positives=mode)
        image.grad, log_scale.grad = None, None
        loss.backward()
        assert torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0
        assert log_scale.grad is not None and torch.isfinite(log_scale.grad)


def test_positive_mask_and_accuracy():
    labels = torch.tensor([[1, 0], [1, 0], [0, 1]])
    assert positive_mask(labels, 3).tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    z = torch.eye(3)
    assert contrastive_accuracy(z, z) == (1.0, 1.0)
    swapped = z[[1, 0, 2]]
    assert contrastive_accuracy(z, swapped) == pytest.approx((1 / 3, 1 / 3))
    assert contrastive_accuracy(z, swapped, labels=labels) == (1.0, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"positives": "diag"}, "`positives` must be one of"),
        ({"labels": torch.zeros(5, 2)}, "`labels` must be B or B x C with B = 4"),
        ({"text_embeds": torch.zeros(4, 3)}, "must both be B x D"),
    ],
)
def test_ill_args(kwargs, match):
    args = {"image_embeds": torch.zeros(4, 2), "text_embeds": torch.zeros(4, 2), "logit_scale": 1.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        contrastive_loss(**args)
