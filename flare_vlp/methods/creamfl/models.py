"""CreamFL's client models: per role its own architecture (smaller than the server's), plus a findings head for the
single-modality roles.

The server model is the experiment's dual encoder (``model:`` of the job's config). A client's model comes from its
role (:data:`CLIENT_MODELS`), or from the ``model`` option a job gives the role (a full ``model:`` section, not a
merge over the server's: the server's encoder kwargs mean nothing to another encoder). Every client embeds into the
server's ``embed_dim`` unless its option says otherwise (the server then refuses its representations, by name).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flare_vlp.config import ExperimentConfig, ModelConfig, config_from_dict
from flare_vlp.data.keys import SampleKey
from flare_vlp.models import DualEncoder

__all__ = ["CLIENT_MODELS", "ROLE_MODALITIES", "RoleModel", "FindingsObjective", "client_model_config"]

ROLE_MODALITIES: dict[str, tuple[str, ...]] = {"image": ("image",), "text": ("text",), "image_text": ("image", "text")}
"""CreamFL's site roles and the modalities each has (and sends representations of)."""

_TINY_TEXT = {"text_encoder": "tiny_bert", "text_kwargs": {"num_layers": 1, "hidden_size": 32, "num_heads": 2}}
CLIENT_MODELS: dict[str, dict[str, Any]] = {
    # image-only: the packaged ImageNet EfficientNet-Lite0 as a frozen feature extractor (pooled features, cached)
    # under a trained linear projection (no align block): a site with little compute; its text tower is a stub
    # never trained, used or sent
    "image": {"image_encoder": "efficientnet_lite0", "image_kwargs": {"frozen_blocks": 9}, "align_block": False,
              **_TINY_TEXT, "frozen": []},
    # text-only: a 2-layer tiny BERT (MiniLM vocabulary) from scratch; the image tower is a never-used stub
    "text": {
        "image_encoder": "cnn", "image_kwargs": {"widths": [8]}, "text_encoder": "tiny_bert",
        "text_kwargs": {"num_layers": 2, "hidden_size": 64, "num_heads": 2}, "frozen": [],
    },
    # image-text: a small BatchNorm CNN + a 1-layer tiny BERT from scratch, contrastive. Not a tiny ViT: from
    # scratch on SynthCXR it sits on the ln(B) plateau for ~100-120 steps (docs/benchmarks.md, "Why the CreamFL
    # clients did not learn"); a ViT stays available through the role option ``model``.
    "image_text": {"image_encoder": "cnn", "image_kwargs": {"widths": [16, 32, 64, 128]}, **_TINY_TEXT, "frozen": []},
}  # fmt: skip
"""Default client architecture per role (a job overrides it with the role option ``model``)."""

_TOWER_GROUPS = {"image": ("image_encoder", "image_align", "image_head"), "text": ("text_encoder", "text_align",
                 "text_head")}  # fmt: skip


def client_model_config(cfg: ExperimentConfig, role: str, model: Mapping | None = None) -> ModelConfig:
    """The ``model:`` section of a ``role`` client: ``model`` (a full section) or the role's default, with the
    server's ``embed_dim`` unless given, and a ViT's ``img_size`` / an EfficientNet's ``image_size`` set to
    ``data.image_size``.

    Raises:
        ValueError: an unknown role. ConfigError: a bad key of ``model`` (named as ``role option model.<key>``).
    """
    if role not in ROLE_MODALITIES:
        raise ValueError(f"unknown CreamFL role {role!r}; roles: {sorted(ROLE_MODALITIES)}")
    values = dict(CLIENT_MODELS[role] if model is None else model)
    values.setdefault("embed_dim", cfg.model.embed_dim)
    encoder = str(values.get("image_encoder", ""))
    size_key = "img_size" if encoder.startswith("vit") else "image_size" if encoder.startswith("efficientnet") else None
    if size_key:  # these encoders are built for one input size: the data's
        values["image_kwargs"] = {size_key: cfg.data.image_size, **dict(values.get("image_kwargs") or {})}
    return config_from_dict(ModelConfig, values, prefix=f"role {role!r} option model.")


class RoleModel(nn.Module):
    """A client's dual encoder plus, for a single-modality role, a linear multi-label findings head.

    Args:
        net: the client's dual encoder (both towers exist; a single-modality role trains and uses one).
        role: the site's role.
        num_findings: F, the findings head's outputs (image and text roles).
    """

    def __init__(self, net: DualEncoder, role: str, num_findings: int):
        super().__init__()
        self.net = net
        self.role = role
        self.modalities = ROLE_MODALITIES[role]
        self.head = nn.Linear(net.embed_dim, num_findings) if len(self.modalities) == 1 else None

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        return self.net(images, input_ids, attention_mask)

    def embed(self, modality: str, batch: dict) -> torch.Tensor:
        """l2-normalised ``B x E`` representations of ``batch`` in ``modality``."""
        if modality == "image":
            return self.net.encode_image(batch[SampleKey.IMAGE])
        return self.net.encode_text(batch[SampleKey.INPUT_IDS], batch[SampleKey.ATTENTION_MASK])

    def make_trainable(self, frozen: list[str]) -> None:
        """Train the role's towers (and head); the other tower stays frozen (never trained, never sent)."""
        groups = ["all"] if self.head is None else list(_TOWER_GROUPS[self.modalities[0]])
        self.net.set_trainable(groups)
        if frozen:
            self.net.freeze(frozen)
        if self.head is not None:
            self.head.requires_grad_(True)


class FindingsObjective:
    """Multi-label findings classification from one modality: ``BCE(head(z), labels)``.

    Image-only sites classify the findings from the image; text-only sites from the report text (a report and its
    structured finding labels is what a report archive without images has; as a CheXpert-style labeller it trains
    the text tower on the clinical content that the image sites' task and the public pairs share).
    """

    def __init__(self, modality: str):
        self.modality = modality

    def __call__(self, model: RoleModel, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model.head(model.embed(self.modality, batch))
        loss = F.binary_cross_entropy_with_logits(logits, batch[SampleKey.LABELS].float())
        return loss, {"bce": float(loss.detach())}


def with_model(cfg: ExperimentConfig, model: ModelConfig) -> ExperimentConfig:
    """``cfg`` with its ``model`` section replaced (a client's own architecture)."""
    return dataclasses.replace(cfg, model=model)
