"""Anchor loss and FedProx proximal term."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from flare_vlp.algorithms.regularizers import anchor_loss, proximal_term


def test_anchor_loss_zero_when_equal_and_anchor_detached():
    z = torch.randn(4, 3, requires_grad=True)
    anchor = z.detach().clone().requires_grad_(True)
    assert anchor_loss(z, z, anchor, anchor).item() == 0.0
    loss = anchor_loss(z, z, anchor + 1.0, anchor)
    assert loss.item() == pytest.approx(1.0)  # MSE of a constant offset 1 (image side only)
    loss.backward()
    assert anchor.grad is None and z.grad is not None


def test_anchor_loss_shape_mismatch():
    with pytest.raises(ValueError, match="anchor_text"):
        anchor_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4))


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    model[2].bias.requires_grad_(False)  # frozen: must not count
    return model


def test_proximal_term_hand_computed_and_gradient():
    model = _model()
    global_params = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert proximal_term(model, global_params, mu=0.1).item() == 0.0
    global_params["0.weight"] = global_params["0.weight"] + 1.0  # 6 entries off by 1
    global_params["2.bias"] = global_params["2.bias"] + 5.0  # frozen, ignored
    global_params["0.bias"] = global_params["0.bias"].numpy() - 2.0  # numpy works; 2 entries off by 2
    term = proximal_term(model.named_parameters(), global_params, mu=0.1)
    assert term.item() == pytest.approx(0.05 * (6 + 8))
    term.backward()
    torch.testing.assert_close(model[0].weight.grad, torch.full((2, 3), -0.1))


def test_proximal_term_partial_overlap_and_errors():
    model = _model()
    only_head = {"2.weight": torch.zeros(1, 2)}
    expected = 0.5 * model[2].weight.detach().pow(2).sum()
    torch.testing.assert_close(proximal_term(model, only_head, mu=1.0), expected)
    assert proximal_term(model, {"nope": torch.zeros(1)}, mu=0.0).item() == 0.0
    with pytest.raises(ValueError, match="no trainable parameter"):
        proximal_term(model, {"module.0.weight": np.zeros((2, 3))}, mu=0.1)
    with pytest.raises(ValueError, match="'0.weight' has shape"):
        proximal_term(model, {"0.weight": torch.zeros(3, 2)}, mu=0.1)
    with pytest.raises(ValueError, match="`mu` must be"):
        proximal_term(model, {}, mu=-1.0)
