"""The fine-tuned classifier of FedOPAL and its baselines: a frozen image tower with LoRA adapters and a linear
multi-label head, built identically (same seed, same adapter init) at every site and at the server.

The image tower is the experiment's ``model.image_encoder`` (:func:`flare_vlp.experiments.builders.build_model`):
the packaged ImageNet EfficientNet-Lite0 (frozen, feature-cached early blocks), MONAI's ViT (``vit_tiny``), a VLP
run's tower, a Hugging Face ViT; LoRA goes where :func:`default_targets` says unless the config names targets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from flare_vlp.methods import site_store
from flare_vlp.models.lora import add_lora

__all__ = ["FindingClassifier", "build_classifier", "load_init", "default_targets", "shared_keys", "fingerprint"]


class FindingClassifier(nn.Module):
    """``images -> logits`` over the findings: the dual encoder's image tower features, then a linear head."""

    def __init__(self, dual: nn.Module, n_labels: int):
        super().__init__()
        self.encoder = dual
        self.head = nn.Linear(int(dual.image_encoder.out_dim), n_labels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.image_encoder(images))


def default_targets(image_encoder: nn.Module) -> list[str]:
    """Where LoRA goes by default, by what the tower has (full module names, so frozen blocks are never adapted):

    * a Hugging Face ViT: its attention ``query`` / ``value`` linears (as methods.md §2 says; ``q_proj`` /
      ``v_proj`` in newer transformers);
    * MONAI's ViT: the fused ``qkv`` linear (q, k and v together: one adapter on the fused projection);
    * a CNN (EfficientNet-Lite0): the 1x1 projection convolutions (``_expand_conv`` / ``_project_conv`` /
      ``_conv_head``) of the blocks above the frozen, feature-cached trunk; a small CNN: its last convolution.
    """
    names = {n: m for n, m in image_encoder.named_modules()}
    leaf = {n.rsplit(".", 1)[-1] for n in names}
    for pair in (["query", "value"], ["q_proj", "v_proj"]):  # transformers >= 4.5x names them q_proj / v_proj
        if set(pair) <= leaf:
            return pair
    if "qkv" in leaf:
        return ["qkv"]
    convs = [n for n, m in names.items() if isinstance(m, nn.Conv2d) and m.groups == 1 and m.weight.requires_grad]
    pointwise = [n for n in convs if names[n].kernel_size == (1, 1)]
    picked = pointwise or convs[-1:]
    if not picked:
        raise ValueError(f"no trainable convolution or attention projection in {type(image_encoder).__name__}")
    return [f"image_encoder.{n}" for n in picked]


def fingerprint(cfg_model: object, options: dict, n_labels: int) -> str:
    """A short hash of the model config, the LoRA settings and the label count: a site-store entry of another
    model is refused, not loaded."""
    keys = ("variant", "targets", "rank", "alpha", "init_from")
    return site_store.fingerprint([cfg_model.__dict__, {k: options.get(k) for k in keys}, n_labels])


def load_init(dual: nn.Module, init_from: str) -> nn.Module:
    """Load the dual encoder weights of a VLP run (its folder or a ``.safetensors`` file) into ``dual``, when
    ``init_from`` names one.

    Raises:
        FileNotFoundError: no such run folder / file (named).
    """
    from pathlib import Path

    from flare_vlp.experiments.builders import load_model_weights

    if not init_from:
        return dual
    path = Path(init_from).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"`init_from` {path}: no such VLP run folder or .safetensors file")
    if path.is_dir():
        path = path / "models" / "global.safetensors"
    return load_model_weights(dual, path)


def build_classifier(dual: nn.Module, n_labels: int, options: dict, seed: int) -> tuple[FindingClassifier, list[str]]:
    """Freeze ``dual``, add the variant's adapters and a head, and set what trains; returns the model and the
    adapted module names. Seeded, so every site (and the server) starts from identical adapters and head."""
    from flare_vlp.methods.lora_ft.config import VARIANTS

    variant = VARIANTS[options["variant"]]
    load_init(dual, options.get("init_from", ""))
    trainable_tower = {n for n, p in dual.image_encoder.named_parameters() if p.requires_grad}
    targets = list(options.get("targets") or default_targets(dual.image_encoder)) if variant["adapters"] else []
    for p in dual.parameters():
        p.requires_grad_(False)
    torch.manual_seed(seed)
    model = FindingClassifier(dual, n_labels)
    adapted: list[str] = []
    if variant["adapters"]:
        adapted = add_lora(
            dual, targets, r=int(options["rank"]), alpha=float(options["alpha"]),
            adapter_names=variant["adapters"], towers=("image",),
        )  # fmt: skip
        if "A" in variant["frozen"]:  # FFA-LoRA: A stays at the shared seeded init
            for name, p in dual.named_parameters():
                if ".lora_A.global." in name:
                    p.requires_grad_(False)
    else:  # full fine-tuning: the tower's own trainable part (above any frozen, cached trunk)
        for name, p in dual.image_encoder.named_parameters():
            p.requires_grad_(name in trainable_tower)
    for p in dual.text_encoder.parameters():
        p.requires_grad_(False)
    return model, adapted


def shared_keys(model: FindingClassifier, options: dict) -> list[str]:
    """State-dict keys of the tensors the variant sends: the shared factors of the ``global`` adapter, or every
    trainable tensor (full fine-tuning). Full keys, adapter name included, so a personal tensor can never pass for
    a global one in the outgoing check."""
    from flare_vlp.methods.lora_ft.config import VARIANTS

    shared: Sequence[str] = VARIANTS[options["variant"]]["shared"]
    if "full" in shared:
        return sorted(n for n, p in model.named_parameters() if p.requires_grad)
    return sorted(n for n in model.state_dict() if any(f".lora_{f}.global." in n for f in shared))


def shared_state(model: FindingClassifier, options: dict) -> dict[str, torch.Tensor]:
    """The tensors :func:`shared_keys` names, detached copies."""
    state = model.state_dict()
    return {k: state[k].detach().clone() for k in shared_keys(model, options)}


def load_shared_state(model: FindingClassifier, options: dict, state: dict[str, torch.Tensor]) -> None:
    """Load received shared tensors; their keys must be exactly :func:`shared_keys` (else a ``KeyError`` naming
    them) and their shapes the model's (else torch's ``RuntimeError`` naming the key)."""
    expected = set(shared_keys(model, options))
    if set(state) != expected:
        extra, missing = sorted(set(state) - expected), sorted(expected - set(state))
        raise KeyError(
            f"received shared tensors differ from this model's: unexpected {extra[:3]}, missing {missing[:3]}"
        )
    model.load_state_dict(state, strict=False)
