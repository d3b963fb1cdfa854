"""Image loading and preprocessing: any PNG / JPEG / DICOM / NIfTI file -> an upright ``1 x S x S`` float32 in [0, 1].

Every site of a federation must feed the model the same kind of tensor whatever its archive holds, so the
conventions are fixed here once:

* **Readers.** The reader is picked from the file name (and, for suffix-less files, the DICOM preamble), not tried
  in turn, so an unreadable file fails with the reason of the right reader. PNG/JPEG go through MONAI's
  ``PILReader`` (palette, RGB, RGBA, ... are converted to 8-bit gray with PIL's ITU-R 601 luma; 16-bit gray is
  kept), DICOM through ``PydicomReader`` (rescale slope/intercept applied), NIfTI through ``NibabelReader``.
* **Orientation.** MONAI readers index images ``(x, y)`` (column first: ``PILReader`` transposes, ``PydicomReader``
  swaps i/j). :class:`LoadGrayImaged` transposes back, so a picture saved with PIL comes out ``H`` rows x ``W``
  columns, exactly as a viewer shows it. A 2D NIfTI is read in the same ``(x, y)`` index order (what MONAI's
  ``SaveImage`` writes). A 3D NIfTI is reoriented to LPS, the DICOM display frame (for an axial slice: patient left
  on the right, anterior at the top), and its middle slice along the third axis is taken; pass
  ``volume="error"`` to refuse volumes instead. Multi-frame DICOM is refused.
* **MONOCHROME1.** MONAI's ``PydicomReader`` (and pydicom's ``pixel_array``) return stored values, in which a
  MONOCHROME1 image has *bright* air. :class:`_GrayDicomReader` reflects such images about their value range
  (``max + min - x``), so air and lungs are dark and bone is bright, as for MONOCHROME2. No VOI LUT / window is
  applied: the robust percentile scaling below plays that role.
* **Size.** By default the longest side is resized to ``size`` (``area`` interpolation: anti-aliased downsampling)
  and the short side is zero-padded (black, i.e. air) to a centred square, so anatomy keeps its aspect ratio.
  ``keep_aspect=False`` stretches to ``size x size`` instead.
* **Intensity.** ``"auto"``: 8-bit files are divided by 255 (their contrast is already windowed, and site-level
  brightness differences stay visible to the model); everything else (16-bit PNG, DICOM, NIfTI) is mapped from its
  0.5-99.5 percentile range to [0, 1] and clipped, which is robust to burned-in text and collimator edges.
  ``"percentile"`` or ``"minmax"`` force one rule for all files.

Any failure to read a file raises :class:`ImageLoadError` naming the path (and the manifest record id when the
sample dict carries one). MONAI's ``Compose`` wraps errors in ``RuntimeError``; :func:`apply_transform` unwraps
them again so callers catch the real error.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.image_reader import NibabelReader, PILReader, PydicomReader
from monai.transforms import (
    Compose,
    EnsureTyped,
    LoadImage,
    MapTransform,
    Orientation,
    Resized,
    ScaleIntensity,
    ScaleIntensityRangePercentiles,
    SpatialPadd,
)

from flare_vlp.data.augment import build_augment_transforms
from flare_vlp.data.keys import SampleKey

__all__ = [
    "ImageLoadError",
    "LoadGrayImaged",
    "ScaleToUnitd",
    "build_load_transforms",
    "build_image_transforms",
    "apply_transform",
    "load_image",
]

Intensity = Literal["auto", "percentile", "minmax"]
_PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_NIFTI_SUFFIXES = (".nii", ".nii.gz", ".hdr", ".img")
_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
_PIL_KEEP_MODES = ("L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N")
_BITS_META = "flare_vlp_bits"  # MetaTensor meta key: bit depth of the file's pixels (8 marks pre-windowed images)


class ImageLoadError(ValueError):
    """An image file that is missing, unreadable or of an unsupported layout.

    Attributes:
        path: the image file.
        reason: what went wrong.
        record_id: the manifest record id, when known.
    """

    def __init__(self, path: str | os.PathLike, reason: str = "", record_id: str | None = None):
        # ``reason`` defaults to "" so that torch's DataLoader, which re-raises a worker's error as ``type(msg)``,
        # keeps the type (the message, holding the path, then arrives whole in ``path``).
        self.path = str(path)
        self.reason = reason
        self.record_id = record_id
        where = self.path if record_id is None else f"{self.path} (record '{record_id}')"
        super().__init__(f"{where}: {reason}" if reason else where)


def _to_supported_pil_mode(img):
    """Convert palette / RGB / RGBA / CMYK / 1-bit images to 8-bit luma; keep gray 8/16/32-bit and float as they are."""
    return img if img.mode in _PIL_KEEP_MODES else img.convert("L")


def _quiet_load_image(readers: list) -> LoadImage:
    """``LoadImage`` always instantiates MONAI's GPU DICOM reader too, which warns twice on a machine without
    nvImageCodec; we never use that reader (ours are passed explicitly), so its start-up noise is silenced."""
    plugin_logger = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    level = plugin_logger.level
    plugin_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
            return LoadImage(reader=readers, image_only=True, ensure_channel_first=True, dtype=None)
    finally:
        plugin_logger.setLevel(level)


class _GrayDicomReader(PydicomReader):
    """``PydicomReader`` that inverts MONOCHROME1 so every DICOM comes out with MONOCHROME2 semantics (air dark)."""

    def get_data(self, data) -> tuple[np.ndarray, dict]:
        datasets = data if isinstance(data, list) else [data]
        for ds in datasets:
            frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
            if frames > 1:
                raise ValueError(f"multi-frame DICOM ({frames} frames) is not supported; export one frame per file")
        with warnings.catch_warnings():  # projection radiographs have no patient position/orientation: expected
            warnings.filterwarnings("ignore", message=".*ImageOrientationPatient.*")
            array, meta = super().get_data(data)
        photometric = str(getattr(datasets[0], "PhotometricInterpretation", "MONOCHROME2")).strip().upper()
        meta["photometric_interpretation"] = photometric
        if photometric == "MONOCHROME1":
            array = array.astype(np.float32)
            array = (array.max() + array.min()) - array
        return array, meta


def _pick_reader(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(_NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(_DICOM_SUFFIXES):
        return "dicom"
    if name.endswith(_PIL_SUFFIXES):
        return "pil"
    from pydicom.misc import is_dicom

    return "dicom" if is_dicom(str(path)) else "pil"  # PIL sniffs the format from the content


def _to_gray(img: torch.Tensor) -> torch.Tensor:
    """Channel-first ``C x ...`` -> ``1 x ...``: ITU-R 601 luma for RGB(A), the first channel for gray+alpha."""
    channels = img.shape[0]
    if channels == 1:
        return img
    if channels in (3, 4):
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=img.dtype).view(3, *([1] * (img.ndim - 1)))
        return (img[:3] * weights).sum(0, keepdim=True)
    if channels == 2:
        return img[:1]
    raise ValueError(f"cannot make a gray image from {channels} channels (shape {tuple(img.shape)})")


class LoadGrayImaged(MapTransform):
    """Load an image file into an upright ``1 x H x W`` float32 ``MetaTensor`` (values not yet scaled).

    Args:
        keys: keys whose values are image paths (default ``"image"``).
        id_key: key of the record id, used only to name the record in errors.
        volume: what to do with a 3D volume: ``"middle"`` takes the middle slice of the LPS-reoriented volume,
            ``"error"`` raises :class:`ImageLoadError`.

    Raises:
        ImageLoadError: the file is missing, unreadable, or has an unsupported layout; names the path and record id.
    """

    def __init__(
        self,
        keys: str | Sequence[str] = SampleKey.IMAGE,
        id_key: str = SampleKey.ID,
        volume: Literal["middle", "error"] = "middle",
    ):
        super().__init__(keys)
        if volume not in ("middle", "error"):
            raise ValueError(f"volume must be 'middle' or 'error', got {volume!r}")
        self.id_key = id_key
        self.volume = volume
        self._readers = {
            "pil": PILReader(converter=_to_supported_pil_mode),
            "dicom": _GrayDicomReader(),
            "nifti": NibabelReader(),
        }
        self._load = _quiet_load_image(list(self._readers.values()))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        record_id = d.get(self.id_key)
        record_id = None if record_id is None else str(record_id)
        for key in self.key_iterator(d):
            d[key] = self.load(d[key], record_id)
        return d

    def load(self, path: str | os.PathLike, record_id: str | None = None) -> MetaTensor:
        """Load one file (see the class docstring)."""
        path = Path(path)
        if not path.is_file():
            raise ImageLoadError(path, "image file not found" if not path.exists() else "not a file", record_id)
        kind = _pick_reader(path)
        try:
            img = self._load(str(path), reader=self._readers[kind])
        except Exception as e:  # any reader failure: corrupt bytes, unsupported codec, truncated file ...
            raise ImageLoadError(path, f"cannot read as {kind.upper()}: {type(e).__name__}: {e}", record_id) from e
        bits = 8 if img.dtype == torch.uint8 else 16
        try:
            img = self._to_2d(_to_gray(img.float()))
        except ValueError as e:
            raise ImageLoadError(path, str(e), record_id) from None
        img = img.transpose(-1, -2).contiguous()  # MONAI (x, y) index order -> rows x columns
        img = MetaTensor(img.as_tensor(), meta={_BITS_META: bits, "filename_or_obj": str(path)})
        return img

    def _to_2d(self, img: MetaTensor) -> MetaTensor:
        if img.ndim == 3:
            return img
        if img.ndim == 4 and img.shape[-1] == 1:
            return img[..., 0]
        if img.ndim != 4:
            raise ValueError(f"expected a 2D image or a 3D volume, got spatial shape {tuple(img.shape[1:])}")
        if self.volume == "error":
            raise ValueError(f"3D volume of shape {tuple(img.shape[1:])}; this loader was set to 2D images only")
        img = Orientation(axcodes="LPS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(img)
        return img[..., img.shape[-1] // 2]


class ScaleToUnitd(MapTransform):
    """Map intensities to [0, 1]: fixed /255 for 8-bit files (``"auto"``), robust percentiles, or min-max.

    Args:
        keys: image keys.
        mode: ``"auto"``, ``"percentile"`` or ``"minmax"`` (see the module docstring).
        lower: lower percentile for percentile scaling.
        upper: upper percentile for percentile scaling.
    """

    def __init__(self, keys: str | Sequence[str] = SampleKey.IMAGE, mode: Intensity = "auto", lower=0.5, upper=99.5):
        super().__init__(keys)
        if mode not in ("auto", "percentile", "minmax"):
            raise ValueError(f"intensity mode must be 'auto', 'percentile' or 'minmax', got {mode!r}")
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(f"need 0 <= lower < upper <= 100 percentiles, got lower={lower}, upper={upper}")
        self.mode = mode
        self._percentile = ScaleIntensityRangePercentiles(lower, upper, b_min=0.0, b_max=1.0, clip=True)
        self._minmax = ScaleIntensity(minv=0.0, maxv=1.0)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            bits = img.meta.get(_BITS_META) if isinstance(img, MetaTensor) else None
            if self.mode == "minmax":
                d[key] = self._minmax(img)
            elif self.mode == "auto" and bits == 8:
                d[key] = (img / 255.0).clamp(0.0, 1.0)
            else:
                d[key] = self._percentile(img)
        return d


def build_load_transforms(
    size: int = 64,
    *,
    keys: str | Sequence[str] = SampleKey.IMAGE,
    keep_aspect: bool = True,
    intensity: Intensity = "auto",
    volume: Literal["middle", "error"] = "middle",
) -> Compose:
    """The deterministic part: file -> ``1 x size x size`` float32 tensor in [0, 1] (cacheable).

    Args:
        size: output side length in pixels.
        keys: image keys of the sample dict.
        keep_aspect: resize the longest side and zero-pad (True) or stretch to a square (False).
        intensity: ``"auto"``, ``"percentile"`` or ``"minmax"`` (see the module docstring).
        volume: ``"middle"`` slice or ``"error"`` for 3D volumes.

    Raises:
        ValueError: ``size`` is not a positive integer.
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if keep_aspect:
        spatial = [
            Resized(keys, spatial_size=size, size_mode="longest", mode="area"),
            ScaleToUnitd(keys, mode=intensity),
            SpatialPadd(keys, spatial_size=(size, size), mode="constant"),
        ]
    else:
        spatial = [Resized(keys, spatial_size=(size, size), mode="area"), ScaleToUnitd(keys, mode=intensity)]
    return Compose(
        [LoadGrayImaged(keys, volume=volume), *spatial, EnsureTyped(keys, dtype=torch.float32, track_meta=False)]
    )


def build_image_transforms(
    size: int = 64,
    augment: bool = False,
    *,
    keys: str | Sequence[str] = SampleKey.IMAGE,
    keep_aspect: bool = True,
    intensity: Intensity = "auto",
    volume: Literal["middle", "error"] = "middle",
    seed: int | None = None,
) -> Compose:
    """File path -> ``1 x size x size`` float32 in [0, 1], optionally augmented (see the module docstring).

    Examples::

        >>> tf = build_image_transforms(size=64, augment=True, seed=0)
        >>> sample = apply_transform(tf, {"image": "cxr.png", "id": "p1"})
    """
    parts = [build_load_transforms(size, keys=keys, keep_aspect=keep_aspect, intensity=intensity, volume=volume)]
    if augment:
        parts.append(build_augment_transforms(size, keys=keys, seed=seed))
    return Compose(parts)


def apply_transform(transform, data):
    """Run a (MONAI) transform; an :class:`ImageLoadError` that MONAI wrapped in ``RuntimeError`` is re-raised as is."""
    try:
        return transform(data)
    except RuntimeError as e:
        cause: BaseException | None = e
        while cause is not None:
            if isinstance(cause, ImageLoadError):
                raise cause from None
            cause = cause.__cause__
        raise


def load_image(
    path: str | os.PathLike, size: int = 64, *, keep_aspect: bool = True, intensity: Intensity = "auto"
) -> torch.Tensor:
    """Load one file as a ``1 x size x size`` float32 tensor in [0, 1] (for one-off use; datasets reuse transforms).

    Raises:
        ImageLoadError: the file is missing or unreadable.
    """
    tf = build_load_transforms(size, keep_aspect=keep_aspect, intensity=intensity)
    return apply_transform(tf, {SampleKey.IMAGE: str(path)})[SampleKey.IMAGE]
