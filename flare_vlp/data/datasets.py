"""Datasets over a :class:`~flare_vlp.data.manifest.Manifest`: one sample dict per record.

Two image flavours with the same sample layout (see :class:`~flare_vlp.data.keys.SampleKey`):

* :class:`ManifestDataset` decodes the image file on every access (MONAI ``Dataset``). Right for big images, few
  epochs, or a custom ``transform``.
* :class:`CachedManifestDataset` decodes and resizes every image once into one packed ``N x 1 x S x S`` uint8 (or
  float16) tensor, optionally kept in a ``.pt`` file keyed by a hash of the manifest rows, the files' size/mtime and
  the preprocessing settings, and applies only the cheap random augmentation per item. A federated client re-reads
  its data every round; at 64 px the decoded set of 10k images is 41 MB, so decoding PNGs again each epoch is pure
  waste.

:class:`ReportDataset` is the report-only flavour (no ``image`` key): a text-only site reads no image, and its
manifest may have none (``read_manifest(..., allow_empty_image=True)``).

For ``num_workers > 0`` with ``augment=True`` use ``monai.data.DataLoader`` (or pass
``monai.data.utils.worker_init_fn``) so every worker draws different augmentations.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from monai.data import Dataset as MonaiDataset
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from flare_vlp.data.augment import build_augment_transforms
from flare_vlp.data.keys import SampleKey
from flare_vlp.data.manifest import Manifest
from flare_vlp.data.transforms import (
    ImageLoadError,
    Intensity,
    apply_transform,
    build_image_transforms,
    build_load_transforms,
)
from flare_vlp.utils.io import atomic_write

__all__ = ["ManifestDataset", "CachedManifestDataset", "ReportDataset", "CACHE_VERSION"]

CACHE_VERSION = 1
"""Bumped whenever the preprocessing changes the decoded pixels, so stale cache files are rebuilt."""

logger = logging.getLogger(__name__)


def _labels(manifest: Manifest) -> torch.Tensor:
    return torch.tensor(manifest.label_matrix(), dtype=torch.float32).reshape(len(manifest), len(manifest.findings))


def _sample(manifest: Manifest, labels: torch.Tensor, index: int, image: torch.Tensor | None) -> dict[str, Any]:
    record = manifest[index]
    sample = {} if image is None else {SampleKey.IMAGE: image}
    return {
        **sample,
        SampleKey.REPORT: record.report,
        SampleKey.LABELS: labels[index],
        SampleKey.ID: record.id,
        SampleKey.SITE: record.site,
        SampleKey.SPLIT: record.split,
    }


class ReportDataset(TorchDataset):
    """The reports and labels of a manifest's records, without images: what a text-only site trains on. No image
    is read, so its rows may have none (``Record.image == ""``)."""

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self.labels = _labels(manifest)

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return _sample(self.manifest, self.labels, index, None)


class ManifestDataset(MonaiDataset):
    """Image-report samples of a manifest, decoded on every access.

    Args:
        manifest: the records; labels follow ``manifest.findings`` order.
        transform: maps ``{"image": path, "id": record_id}`` to a dict whose ``"image"`` is the tensor. Default:
            :func:`~flare_vlp.data.transforms.build_image_transforms` with ``size``, ``augment`` and ``seed``.
        size: output side length (default transform only).
        augment: add the random augmentation (default transform only).
        seed: seed of the augmentation (default transform only).

    Raises:
        ImageLoadError: on access, for a missing or unreadable image (names the path and the record id).

    Examples::

        >>> ds = ManifestDataset(read_manifest("data/manifest.jsonl").select(site="site-1", split="train"))
        >>> ds[0]["image"].shape
        torch.Size([1, 64, 64])
    """

    def __init__(
        self,
        manifest: Manifest,
        transform: Callable | None = None,
        size: int = 64,
        augment: bool = False,
        seed: int | None = None,
    ):
        if transform is None:
            transform = build_image_transforms(size, augment, seed=seed)
        items = [{SampleKey.IMAGE: r.image, SampleKey.ID: r.id} for r in manifest]
        super().__init__(items, transform)
        self.manifest = manifest
        self.labels = _labels(manifest)

    def _transform(self, index: int) -> dict[str, Any]:
        out = apply_transform(self.transform, dict(self.data[index]))
        return _sample(self.manifest, self.labels, index, out[SampleKey.IMAGE])


class _DecodeOnce(TorchDataset):
    """Worker-side decoder for the cache: returns the error instead of raising, so its type survives the workers."""

    def __init__(self, manifest: Manifest, transform: Callable):
        self.manifest, self.transform = manifest, transform

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, index: int):
        record = self.manifest[index]
        try:
            out = apply_transform(self.transform, {SampleKey.IMAGE: record.image, SampleKey.ID: record.id})
        except ImageLoadError as e:
            return index, None, (e.path, e.reason, e.record_id)
        return index, out[SampleKey.IMAGE], None


def _collate_decoded(batch):
    return batch


class CachedManifestDataset(TorchDataset):
    """Like :class:`ManifestDataset`, but every image is decoded once into one packed in-memory tensor.

    Args:
        manifest: the records; labels follow ``manifest.findings`` order.
        size: output side length.
        augment: apply the random augmentation per item (on the cached pixels).
        cache_path: optional ``.pt`` file: loaded when its key matches this manifest and these settings, otherwise
            (re)built and written atomically (temp file + rename).
        num_workers: processes used to decode the images on the first build (0: in this process).
        progress: called as ``progress(done, total)`` after each decoded batch (e.g. to drive a tqdm bar).
        cache_dtype: ``"uint8"`` (1 byte/pixel, 1/255 quantisation) or ``"float16"``.
        keep_aspect: see :func:`~flare_vlp.data.transforms.build_load_transforms`.
        intensity: see :func:`~flare_vlp.data.transforms.build_load_transforms`.
        seed: seed of the augmentation.

    Raises:
        ImageLoadError: while building, for the first missing or unreadable image (names the path and record id).
        ValueError: bad ``cache_dtype`` or a ``cache_path`` that is not a ``.pt`` file.
    """

    def __init__(
        self,
        manifest: Manifest,
        size: int = 64,
        augment: bool = False,
        cache_path: str | os.PathLike | None = None,
        num_workers: int = 0,
        progress: Callable[[int, int], None] | None = None,
        *,
        cache_dtype: Literal["uint8", "float16"] = "uint8",
        keep_aspect: bool = True,
        intensity: Intensity = "auto",
        seed: int | None = None,
    ):
        if cache_dtype not in ("uint8", "float16"):
            raise ValueError(f"cache_dtype must be 'uint8' or 'float16', got {cache_dtype!r}")
        if cache_path is not None and Path(cache_path).suffix != ".pt":
            raise ValueError(f"cache_path must be a .pt file, got {cache_path}")
        self.manifest = manifest
        self.labels = _labels(manifest)
        self.size = size
        self.cache_dtype = cache_dtype
        self._load = build_load_transforms(size, keep_aspect=keep_aspect, intensity=intensity)
        self._augment = build_augment_transforms(size, seed=seed) if augment else None
        settings = {"size": size, "keep_aspect": keep_aspect, "intensity": intensity, "dtype": cache_dtype}
        self.cache_key = self._key(settings)
        self.cache_path = None if cache_path is None else Path(cache_path)
        images = self._read_cache() if self.cache_path is not None else None
        if images is None:
            images = self._decode(num_workers, progress)
            if self.cache_path is not None:
                self._write_cache(images)
        self.images = images

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, index: int) -> dict[str, Any]:
        img = self.images[index]
        img = img.float() / 255.0 if img.dtype == torch.uint8 else img.float()
        if self._augment is not None:
            img = self._augment({SampleKey.IMAGE: img})[SampleKey.IMAGE]
        return _sample(self.manifest, self.labels, index, img)

    # -- cache -----------------------------------------------------------------------------------------------------

    def _key(self, settings: dict) -> str:
        rows = []
        for r in self.manifest:
            try:
                st = os.stat(r.image)
            except OSError as e:
                raise ImageLoadError(r.image, f"image file not found ({e.strerror})", r.id) from None
            rows.append([r.id, r.image, st.st_size, st.st_mtime_ns])
        blob = json.dumps([CACHE_VERSION, settings, rows], separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def _decode(self, num_workers: int, progress: Callable[[int, int], None] | None) -> torch.Tensor:
        n, s = len(self.manifest), self.size
        dtype = torch.uint8 if self.cache_dtype == "uint8" else torch.float16
        images = torch.empty((n, 1, s, s), dtype=dtype)
        loader = DataLoader(
            _DecodeOnce(self.manifest, self._load),
            batch_size=64,
            num_workers=num_workers,
            collate_fn=_collate_decoded,
        )
        done = 0
        for batch in loader:
            for index, img, error in batch:
                if error is not None:
                    raise ImageLoadError(*error)
                # +0.5 and truncate instead of round_(), which runs multi-threaded even on 4k pixels (slow when busy)
                images[index] = (img * 255.0 + 0.5).to(dtype) if dtype == torch.uint8 else img.to(dtype)
            done += len(batch)
            if progress is not None:
                progress(done, n)
        return images

    def _read_cache(self) -> torch.Tensor | None:
        path = self.cache_path
        if path is None or not path.is_file():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated or foreign file is rebuilt, not trusted
            logger.warning("image cache %s is unreadable (%s); rebuilding it", path, e)
            return None
        if not isinstance(blob, dict) or blob.get("key") != self.cache_key:
            logger.info("image cache %s was built for other rows or settings; rebuilding it", path)
            return None
        images = blob.get("images")
        expected = (len(self.manifest), 1, self.size, self.size)
        if not isinstance(images, torch.Tensor) or tuple(images.shape) != expected:
            logger.warning("image cache %s holds a tensor of the wrong shape; rebuilding it", path)
            return None
        return images

    def _write_cache(self, images: torch.Tensor) -> None:
        path = self.cache_path
        assert path is not None
        if not path.parent.is_dir():
            raise ValueError(f"cache_path {path}: folder {path.parent} does not exist")
        blob = {"version": CACHE_VERSION, "key": self.cache_key, "ids": [r.id for r in self.manifest]}
        atomic_write(path, lambda tmp: torch.save({**blob, "images": images}, tmp))
