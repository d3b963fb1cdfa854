"""AUC helpers, zero-shot scoring and the linear probe on hand-made features."""

from __future__ import annotations

import math

import numpy as np
import torch

from flare_vlp.evaluation import fit_linear_probe, per_finding_auc, probe_scores, safe_auc, zero_shot_auc
from flare_vlp.evaluation.prompts import prompts_for


def test_safe_auc_single_class_is_nan_and_macro_skips_it():
    assert math.isnan(safe_auc(np.zeros(4), np.arange(4)))
    labels = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    out = per_finding_auc(labels, np.array([[0.9, 0], [0.1, 0], [0.8, 0], [0.2, 0]]), ["a", "b"])
    assert out["a"] == 1.0 and math.isnan(out["b"]) and out["macro"] == 1.0


def test_zero_shot_with_aligned_directions_is_perfect():
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    emb = torch.tensor(labels, dtype=torch.float32) + 0.1  # scores are dot products with the prompt directions
    directions = torch.eye(2)
    out = zero_shot_auc(emb, labels, directions, ["opacity", "nodule"])
    assert out["opacity"] == 1.0 and out["nodule"] == 1.0


def test_prompts_have_positive_and_negative_families():
    pos, neg = prompts_for("effusion")
    assert any("pleural effusion" in p for p in pos) and all(n.startswith("no") or "no " in n for n in neg)
    pos, neg = prompts_for("support_devices")
    assert pos and neg
    assert prompts_for("some_new_finding")[0][0] == "some new finding."


def test_linear_probe_separates_linear_features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    y = np.stack([(x[:, 0] > 0), (x[:, 1] + 0.1 * rng.normal(size=200) > 0), np.zeros(200)], 1).astype(int)
    models = fit_linear_probe(x[:150], y[:150])
    scores = probe_scores(models, x[150:])
    out = per_finding_auc(y[150:], scores, ["a", "b", "c"])
    assert out["a"] > 0.95 and out["b"] > 0.9 and math.isnan(out["c"])
