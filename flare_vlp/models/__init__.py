"""Models: image/text encoders by registry name, the CLIP-style dual encoder, and LoRA adapters. No FLARE imports.

Example:
    >>> from flare_vlp.models import build_dual_encoder, add_lora
    >>> model = build_dual_encoder("vit_tiny", "tiny_bert", embed_dim=32)
    >>> add_lora(model, ["qkv", "query", "value"], adapter_names=("global", "personal"))
"""

from flare_vlp.models.dual_encoder import (
    BASE_GROUPS,
    PARAM_GROUPS,
    AlignBlock,
    DualEncoder,
    DualEncoderOutput,
    build_dual_encoder,
)
from flare_vlp.models.lora import (
    adapter_state_dict,
    add_lora,
    list_adapters,
    load_adapter_state_dict,
    lora_factor_pairs,
)
from flare_vlp.models.registry import (
    IMAGE_ENCODERS,
    TEXT_ENCODERS,
    Encoder,
    build_image_encoder,
    build_text_encoder,
    get_tokenizer_path,
    register_image_encoder,
    register_text_encoder,
)

__all__ = [
    "BASE_GROUPS",
    "IMAGE_ENCODERS",
    "PARAM_GROUPS",
    "TEXT_ENCODERS",
    "AlignBlock",
    "DualEncoder",
    "DualEncoderOutput",
    "Encoder",
    "adapter_state_dict",
    "add_lora",
    "build_dual_encoder",
    "build_image_encoder",
    "build_text_encoder",
    "get_tokenizer_path",
    "list_adapters",
    "load_adapter_state_dict",
    "lora_factor_pairs",
    "register_image_encoder",
    "register_text_encoder",
]
