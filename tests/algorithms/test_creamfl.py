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
    loss = inter_modal_contrast(local, global_text, tau_r=0.5)
    assert loss.item() == pytest.approx(-(2 - math.log(math.exp(2) + 1)))
    loss.backward()
    assert local.grad is not None and global_text.grad is None


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
        inter_modal_contrast(torch.ones(2, 3), torch.ones(2, 3), tau_r=0.0)
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
