"""FedDRA's anchored objective on a real tiny dual encoder: zero anchor term while local == global, growing after
local steps, anchors never trained, the frozen text tower shared rather than copied."""

from __future__ import annotations

import pytest
import torch

from flare_vlp.config import load_config
from flare_vlp.experiments.builders import build_model
from flare_vlp.training import train_loop
from flare_vlp.training.loop import set_train_mode
from flare_vlp.training.objectives import AnchoredObjective, ContrastiveObjective


def _batch(cfg, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = cfg.data.image_size
    return {
        "image": torch.rand(n, 1, size, size, generator=g),
        "input_ids": torch.randint(5, 100, (n, 12), generator=g),
        "attention_mask": torch.ones(n, 12, dtype=torch.long),
        "labels": torch.randint(0, 2, (n, 5), generator=g).float(),
    }


@pytest.fixture(scope="module")
def cfg():
    return load_config("tiny")


@pytest.mark.parametrize("train_mode", [True, False])
def test_anchor_term_is_zero_when_the_local_model_equals_the_global_one(cfg, train_mode):
    model = build_model(cfg.model, seed=0)
    if train_mode:  # batch-statistics BatchNorm; the tiny BERT's dropout would add noise, so freeze it (as presets do)
        model.text_encoder.requires_grad_(False)
    objective = AnchoredObjective(model, ContrastiveObjective(), weight=1.0)
    set_train_mode(model) if train_mode else model.eval()
    loss, logs = objective(model, _batch(cfg))
    assert logs["anchor"] == 0.0
    assert loss.item() == pytest.approx(logs["ita"])


def test_anchor_term_grows_with_local_training_and_anchors_stay_fixed(cfg):
    model = build_model(cfg.model, seed=0)
    objective = AnchoredObjective(model, ContrastiveObjective(), weight=1.0)
    before = {k: v.clone() for k, v in objective.anchor.state_dict().items()}
    batches = [_batch(cfg, seed=i) for i in range(4)]
    train = cfg.train.__class__(**{**cfg.train.__dict__, "lr": 1e-2, "bn_recalibration_batches": 0})
    result = train_loop(model, batches, train, objective=objective, steps=4, seed=0)
    assert result.last_logs["anchor"] > 0
    after = objective.anchor.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "running" not in k and "num_batches" not in k)
    assert not any(p.requires_grad for p in objective.anchor.parameters())


def test_frozen_text_tower_is_shared_not_copied(cfg):
    model = build_model(cfg.model, seed=0)
    model.text_encoder.requires_grad_(False)
    objective = AnchoredObjective(model, ContrastiveObjective(), weight=0.5)
    assert objective.anchor.text_encoder is model.text_encoder
    assert objective.anchor.image_encoder is not model.image_encoder


def test_weight_must_be_positive(cfg):
    with pytest.raises(ValueError, match="anchor weight"):
        AnchoredObjective(build_model(cfg.model, seed=0), ContrastiveObjective(), weight=0.0)
