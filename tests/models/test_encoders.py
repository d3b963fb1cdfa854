"""Encoders: output shapes, blocks, registry errors, pretrained loading (tiny configs; MiniLM loaded once)."""

from __future__ import annotations

import pytest
import torch

from flare_vlp.models.efficientnet_lite import EfficientNetLite0Encoder, lite0_weights_path, remap_lite0_state_dict
from flare_vlp.models.registry import (
    IMAGE_ENCODERS,
    build_image_encoder,
    build_text_encoder,
    get_tokenizer_path,
    register_image_encoder,
)
from flare_vlp.models.text_encoders import minilm_path


@pytest.mark.parametrize(
    ("name", "kwargs", "out_dim"),
    [
        ("cnn", {}, 192),
        ("cnn", {"widths": (8, 16), "norm": "group"}, 16),
        ("vit_tiny", {}, 32),
        ("vit_tiny", {"pool": "mean"}, 32),
        ("resnet10", {}, 512),
        ("efficientnet_lite0", {"pretrained": False}, 1280),
    ],
)
def test_image_encoder_shapes(name, kwargs, out_dim):
    enc = build_image_encoder(name, **kwargs)
    out = enc(torch.rand(3, 1, 64, 64))
    assert out.shape == (3, out_dim) == (3, enc.out_dim)
    assert len(enc.blocks()) >= 2
    assert torch.isfinite(out).all()


def test_text_encoder_tiny_bert_mean_pools_over_mask():
    enc = build_text_encoder("tiny_bert").eval()
    ids = torch.randint(1000, 2000, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    out = enc(ids, mask)
    assert out.shape == (2, 64) and enc.out_dim == 64 and len(enc.blocks()) == 2
    ids2 = ids.clone()
    ids2[1, 3:] = 5  # padding content must not change the pooled vector
    assert torch.allclose(enc(ids2, mask)[1], out[1], atol=1e-5)


def test_minilm_loads_offline_with_its_tokenizer():
    from transformers import AutoTokenizer

    enc = build_text_encoder("minilm").eval()
    tok = AutoTokenizer.from_pretrained(get_tokenizer_path("minilm"), local_files_only=True)
    batch = tok(["no acute cardiopulmonary process", "small left pleural effusion"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = enc(batch["input_ids"], batch["attention_mask"])
    assert out.shape == (2, 384) and len(enc.blocks()) == 6
    assert get_tokenizer_path("tiny_bert") == str(minilm_path())


def test_efficientnet_lite0_loads_strictly_and_differs_from_random():
    state = remap_lite0_state_dict(torch.load(lite0_weights_path(), map_location="cpu", weights_only=True))
    assert state["_conv_stem.weight"].shape == (32, 1, 3, 3)
    assert "_blocks.6.15._project_conv.weight" in state
    torch.manual_seed(0)
    pretrained = EfficientNetLite0Encoder(pretrained=True).eval()  # strict=True inside: raises on any mismatch
    random = EfficientNetLite0Encoder(pretrained=False).eval()
    assert torch.equal(pretrained.net._conv_stem.weight, state["_conv_stem.weight"])
    assert isinstance(pretrained.net._blocks[0][0]._swish, torch.nn.ReLU6)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(pretrained(x), random(x))


def test_hf_vision_from_local_folder(tmp_path):
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32)
    ViTModel(config).save_pretrained(tmp_path)
    enc = build_image_encoder("hf_vision", path=str(tmp_path))
    assert enc(torch.rand(2, 1, 64, 64)).shape == (2, 32)
    assert len(enc.blocks()) == 2


@pytest.mark.parametrize("name", ["hf_vision", "hf_text"])
def test_hf_missing_path_names_it(name, tmp_path):
    missing = tmp_path / "no-such-model"
    build = build_image_encoder if name == "hf_vision" else build_text_encoder
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        build(name, path=str(missing))


def test_unknown_names_suggest_a_choice():
    with pytest.raises(ValueError, match=r"Unknown image encoder 'resnt10'. Did you mean 'resnet10'.*cnn"):
        build_image_encoder("resnt10")
    with pytest.raises(ValueError, match=r"Unknown text encoder 'minlm'. Did you mean 'minilm'"):
        build_text_encoder("minlm")
    with pytest.raises(TypeError, match="Bad arguments for image encoder 'cnn'"):
        build_image_encoder("cnn", nonsense=1)
    with pytest.raises(ValueError, match="`pool`"):
        build_image_encoder("vit_tiny", pool="max")


def test_register_rejects_a_duplicate_and_a_non_encoder():
    with pytest.raises(ValueError, match="already registered"):
        register_image_encoder("cnn")(lambda: None)
    register_image_encoder("_not_an_encoder")(lambda: torch.nn.Linear(2, 2))
    try:
        with pytest.raises(TypeError, match="out_dim"):
            build_image_encoder("_not_an_encoder")
    finally:
        IMAGE_ENCODERS.pop("_not_an_encoder")
