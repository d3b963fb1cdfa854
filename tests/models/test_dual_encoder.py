"""DualEncoder: normalised outputs, temperature clamp, parameter groups, group state dicts."""

from __future__ import annotations

import math

import pytest
import torch

from flare_vlp.models.dual_encoder import BASE_GROUPS, PARAM_GROUPS, DualEncoderOutput, build_dual_encoder


def _model(image="vit_tiny", **kwargs):
    torch.manual_seed(0)
    return build_dual_encoder(image, "tiny_bert", embed_dim=16, **kwargs)


def _batch(b=4):
    ids = torch.randint(1000, 2000, (b, 7))
    mask = torch.ones(b, 7, dtype=torch.long)
    mask[0, 4:] = 0
    return torch.rand(b, 1, 64, 64), ids, mask


@pytest.mark.parametrize("image", ["cnn", "vit_tiny"])
def test_forward_returns_normalised_embeddings(image):
    out = _model(image)(*_batch())
    assert isinstance(out, DualEncoderOutput)
    assert out.image_embeds.shape == out.text_embeds.shape == (4, 16)
    assert torch.allclose(out.image_embeds.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert torch.allclose(out.text_embeds.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert out.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_temperature_is_clamped_and_optionally_fixed():
    model = _model()
    with torch.no_grad():
        model.log_scale.fill_(math.log(1000.0))
    assert model.logit_scale.item() == pytest.approx(100.0)
    fixed = _model(learnable_temperature=False)
    assert "log_scale" not in dict(fixed.named_parameters())
    assert "log_scale" in fixed.group_state_dict("temperature")


def test_base_groups_partition_parameters_and_deep_is_a_subset():
    model = _model(deep_encoder_blocks=1)
    every = set(model.param_names("all"))
    seen: set[str] = set()
    for group in BASE_GROUPS:
        names = set(model.param_names(group))
        assert not names & seen, group
        seen |= names
    assert seen == every
    deep = set(model.param_names("deep"))
    assert {"log_scale", "image_head.weight", "text_align.fc1.weight"} <= deep
    assert any(n.startswith("image_encoder.vit.blocks.1.") for n in deep)
    assert not any(n.startswith("image_encoder.vit.blocks.0.") for n in deep)
    assert any(n.startswith("text_encoder.model.encoder.layer.1.") for n in deep)
    assert deep | (every - deep) == every
    assert set(_model().param_names("deep")).isdisjoint(_model().param_names("image_encoder"))


def test_set_trainable_and_freeze():
    model = _model()
    trainable = model.set_trainable(["image_head", "temperature"])
    assert set(trainable) == {"image_head.weight", "image_head.bias", "log_scale"}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(trainable)
    model.set_trainable("all")
    model.freeze("text_encoder")
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == set(model.param_names("text_encoder"))


def test_unknown_group_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown parameter group 'heads'.*Valid groups: image_encoder"):
        _model().param_names("heads")
    with pytest.raises(ValueError, match="deep_encoder_blocks"):
        _model(deep_encoder_blocks=5)
    assert "deep" in PARAM_GROUPS and "all" in PARAM_GROUPS


def test_group_state_dict_round_trip():
    src, dst = _model("cnn"), _model("cnn")
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.1)
    state = src.group_state_dict("deep")
    assert set(state) == set(src.param_names("deep"))  # no buffers in the deep part of a cnn without deep blocks
    dst.load_group_state_dict(state, group="deep")
    for key, value in state.items():
        assert torch.equal(dst.state_dict()[key], value)
    assert not torch.equal(dst.image_encoder.stages[0][0].weight, src.image_encoder.stages[0][0].weight)
    encoder_state = src.group_state_dict("image_encoder")
    assert any(k.endswith("running_mean") for k in encoder_state)  # BatchNorm statistics travel with the encoder


def test_load_from_another_architecture_names_the_key():
    cnn, vit = _model("cnn"), _model("vit_tiny")
    with pytest.raises(KeyError, match=r"Unexpected key 'image_encoder\.stages"):
        vit.load_group_state_dict(cnn.group_state_dict("image_encoder"))
    with pytest.raises(ValueError, match=r"Shape mismatch for 'image_align\.norm\.weight'"):
        vit.load_group_state_dict(cnn.group_state_dict("image_align"))
    state = vit.group_state_dict("image_head")
    state.pop("image_head.bias")
    with pytest.raises(KeyError, match=r"Missing key 'image_head\.bias'"):
        vit.load_group_state_dict(state, group="image_head")


def test_frozen_text_memo_survives_loads_without_text_weights_only():
    model = _model("cnn")
    model.freeze("text_encoder")
    model.text_encoder.eval()
    _, ids, mask = _batch()
    first = model.encode_text(ids, mask)
    memo = model._text_memo
    keys = [row[m.bool()].numpy().tobytes() for row, m in zip(ids, mask)]
    assert all(k in memo for k in keys)
    heads = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("text_encoder.")}
    model.load_state_dict(heads, strict=False)  # a federated round: the frozen tower never travels
    assert model._text_memo is memo
    assert torch.equal(model.encode_text(ids, mask), first)
    text = {k: torch.zeros_like(v) for k, v in model.state_dict().items() if k.startswith("text_encoder.")}
    model.load_state_dict(text, strict=False)  # new text weights: the memo must go
    assert model._text_memo is None
    assert not torch.allclose(model.encode_text(ids, mask), first)  # recomputed with the new weights
    assert model._text_memo is not memo


def test_text_memo_is_shared_only_between_identical_text_encoders():
    a, b = _model("cnn"), _model("cnn")
    for m in (a, b):
        m.freeze("text_encoder")
        m.text_encoder.eval()
    _, ids, mask = _batch()
    a.encode_text(ids, mask)
    b.share_text_memo(a)
    assert b._text_memo is a._text_memo and len(b._text_memo) >= 4
    with torch.no_grad():
        next(b.text_encoder.parameters()).add_(1.0)
    with pytest.raises(ValueError, match="differ"):
        _model("cnn").share_text_memo(b)
