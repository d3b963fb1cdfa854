"""The CLIP-style dual encoder with named parameter groups.

Per tower: encoder -> optional "align" block -> linear projection head -> l2-normalised ``B x embed_dim``. A learnable
temperature ``logit_scale = exp(log_scale)`` clamped at ``max_logit_scale`` (CLIP, https://arxiv.org/abs/2103.00020).

The parameter groups make FL schedules explicit instead of scattered ``requires_grad`` edits: FedDRA's stage 1
trains the "deep" group (align blocks + heads + temperature + optionally the last k encoder blocks), stage 2 "all",
and a round sends ``group_state_dict(group)``: only what was trained.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from flare_vlp.models.registry import build_image_encoder, build_text_encoder

__all__ = ["BASE_GROUPS", "PARAM_GROUPS", "AlignBlock", "DualEncoder", "DualEncoderOutput", "build_dual_encoder"]

BASE_GROUPS = (
    "image_encoder",
    "text_encoder",
    "image_align",
    "text_align",
    "image_head",
    "text_head",
    "temperature",
    "lora",
)
PARAM_GROUPS = (*BASE_GROUPS, "deep", "all")
_LORA_MARK = "lora_"
_TEXT_TABLES: dict[str, dict[bytes, torch.Tensor]] = {}  # peft names adapter tensors lora_A / lora_B / lora_embedding_*


class DualEncoderOutput(NamedTuple):
    """``image_embeds`` and ``text_embeds``: l2-normalised ``B x E``; ``logit_scale``: scalar 1/tau (clamped)."""

    image_embeds: torch.Tensor
    text_embeds: torch.Tensor
    logit_scale: torch.Tensor


class AlignBlock(nn.Module):
    """Pre-LN residual MLP ``x + W2 GELU(W1 LN(x))`` on pooled features.

    ``W2`` starts at zero so the block starts as the identity: pretrained features pass through unchanged and the
    block learns only a correction (FedDRA's trainable "align" block on top of each encoder).
    """

    def __init__(self, dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or dim
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class DualEncoder(nn.Module):
    """Image tower + text tower projected into one l2-normalised embedding space.

    Args:
        image_encoder: module ``B x C x H x W -> B x out_dim`` with ``out_dim`` and ``blocks()``.
        text_encoder: module ``(input_ids, attention_mask) -> B x out_dim`` with ``out_dim`` and ``blocks()``.
        embed_dim: shared embedding width E (default 128).
        align_block: add an :class:`AlignBlock` per tower (default True); otherwise the groups are empty.
        align_hidden: hidden width of the align blocks (default: the tower's ``out_dim``).
        init_temperature: initial tau (default 0.07).
        learnable_temperature: train ``log_scale`` (default True); otherwise it is a fixed buffer.
        max_logit_scale: clamp of 1/tau (default 100, as CLIP) so the softmax cannot collapse.
        deep_encoder_blocks: how many last blocks of EACH encoder also belong to the "deep" group (default 0).
        cache_frozen_text: memoise the frozen text encoder's features per distinct report (default True).

    Raises:
        ValueError: bad ``embed_dim``/``init_temperature``/``max_logit_scale``, or ``deep_encoder_blocks`` larger
            than an encoder's number of blocks.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        *,
        embed_dim: int = 128,
        align_block: bool = True,
        align_hidden: int | None = None,
        init_temperature: float = 0.07,
        learnable_temperature: bool = True,
        max_logit_scale: float = 100.0,
        deep_encoder_blocks: int = 0,
        cache_frozen_text: bool = True,
    ) -> None:
        super().__init__()
        self.cache_frozen_text = cache_frozen_text
        self._text_memo: dict[bytes, torch.Tensor] | None = None  # bound lazily to the table of the tower's weights
        if embed_dim < 1:
            raise ValueError(f"`embed_dim` must be positive, got {embed_dim}.")
        if not init_temperature > 0:
            raise ValueError(f"`init_temperature` must be > 0, got {init_temperature}.")
        if max_logit_scale < 1 / init_temperature:
            raise ValueError(f"`max_logit_scale` ({max_logit_scale}) is below 1/init_temperature.")
        for tower, enc in (("image", image_encoder), ("text", text_encoder)):
            if not 0 <= deep_encoder_blocks <= len(enc.blocks()):
                raise ValueError(
                    f"`deep_encoder_blocks` must be in [0, {len(enc.blocks())}] for the {tower} encoder "
                    f"({type(enc).__name__}), got {deep_encoder_blocks}."
                )
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        img_dim, txt_dim = int(image_encoder.out_dim), int(text_encoder.out_dim)
        self.image_align = AlignBlock(img_dim, align_hidden) if align_block else nn.Identity()
        self.text_align = AlignBlock(txt_dim, align_hidden) if align_block else nn.Identity()
        self.image_head = nn.Linear(img_dim, embed_dim)
        self.text_head = nn.Linear(txt_dim, embed_dim)
        log_scale = torch.tensor(math.log(1.0 / init_temperature))
        if learnable_temperature:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        self.embed_dim = embed_dim
        self.max_logit_scale = max_logit_scale
        self.deep_encoder_blocks = deep_encoder_blocks

    @property
    def logit_scale(self) -> torch.Tensor:
        """1/tau = exp(log_scale), clamped at ``max_logit_scale``."""
        return self.log_scale.exp().clamp(max=self.max_logit_scale)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``B x C x H x W`` -> l2-normalised ``B x E``."""
        return F.normalize(self.image_head(self.image_align(self.image_encoder(images))), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``B x L`` token ids and mask -> l2-normalised ``B x E``."""
        return F.normalize(self.text_head(self.text_align(self.text_features(input_ids, attention_mask))), dim=-1)

    def text_frozen(self) -> bool:
        """True when the text encoder is a fixed function: no trainable parameter and in eval mode."""
        return not self.text_encoder.training and not any(p.requires_grad for p in self.text_encoder.parameters())

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled text-encoder features; memoised per distinct report while the text encoder is frozen.

        Radiology reports repeat a lot (SynthCXR: ~3,400 distinct per 10,000) and a frozen MiniLM is most of a CPU
        training step, so a frozen tower is run once per distinct token sequence. Loading weights clears the memo.
        """
        if not (self.cache_frozen_text and self.text_frozen()):
            return self.text_encoder(input_ids, attention_mask)
        ids, mask = input_ids.detach().cpu(), attention_mask.detach().cpu().bool()
        keys = [row[m].numpy().tobytes() for row, m in zip(ids, mask)]
        memo = self.text_memo()
        todo = [i for i, k in enumerate(keys) if k not in memo]
        if todo:
            sel = torch.tensor(todo, device=input_ids.device)
            with torch.no_grad():
                feats = self.text_encoder(input_ids.index_select(0, sel), attention_mask.index_select(0, sel))
            for i, f in zip(todo, feats.float().cpu()):
                memo[keys[i]] = f
        return torch.stack([memo[k] for k in keys]).to(input_ids.device)

    def text_memo(self) -> dict[bytes, torch.Tensor]:
        """This model's memo of frozen text features (shared only on request, :meth:`share_text_memo`: a feature
        computed in another batch can differ in the last bits, which would make two runs of the same job differ)."""
        if self._text_memo is None:
            self._text_memo = {}
        return self._text_memo

    def clear_text_memo(self) -> None:
        """Unbind the memo (the next use re-reads the tower's weights); other models' shared entries stay."""
        self._text_memo = None

    def share_text_memo(self, other: DualEncoder) -> None:
        """Use ``other``'s memo of frozen text features (e.g. the local-only baseline's site models, which all start
        from the same frozen text encoder, embed the shared test reports once instead of once per site).

        Raises:
            ValueError: if the two text encoders differ in any weight (their features would differ).
        """
        mine, theirs = self.text_encoder.state_dict(), other.text_encoder.state_dict()
        if mine.keys() != theirs.keys() or any(not torch.equal(mine[k], theirs[k]) for k in mine):
            raise ValueError("share_text_memo: the two models' text encoders differ; their features cannot be shared")
        self._text_memo = other.text_memo()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # new text-encoder weights invalidate the memo; a load without them (a federated round, where the frozen
        # tower never travels) keeps it, so the frozen MiniLM is not re-run on the same reports every round
        if any(key.startswith(f"{prefix}text_encoder.") for key in state_dict):
            self.clear_text_memo()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> DualEncoderOutput:
        return DualEncoderOutput(
            self.encode_image(images), self.encode_text(input_ids, attention_mask), self.logit_scale
        )

    def _deep_block_prefixes(self) -> list[str]:
        if self.deep_encoder_blocks == 0:
            return []
        names = {id(m): n for n, m in self.named_modules(remove_duplicate=False)}
        prefixes = []
        for enc in (self.image_encoder, self.text_encoder):
            for block in enc.blocks()[-self.deep_encoder_blocks :]:
                for sub in block.modules():  # a block may be a plain container of modules (e.g. stem conv + norm)
                    if id(sub) in names:
                        prefixes.append(names[id(sub)] + ".")
        return prefixes

    def _group_predicate(self, group: str):
        if group not in PARAM_GROUPS:
            close = difflib.get_close_matches(group, PARAM_GROUPS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"Unknown parameter group {group!r}.{hint} Valid groups: {', '.join(PARAM_GROUPS)}.")
        if group == "all":
            return lambda name: True
        if group == "lora":
            return lambda name: _LORA_MARK in name
        if group == "temperature":
            return lambda name: name == "log_scale"
        if group == "deep":
            prefixes = ("image_align.", "text_align.", "image_head.", "text_head.", *self._deep_block_prefixes())
            return lambda name: name == "log_scale" or (name.startswith(prefixes) and _LORA_MARK not in name)
        return lambda name: name.startswith(group + ".") and _LORA_MARK not in name

    def _named_tensors(self) -> dict[str, torch.Tensor]:
        # state_dict(keep_vars=True) = parameters + persistent buffers, under the keys a checkpoint uses
        return self.state_dict(keep_vars=True)

    def param_names(self, group: str) -> list[str]:
        """Names of the parameters in ``group`` (one of :data:`PARAM_GROUPS`).

        Encoder groups exclude LoRA adapter tensors, which form the "lora" group, so the base groups partition the
        model's parameters. "deep" = align blocks + heads + temperature + the last ``deep_encoder_blocks`` blocks.

        Raises:
            ValueError: unknown group; the message lists the valid ones.
        """
        keep = self._group_predicate(group)
        return [name for name, _ in self.named_parameters() if keep(name)]

    def set_trainable(self, groups: str | Iterable[str]) -> list[str]:
        """Make exactly the parameters of ``groups`` trainable, freeze everything else; return the trainable names."""
        groups = [groups] if isinstance(groups, str) else list(groups)
        preds = [self._group_predicate(g) for g in groups]
        trainable = []
        for name, param in self.named_parameters():
            param.requires_grad_(any(p(name) for p in preds))
            if param.requires_grad:
                trainable.append(name)
        return trainable

    def freeze(self, groups: str | Iterable[str]) -> None:
        """Freeze the parameters of ``groups``; leave every other parameter as it is."""
        groups = [groups] if isinstance(groups, str) else list(groups)
        preds = [self._group_predicate(g) for g in groups]
        for name, param in self.named_parameters():
            if any(p(name) for p in preds):
                param.requires_grad_(False)

    def group_state_dict(self, group: str) -> dict[str, torch.Tensor]:
        """Detached copies of the parameters AND buffers (e.g. BatchNorm statistics) of ``group``, by state-dict key."""
        keep = self._group_predicate(group)
        return {k: v.detach().clone() for k, v in self._named_tensors().items() if keep(k)}

    def load_group_state_dict(
        self, state: dict[str, torch.Tensor], strict: bool = True, group: str | None = None
    ) -> None:
        """Load a (partial) state dict such as one from :meth:`group_state_dict`.

        Args:
            state: tensors by state-dict key.
            strict: raise on keys this model does not have and on shape mismatches (default True).
            group: when given (and strict), also raise if a key of this group is missing from ``state``.

        Raises:
            KeyError: the first unexpected or missing key, named (typically a state dict from another
                architecture or another encoder).
            ValueError: the first shape mismatch, with both shapes.
        """
        own = self._named_tensors()
        if strict:
            unexpected = [k for k in state if k not in own]
            if unexpected:
                raise KeyError(
                    f"Unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected in all): a state dict from "
                    "another architecture?"
                )
            if group is not None:
                keep = self._group_predicate(group)
                missing = [k for k in own if keep(k) and k not in state]
                if missing:
                    raise KeyError(f"Missing key {missing[0]!r} of group {group!r} ({len(missing)} missing in all).")
        for key, value in state.items():
            if key in own and tuple(own[key].shape) != tuple(value.shape):
                raise ValueError(
                    f"Shape mismatch for {key!r}: model {tuple(own[key].shape)}, state {tuple(value.shape)} (a state "
                    "dict from another architecture?)"
                )
        if any(key.startswith("text_encoder.") for key in state):  # a round without the frozen tower keeps the memo
            self.clear_text_memo()
        with torch.no_grad():
            for key, value in state.items():
                if key in own:
                    own[key].copy_(value.to(dtype=own[key].dtype, device=own[key].device))


def build_dual_encoder(
    image: str = "cnn",
    text: str = "tiny_bert",
    image_kwargs: dict | None = None,
    text_kwargs: dict | None = None,
    **dual_kwargs,
) -> DualEncoder:
    """Build both towers by registry name and wrap them in a :class:`DualEncoder` (``dual_kwargs`` go to it).

    Example:
        >>> model = build_dual_encoder("vit_tiny", "tiny_bert", embed_dim=32)
    """
    image_encoder = build_image_encoder(image, **(image_kwargs or {}))
    text_encoder = build_text_encoder(text, **(text_kwargs or {}))
    return DualEncoder(image_encoder, text_encoder, **dual_kwargs)
