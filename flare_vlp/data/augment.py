"""Training augmentation for cached ``1 x S x S`` images: a mild random affine plus intensity jitter.

It runs per item on already-decoded tensors (see :class:`~flare_vlp.data.datasets.CachedManifestDataset`), so it
must be cheap; and it must respect what a chest X-ray is: no flips (a flip moves the heart to the wrong side).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.transforms import Compose, MapTransform, RandomizableTransform

from flare_vlp.data.keys import SampleKey

__all__ = ["RandJitterd", "build_augment_transforms"]


class RandJitterd(RandomizableTransform, MapTransform):
    """Small random affine (rotation, zoom, shift) plus intensity jitter (gamma, gain, offset) of square images.

    Written directly on ``torch.nn.functional.grid_sample`` with an element-wise grid instead of MONAI's
    ``RandAffined``: at 64 px that one costs ~2.5 ms per image single-threaded and far more when BLAS threads
    compete for a busy CPU, while this costs ~0.2 ms, which keeps per-item augmentation of a cached dataset cheap.
    Deliberately mild and without flips: a chest X-ray is not a natural photo, and a flip moves the heart.

    Args:
        keys: image keys; values are ``1 x H x W`` float tensors in [0, 1].
        prob: probability of jittering a sample at all.
        rotate_deg: max absolute rotation in degrees.
        translate: max absolute shift as a fraction of the image side.
        scale: max relative zoom change.
        gamma: gamma is drawn log-uniformly from ``[1 / (1 + gamma), 1 + gamma]``.
        gain: max relative intensity gain change.
        offset: max absolute intensity offset.
    """

    def __init__(
        self,
        keys: str | Sequence[str] = SampleKey.IMAGE,
        prob: float = 0.8,
        rotate_deg: float = 5.0,
        translate: float = 0.04,
        scale: float = 0.05,
        gamma: float = 0.2,
        gain: float = 0.1,
        offset: float = 0.05,
    ):
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        ranges = {"rotate_deg": rotate_deg, "translate": translate, "scale": scale, "gamma": gamma, "gain": gain}
        bad = {k: v for k, v in {**ranges, "offset": offset}.items() if not v >= 0}
        if bad:
            raise ValueError(f"jitter ranges must be >= 0, got {bad}")
        self.rotate, self.translate, self.scale = math.radians(rotate_deg), translate, scale
        self.gamma, self.gain, self.offset = gamma, gain, offset
        self._grids: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        u = self.R.uniform
        self._angle = u(-self.rotate, self.rotate)
        self._zoom = 1.0 + u(-self.scale, self.scale)
        self._shift = (2 * u(-self.translate, self.translate), 2 * u(-self.translate, self.translate))
        self._gamma = math.exp(u(-math.log1p(self.gamma), math.log1p(self.gamma)))
        self._gain = 1.0 + u(-self.gain, self.gain)
        self._offset = u(-self.offset, self.offset)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            d[key] = self._jitter(torch.as_tensor(d[key]).float())
        return d

    def _jitter(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        if (h, w) not in self._grids:  # normalised pixel-centre coordinates, as grid_sample(align_corners=False)
            ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h)
            xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w)
            self._grids[(h, w)] = torch.meshgrid(ys, xs, indexing="ij")
        y, x = self._grids[(h, w)]
        c, s = math.cos(self._angle) / self._zoom, math.sin(self._angle) / self._zoom
        grid = torch.stack((c * x - s * y + self._shift[0], s * x + c * y + self._shift[1]), dim=-1)
        out = F.grid_sample(img[None], grid[None], mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        out = out.clamp_(0.0, 1.0).pow_(self._gamma).mul_(self._gain).add_(self._offset)
        return out.clamp_(0.0, 1.0)


def build_augment_transforms(
    size: int = 64,
    *,
    keys: str | Sequence[str] = SampleKey.IMAGE,
    prob: float = 0.8,
    rotate_deg: float = 5.0,
    translate: float = 0.04,
    scale: float = 0.05,
    seed: int | None = None,
) -> Compose:
    """The cheap random part, applied per item on a ``1 x size x size`` tensor in [0, 1] (see :class:`RandJitterd`).

    Args:
        size: image side (kept for symmetry with :func:`build_load_transforms`; the jitter is relative).
        keys: image keys.
        prob: probability of jittering a sample.
        rotate_deg: max absolute rotation in degrees.
        translate: max absolute shift as a fraction of the image side.
        scale: max relative zoom change.
        seed: seeds the random state (``Compose.set_random_state``) for reproducible augmentation.
    """
    aug = Compose([RandJitterd(keys, prob=prob, rotate_deg=rotate_deg, translate=translate, scale=scale)])
    if seed is not None:
        aug.set_random_state(seed=seed)
    return aug
