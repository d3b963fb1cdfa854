"""CreamFL regularisers, the global-local cross-modal ensemble, and rounds with absent client types."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flare_vlp.algorithms.creamfl import distillation_loss, inter_modal_contrast, intra_modal_contrast
from flare_vlp.algorithms.ensemble import cross_modal_ensemble, ensemble_representations, ensemble_weights


def _reps(n=5, d=4, seed=0):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_inter_modal_contrast_hand_computed_and_detached():
    local = torch.eye(2, requires_grad=True)
    global_text = torch.eye(2, requires_grad=True)
    loss = inter_modal_contrast(local, global_text, torch.tensor([0, 1]), tau_r=0.5)
    assert loss.item() == pytest.approx(-(2 - math.log(math.exp(2) + 1)))
    loss.backward()
    assert local.grad is not None and global_text.grad is None


def test_inter_modal_contrast_scores_the_whole_bank_with_public_index_targets():
    """One local sample (public row 2) against a bank of 3: the softmax runs over all 3 rows, target 2."""
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    local = torch.tensor([[0.6, 0.8]])
    logits = torch.tensor([0.6, 0.8, 1.0]) / 0.5
    expected = -(logits[2] - torch.logsumexp(logits, 0))
    assert inter_modal_contrast(local, bank, torch.tensor([2])).item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="targets outside the bank"):
        inter_modal_contrast(local, bank, torch.tensor([3]))


def test_intra_modal_contrast_hand_computed():
    local = torch.tensor([[1.0, 0.0]])
    glob = torch.tensor([[1.0, 0.0]])
    old = torch.tensor([[0.0, 1.0]])
    expected = -(2 - math.log(math.exp(2) + 1))  # logits [1, 0] / 0.5
    assert intra_modal_contrast(local, glob, old).item() == pytest.approx(expected)
    assert intra_modal_contrast(local, old, glob).item() > expected  # swapping positive/negative costs more


def test_distillation_and_arg_checks():
    assert distillation_loss(torch.ones(2, 3), torch.zeros(2, 3)).item() == 1.0
    with pytest.raises(ValueError, match="shapes differ"):
        distillation_loss(torch.ones(2, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="`tau_r` must be > 0"):
        inter_modal_contrast(torch.ones(2, 3), torch.ones(2, 3), torch.tensor([0, 1]), tau_r=0.0)
    with pytest.raises(ValueError, match="B x D local and N x D bank"):
        inter_modal_contrast(torch.ones(2, 3), torch.ones(4, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="old_local"):
        intra_modal_contrast(torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 4))


def test_ensemble_weights_match_formula():
    global_text = _reps(seed=1)
    clients = [_reps(seed=s) for s in (2, 3, 4)]
    alpha = ensemble_weights(clients, global_text)
    sims = torch.stack(clients) @ global_text.T  # K x N x N
    scores = torch.diagonal(sims, dim1=1, dim2=2) - torch.logsumexp(sims, dim=-1)
    torch.testing.assert_close(alpha, torch.softmax(scores, dim=0))
    torch.testing.assert_close(alpha.sum(dim=0), torch.ones(5))
    # chunking changes nothing
    torch.testing.assert_close(ensemble_weights(torch.stack(clients), global_text, chunk_size=2), alpha)
    expected = (alpha[..., None] * torch.stack(clients)).sum(0)
    torch.testing.assert_close(ensemble_representations(clients, global_text), expected)


def test_ensemble_weights_and_targets_hand_computed():
    """Two clients, two public samples, e1/e2 representations; worked by hand.

    Client A retrieves its own pair (a_j = t_j), client B the other one (b_0 = t_1, b_1 = t_0):
    s_A0 = <a_0, t_0> - log(e^1 + e^0) = 1 - log(1 + e); s_B0 = 0 - log(1 + e); alpha_A0 = e / (1 + e) = 0.7311,
    alpha_B0 = 1 / (1 + e) = 0.2689; I_0 = 0.7311 * e1 + 0.2689 * e2 (sample 1 mirrors it).
    """
    global_text = np.eye(2, dtype=np.float32)
    client_a = np.eye(2, dtype=np.float32)
    client_b = np.eye(2, dtype=np.float32)[[1, 0]]
    alpha = ensemble_weights([client_a, client_b], global_text)
    e = math.e
    np.testing.assert_allclose(alpha, [[e / (1 + e)] * 2, [1 / (1 + e)] * 2], rtol=1e-6)
    targets = ensemble_representations([client_a, client_b], global_text)
    np.testing.assert_allclose(targets, [[e / (1 + e), 1 / (1 + e)], [1 / (1 + e), e / (1 + e)]], rtol=1e-6)
    # three clients, one of them a copy of A: the per-sample softmax splits A's share, 2e / (2e + 1)
    alpha3 = ensemble_weights([client_a, client_b, client_a], global_text)
    np.testing.assert_allclose(alpha3[0] + alpha3[2], [2 * e / (2 * e + 1)] * 2, rtol=1e-6)


def test_ensemble_prefers_the_client_that_retrieves_its_pair():
    global_text = torch.eye(3) * 3
    good = torch.eye(3)
    bad = torch.eye(3)[[1, 2, 0]]
    alpha = ensemble_weights([good, bad], global_text)
    assert torch.all(alpha[0] > 0.9)


def test_single_client_and_numpy_inputs():
    global_text = _reps(seed=1)
    only = _reps(seed=2)
    torch.testing.assert_close(ensemble_representations([only], global_text), only)
    out = ensemble_representations([only.numpy()], global_text.numpy())
    assert isinstance(out, np.ndarray) and np.allclose(out, only.numpy(), atol=1e-6)


def test_absent_client_types_still_aggregate():
    global_image, global_text = _reps(seed=10), _reps(seed=11)
    # this round only image-only clients arrived: no text side at all
    targets = cross_modal_ensemble({"img_a": _reps(seed=1), "img_b": _reps(seed=2)}, {}, global_image, global_text)
    assert targets.text is None and targets.text_clients == ()
    assert targets.image.shape == (5, 4) and targets.image_clients == ("img_a", "img_b")
    # an image-text client plus a text-only client; the image side has just one contributor
    pair, text_only = _reps(seed=3), _reps(seed=4)
    targets = cross_modal_ensemble({"pair": pair}, {"pair": _reps(seed=5), "txt": text_only}, global_image, global_text)
    torch.testing.assert_close(targets.image, pair)
    assert targets.text.shape == (5, 4) and targets.text_clients == ("pair", "txt")
    assert cross_modal_ensemble({}, {}, global_image, global_text).image is None


def test_ensemble_errors_name_the_client():
    global_text = _reps()
    with pytest.raises(ValueError, match="`client_reps` is empty"):
        ensemble_weights([], global_text)
    with pytest.raises(ValueError, match="client_reps\\[1\\] has shape"):
        ensemble_weights([_reps(), _reps(n=4)], global_text)
    with pytest.raises(ValueError, match="client 'txt'"):
        cross_modal_ensemble({}, {"txt": _reps(d=3)}, global_text, global_text)
