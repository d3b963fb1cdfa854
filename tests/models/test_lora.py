"""LoRA: global + personal adapters on the same layers (FedOPAL), adapter-only state dicts, target errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flare_vlp.models.dual_encoder import build_dual_encoder
from flare_vlp.models.lora import (
    adapter_state_dict,
    add_lora,
    list_adapters,
    load_adapter_state_dict,
    lora_factor_pairs,
)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))


def test_global_plus_personal_math_and_both_train():
    model = _mlp()
    w0, b0 = model[0].weight.detach().clone(), model[0].bias.detach().clone()
    assert add_lora(model, "0", r=2, alpha=4, adapter_names=("global", "personal")) == ["0"]
    assert list_adapters(model) == ["global", "personal"]
    (a_g, b_g), (a_p, b_p) = lora_factor_pairs(model, "global")[0], lora_factor_pairs(model, "personal")[0]
    assert a_g.shape == (2, 8) and b_g.shape == (6, 2)
    with torch.no_grad():
        for b in (b_g, b_p):  # peft starts B at zero; make the update visible
            b.normal_()
    x = torch.randn(5, 8)
    w = w0 + (4 / 2) * (b_g @ a_g + b_p @ a_p)  # W = W0 + (alpha/r)(B_g A_g + B_p A_p)
    assert torch.allclose(model[0](x), x @ w.T + b0, atol=1e-5)
    model(x).sum().backward()
    for p in (a_g, b_g, a_p, b_p):
        assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0
    assert not model[0].base_layer.weight.requires_grad and not model[2].weight.requires_grad


def test_adapter_state_dict_round_trip_between_sites():
    site_a, site_b = _mlp(), _mlp()
    for m in (site_a, site_b):
        add_lora(m, ["0", "2"], r=2, adapter_names=("global", "personal"))
    with torch.no_grad():
        for _, b in lora_factor_pairs(site_a, "global"):
            b.normal_()
    state = adapter_state_dict(site_a, "global")
    assert set(state) == {"0.lora_A.weight", "0.lora_B.weight", "2.lora_A.weight", "2.lora_B.weight"}
    personal_before = adapter_state_dict(site_b, "personal")
    load_adapter_state_dict(site_b, state, "global")
    x = torch.randn(3, 8)
    for key, value in adapter_state_dict(site_b, "global").items():
        assert torch.equal(value, state[key])
    for key, value in adapter_state_dict(site_b, "personal").items():  # the personal pair stays untouched
        assert torch.equal(value, personal_before[key])
    assert torch.allclose(
        site_a[0].lora_B["global"](site_a[0].lora_A["global"](x)),
        site_b[0].lora_B["global"](site_b[0].lora_A["global"](x)),
    )


def test_adapter_state_dict_errors():
    model = _mlp()
    add_lora(model, "0", r=2)
    state = adapter_state_dict(model)
    with pytest.raises(ValueError, match=r"No LoRA adapter 'personal'.*global"):
        adapter_state_dict(model, "personal")
    with pytest.raises(KeyError, match=r"Unexpected key '2\.lora_A\.weight'"):
        load_adapter_state_dict(model, {**state, "2.lora_A.weight": torch.zeros(2, 6)})
    with pytest.raises(ValueError, match=r"Shape mismatch for LoRA key '0\.lora_A\.weight'"):
        load_adapter_state_dict(model, {**state, "0.lora_A.weight": torch.zeros(4, 8)})
    with pytest.raises(ValueError, match="already exists"):
        add_lora(model, "0")


def test_target_matching_nothing_names_it():
    with pytest.raises(ValueError, match=r"LoRA target 'query' matches no nn.Linear / nn.Conv2d.*include: 0, 2"):
        add_lora(_mlp(), ["0", "query"])


def test_dual_encoder_lora_on_both_towers_keeps_heads_trainable():
    torch.manual_seed(0)
    model = build_dual_encoder("vit_tiny", "tiny_bert", embed_dim=16)
    images, ids, mask = torch.rand(2, 1, 64, 64), torch.randint(1000, 2000, (2, 5)), torch.ones(2, 5, dtype=int)
    before = model(images, ids, mask)
    adapted = add_lora(model, ["qkv", "query", "value"], r=4, adapter_names=("global", "personal"))
    assert "image_encoder.vit.blocks.0.attn.qkv" in adapted
    assert "text_encoder.model.encoder.layer.1.attention.self.value" in adapted
    after = model(images, ids, mask)
    assert torch.allclose(before.image_embeds, after.image_embeds, atol=1e-6)  # B = 0 at init
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(model.param_names("lora")) | set(model.param_names("deep"))
    assert len(lora_factor_pairs(model, "personal")) == 6
    with pytest.raises(ValueError, match=r"LoRA target 'qkv' matches no nn.Linear / nn.Conv2d in text_encoder"):
        add_lora(build_dual_encoder("vit_tiny", "tiny_bert"), "qkv", towers=("text",))


@pytest.mark.parametrize("image_encoder", ["cnn", "vit_tiny"])
def test_adapter_state_dict_is_peft_and_names_the_lora_payload_tensors(image_encoder):
    """On the classifiers the LoRA methods build (the tiny CNN's Conv2d LoRA, MONAI ViT's fused qkv), one adapter's
    peft state dict holds exactly the tensors the method's payload sends under full keys (adapter name included)."""
    from peft import get_peft_model_state_dict

    from flare_vlp.config import load_config
    from flare_vlp.experiments.builders import build_model
    from flare_vlp.methods.lora_ft.model import build_classifier, shared_keys

    cfg = load_config("tiny", {"model": {"image_encoder": image_encoder}})
    options = {"variant": "fedopal", "rank": 2, "alpha": 4.0, "targets": []}
    model, _ = build_classifier(build_model(cfg.model, seed=0), 3, options, 0)
    state = adapter_state_dict(model.encoder, "global")
    peft_state = get_peft_model_state_dict(model.encoder, adapter_name="global", save_embedding_layers=False)
    assert state.keys() == peft_state.keys()
    assert {f"encoder.{k}".replace(".weight", ".global.weight") for k in state} == set(shared_keys(model, options))
    personal = adapter_state_dict(model.encoder, "personal")
    assert personal.keys() == state.keys()
    load_adapter_state_dict(model.encoder, {k: v + 1 for k, v in state.items()}, "global")
    for key, value in adapter_state_dict(model.encoder, "global").items():
        assert torch.equal(value, state[key] + 1)
    for key, value in adapter_state_dict(model.encoder, "personal").items():  # the personal pair stays untouched
        assert torch.equal(value, personal[key])
