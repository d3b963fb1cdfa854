"""FedOPAL orthogonality regularisers: hand-computed values, the r x r shortcut, gradients."""

from __future__ import annotations

import pytest
import torch

from flare_vlp.algorithms.orthogonality import (
    LoraFactors,
    orthogonality_representations,
    orthogonality_subspace,
    orthogonality_weights,
)


def _random_layer(d_out=5, d_in=4, r_g=2, r_p=3, seed=0) -> LoraFactors:
    gen = torch.Generator().manual_seed(seed)
    return LoraFactors(
        torch.randn(r_g, d_in, generator=gen),
        torch.randn(d_out, r_g, generator=gen),
        torch.randn(r_p, d_in, generator=gen),
        torch.randn(d_out, r_p, generator=gen),
    )


def test_weights_identical_is_one_and_orthogonal_is_zero():
    a, b = torch.randn(2, 4), torch.randn(5, 2)
    assert orthogonality_weights([(a, b, a, b)]).item() == pytest.approx(1.0, abs=1e-6)
    assert orthogonality_weights([(a, b, a, b)] * 3).item() == pytest.approx(3.0, abs=1e-5)
    assert orthogonality_weights([(a, b, a, b)] * 3, reduction="mean").item() == pytest.approx(1.0, abs=1e-6)
    e = torch.eye(4)
    orthogonal = (e[:2], torch.randn(5, 2), e[2:], torch.randn(5, 2))  # disjoint input subspaces
    assert orthogonality_weights([orthogonal]).item() == pytest.approx(0.0, abs=1e-12)
    assert orthogonality_subspace([orthogonal]).item() == 0.0


def test_weights_matches_dense_formula_and_scale_invariance():
    layer = _random_layer()
    dw_g = layer.b_global @ layer.a_global
    dw_p = layer.b_personal @ layer.a_personal
    dense = (dw_g * dw_p).sum() ** 2 / (dw_g.pow(2).sum() * dw_p.pow(2).sum())
    torch.testing.assert_close(orthogonality_weights([layer]), dense)
    scaled = LoraFactors(layer.a_global * 3, layer.b_global, layer.a_personal, layer.b_personal * 0.1)
    torch.testing.assert_close(orthogonality_weights([scaled]), dense)


def test_zero_b_init_is_finite_with_finite_gradients():
    layer = _random_layer()
    b_g = torch.zeros_like(layer.b_global, requires_grad=True)
    value = orthogonality_weights([(layer.a_global, b_g, layer.a_personal, layer.b_personal)])
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(b_g.grad).all()


def test_subspace_hand_computed():
    a_g = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    a_p = torch.tensor([[1.0, 2.0, 3.0]])
    layer = (a_g, torch.zeros(4, 2), a_p, torch.zeros(4, 1))
    assert orthogonality_subspace([layer]).item() == pytest.approx(1.0 + 4.0)


def test_representations_normalised_and_raw():
    h = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    g = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    assert orthogonality_representations(h, g).item() == 0.0  # different samples carry the features
    assert orthogonality_representations(h, h).item() == pytest.approx(1.0)
    assert orthogonality_representations(2 * h, 3 * h, normalize=False).item() == pytest.approx(36.0)
    assert orthogonality_representations(torch.ones(2, 3, 4), torch.ones(2, 3, 5)).item() == pytest.approx(1.0)


def test_gradients_flow_to_all_factors():
    layer = LoraFactors(*(t.clone().requires_grad_(True) for t in _random_layer()))
    (orthogonality_weights([layer]) + orthogonality_subspace([layer])).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in layer)
    h_g = torch.randn(6, 4, requires_grad=True)
    h_p = torch.randn(6, 3, requires_grad=True)
    orthogonality_representations(h_g, h_p).backward()
    assert h_g.grad.abs().sum() > 0 and h_p.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: orthogonality_weights([]), "`layers` is empty"),
        (
            lambda: orthogonality_weights([(torch.ones(2, 4), torch.ones(5, 3), torch.ones(2, 4), torch.ones(5, 2))]),
            "layer 0 has inconsistent",
        ),
        (lambda: orthogonality_subspace([(torch.ones(2, 4), torch.ones(5, 2))]), "must be \\(a_global"),
        (lambda: orthogonality_weights([_random_layer()], reduction="max"), "`reduction` must be"),
        (lambda: orthogonality_representations(torch.ones(3, 2), torch.ones(4, 2)), "same rows"),
    ],
)
def test_ill_args(call, match):
    with pytest.raises(ValueError, match=match):
        call()
