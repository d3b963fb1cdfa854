"""Image encoders: ``B x C x H x W`` float -> pooled ``B x out_dim`` features.

Defaults suit SynthCXR (1 channel, 64 px) on a CPU: a small CNN, a small MONAI ViT, MONAI ResNet10/18, all from
scratch (no pretrained ViT can be had offline). EfficientNet-Lite0 with ImageNet weights lives in
:mod:`flare_vlp.models.efficientnet_lite`; any local HF vision model plugs in through ``hf_vision``.
"""

from __future__ import annotations

import inspect
import json
from typing import Literal

import torch
from torch import nn

from flare_vlp.models.registry import register_image_encoder
from flare_vlp.models.text_encoders import _check_local_dir, hf_layer_list

__all__ = ["HFVisionEncoder", "ResNetEncoder", "SmallCNN", "ViTEncoder"]


def _norm(kind: str, channels: int) -> nn.Module:
    # GroupNorm is offered because BatchNorm statistics differ across heterogeneous sites (see FedBN).
    table = {"batch": lambda: nn.BatchNorm2d(channels), "group": lambda: nn.GroupNorm(8, channels)}
    if kind not in table and kind != "none":
        raise ValueError(f"`norm` must be one of batch, group, none; got {kind!r}.")
    return table[kind]() if kind in table else nn.Identity()


class SmallCNN(nn.Module):
    """A few conv stages (conv3x3 - norm - ReLU - maxpool), then global average pooling: ~310k parameters.

    The fast default for SynthCXR on a CPU.

    Args:
        in_channels: image channels (default 1).
        widths: output channels per stage (default 32, 64, 128, 192; each stage halves the resolution).
        norm: "batch" (default), "group" or "none".
    """

    def __init__(
        self,
        in_channels: int = 1,
        widths: tuple[int, ...] = (32, 64, 128, 192),
        norm: Literal["batch", "group", "none"] = "batch",
    ) -> None:
        super().__init__()
        if not widths:
            raise ValueError("`widths` must name at least one stage.")
        stages, prev = [], in_channels
        for width in widths:
            stages.append(
                nn.Sequential(
                    nn.Conv2d(prev, width, 3, padding=1, bias=norm == "none"),
                    _norm(norm, width),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
            )
            prev = width
        self.stages = nn.ModuleList(stages)
        self.out_dim = prev

    def blocks(self) -> list[nn.Module]:
        return list(self.stages)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        for stage in self.stages:
            x = stage(x)
        return x.mean(dim=(2, 3))


class ViTEncoder(nn.Module):
    """MONAI ``ViT`` (2-D) pooled by its CLS token or by the mean of the patch tokens.

    Args:
        in_channels: image channels (default 1).
        img_size: input side in pixels (default 64).
        patch_size: patch side (default 8 -> 64 tokens at 64 px).
        hidden_size, mlp_dim, num_layers, num_heads: transformer size (default 192, 768, 6, 3).
        pool: "cls" (default; adds a CLS token) or "mean" over patch tokens.
        dropout_rate: dropout in the transformer (default 0).
        qkv_bias: bias in the fused q/k/v projection (default True, as in ViT-B).

    LoRA targets: ``qkv`` (fused q/k/v ``nn.Linear``), ``out_proj``, ``linear1``/``linear2`` (MLP).
    """

    def __init__(
        self,
        in_channels: int = 1,
        img_size: int = 64,
        patch_size: int = 8,
        hidden_size: int = 192,
        mlp_dim: int = 768,
        num_layers: int = 6,
        num_heads: int = 3,
        pool: Literal["cls", "mean"] = "cls",
        dropout_rate: float = 0.0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        from monai.networks.nets import ViT

        if pool not in ("cls", "mean"):
            raise ValueError(f"`pool` must be 'cls' or 'mean', got {pool!r}.")
        self.pool = pool
        self.vit = ViT(
            in_channels=in_channels,
            img_size=img_size,
            patch_size=patch_size,
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            classification=pool == "cls",  # only to get MONAI's cls_token; its head is removed below
            dropout_rate=dropout_rate,
            spatial_dims=2,
            qkv_bias=qkv_bias,
        )
        if hasattr(self.vit, "classification_head"):
            del self.vit.classification_head
        self.out_dim = hidden_size

    def blocks(self) -> list[nn.Module]:
        return list(self.vit.blocks)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.vit.patch_embedding(images)
        if self.pool == "cls":
            x = torch.cat((self.vit.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for block in self.vit.blocks:
            x = block(x)
        x = self.vit.norm(x)
        return x[:, 0] if self.pool == "cls" else x.mean(dim=1)


@register_image_encoder("cnn")
def cnn(**kwargs) -> SmallCNN:
    """:class:`SmallCNN` (kwargs: in_channels, widths, norm)."""
    return SmallCNN(**kwargs)


@register_image_encoder("vit")
def vit(**kwargs) -> ViTEncoder:
    """:class:`ViTEncoder`, default patch 8, hidden 192, 6 layers, 3 heads, MLP 768 (~2.7M parameters)."""
    return ViTEncoder(**kwargs)


@register_image_encoder("vit_tiny")
def vit_tiny(**kwargs) -> ViTEncoder:
    """A tiny :class:`ViTEncoder` for tests: patch 16, hidden 32, 2 layers, 2 heads, MLP 64."""
    defaults = {"patch_size": 16, "hidden_size": 32, "mlp_dim": 64, "num_layers": 2, "num_heads": 2}
    return ViTEncoder(**{**defaults, **kwargs})


class ResNetEncoder(nn.Module):
    """MONAI 2-D ``ResNet`` with its classifier removed: pooled ``B x 512`` (basic blocks) features.

    Args:
        depth: 10 or 18.
        in_channels: image channels (default 1).
        conv1_size: stem kernel (default 7).
        conv1_stride: stem stride (default 2, as in ImageNet ResNets; MONAI's default 1 costs 4x at 64 px).
        widen_factor: channel multiplier (default 1.0).
    """

    _LAYERS = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2]}

    def __init__(
        self, depth: int = 10, in_channels: int = 1, conv1_size: int = 7, conv1_stride: int = 2, widen_factor=1.0
    ) -> None:
        super().__init__()
        from monai.networks.nets import ResNet

        if depth not in self._LAYERS:
            raise ValueError(f"`depth` must be one of {sorted(self._LAYERS)}, got {depth}.")
        self.resnet = ResNet(
            block="basic",
            layers=self._LAYERS[depth],
            block_inplanes=[64, 128, 256, 512],
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=conv1_size,
            conv1_t_stride=conv1_stride,
            widen_factor=widen_factor,
            feed_forward=False,
        )
        self.out_dim = int(512 * widen_factor)

    def blocks(self) -> list[nn.Module]:
        r = self.resnet
        return [nn.ModuleList([r.conv1, r.bn1]), r.layer1, r.layer2, r.layer3, r.layer4]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.resnet(images)


@register_image_encoder("resnet10")
def resnet10(**kwargs) -> ResNetEncoder:
    """:class:`ResNetEncoder` with depth 10 (~4.9M parameters)."""
    return ResNetEncoder(depth=10, **kwargs)


@register_image_encoder("resnet18")
def resnet18(**kwargs) -> ResNetEncoder:
    """:class:`ResNetEncoder` with depth 18 (~11M parameters)."""
    return ResNetEncoder(depth=18, **kwargs)


class HFVisionEncoder(nn.Module):
    """Any HF vision backbone from a local folder: ``pooler_output`` when the model has one, else the token mean.

    A 1-channel input is repeated to the model's ``num_channels``, and normalised with ``image_mean/std`` from the
    folder's ``preprocessor_config.json`` when it exists (expects inputs scaled to [0, 1]); preprocessing is done
    here because transformers' fast image processors need torchvision.

    Args:
        path: local HF model folder (config.json + weights).

    Raises:
        FileNotFoundError: ``path`` is not a local HF model folder; the message names it.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        from transformers import AutoModel

        folder = _check_local_dir(path, "hf_vision")
        self.model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        config = self.model.config
        self.num_channels = int(getattr(config, "num_channels", 3))
        hidden = getattr(config, "hidden_size", None) or getattr(config, "hidden_sizes", [None])[-1]
        if hidden is None:
            raise ValueError(f"hf_vision model at {str(folder)!r}: config has no hidden_size / hidden_sizes.")
        self.out_dim = int(hidden)
        mean, std = [0.0] * self.num_channels, [1.0] * self.num_channels
        pre = folder / "preprocessor_config.json"
        if pre.is_file():
            cfg = json.loads(pre.read_text())
            mean, std = cfg.get("image_mean", mean), cfg.get("image_std", std)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self._interpolate = "interpolate_pos_encoding" in inspect.signature(self.model.forward).parameters

    def blocks(self) -> list[nn.Module]:
        return hf_layer_list(self.model)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1 and self.num_channels != 1:
            images = images.expand(-1, self.num_channels, -1, -1)
        images = (images - self.mean) / self.std
        kwargs = {"interpolate_pos_encoding": True} if self._interpolate else {}
        out = self.model(pixel_values=images, **kwargs)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            hidden = out.last_hidden_state
            pooled = hidden.mean(dim=(2, 3)) if hidden.dim() == 4 else hidden.mean(dim=1)
        return pooled.flatten(1)


@register_image_encoder("hf_vision")
def hf_vision(path: str) -> HFVisionEncoder:
    """:class:`HFVisionEncoder` from a local folder."""
    return HFVisionEncoder(path)
