"""Retrieval R@K against hand-computed rankings, and the chance level against brute-force enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from flare_vlp.evaluation import chance_recall_at_k, recall_at_k


def test_exact_hits_hand_computed():
    img = torch.eye(3)
    txt = torch.tensor([[1.0, 0, 0], [0, 0.2, 1.0], [0, 1.0, 0.5]])  # pairs 1 and 2 rank second
    out = recall_at_k(img, txt, None, ks=(1, 2), hit="exact")
    assert out["i2t_R@1"] == pytest.approx(1 / 3) and out["t2i_R@1"] == pytest.approx(1 / 3)
    assert out["i2t_R@2"] == pytest.approx(1.0)
    assert out["chance_R@1"] == pytest.approx(1 / 3) and out["chance_R@2"] == pytest.approx(2 / 3)


def test_label_hits_count_duplicates():
    img = torch.eye(3)
    txt = torch.tensor([[0, 1.0, 0], [1.0, 0, 0], [0, 0, 1.0]])  # 0 and 1 swapped, but they share labels
    labels = np.array([[1, 0], [1, 0], [0, 1]])
    assert recall_at_k(img, txt, labels, ks=(1,), hit="labels")["i2t_R@1"] == pytest.approx(1.0)
    assert recall_at_k(img, txt, labels, ks=(1,), hit="exact")["i2t_R@1"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_chance_matches_enumeration(k):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(6, 2))
    match = (labels[:, None, :] == labels[None, :, :]).all(-1)
    n = len(labels)
    brute = np.mean([np.mean([match[q, list(c)].any() for c in itertools.combinations(range(n), k)]) for q in range(n)])
    assert chance_recall_at_k(match, k) == pytest.approx(brute)


def test_unknown_hit_rule():
    with pytest.raises(ValueError, match="unknown retrieval hit rule 'same'"):
        recall_at_k(torch.eye(2), torch.eye(2), np.eye(2), hit="same")
