"""Image loading on real files: PNG (8/16-bit), JPEG (gray/RGB), DICOM (real CR MONOCHROME1, CT, MR), NIfTI."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pydicom.data import get_testdata_file

from flare_vlp.data.augment import build_augment_transforms
from flare_vlp.data.transforms import (
    ImageLoadError,
    LoadGrayImaged,
    apply_transform,
    build_image_transforms,
    build_load_transforms,
    load_image,
)


def _check_unit_image(x: torch.Tensor, size: int) -> None:
    assert isinstance(x, torch.Tensor) and type(x) is torch.Tensor  # plain tensor, no MetaTensor overhead
    assert x.shape == (1, size, size) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float(x.std()) > 0.01


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


def _pooled(raw: np.ndarray, size: int) -> torch.Tensor:
    return F.adaptive_avg_pool2d(torch.as_tensor(raw.astype(np.float32))[None, None], size)[0, 0]


def test_png_saved_with_pil_comes_out_upright(tmp_path):
    a = np.zeros((20, 40), np.uint8)  # 20 rows x 40 columns, bright block in the top-left corner
    a[:5, :10] = 255
    Image.fromarray(a).save(tmp_path / "asym.png")
    x = load_image(tmp_path / "asym.png", size=40)  # longest side 40 -> 20 x 40, padded 10 rows above and below
    assert x.shape == (1, 40, 40)
    assert torch.all(x[0, 10:15, :10] == 1.0)
    assert float(x[0, :10].max()) == 0.0 and float(x[0, 15:].max()) == 0.0 and float(x[0, 10:15, 10:].max()) == 0.0
    stretched = load_image(tmp_path / "asym.png", size=40, keep_aspect=False)
    assert float(stretched[0, :10, :10].mean()) > 0.9 and float(stretched[0, 10:, :].max()) == 0.0


def test_8bit_png_is_divided_by_255_not_stretched(tmp_path):
    a = np.full((32, 32), 100, np.uint8)
    a[:, 16:] = 150
    Image.fromarray(a).save(tmp_path / "g.png")
    x = load_image(tmp_path / "g.png", size=32)
    assert torch.allclose(x[0, :, :16], torch.tensor(100 / 255))
    assert torch.allclose(x[0, :, 16:], torch.tensor(150 / 255))


def test_16bit_png_keeps_its_range(tmp_path):
    a = np.tile(np.linspace(1000, 60000, 64).astype(np.uint16), (48, 1))  # horizontal ramp
    Image.fromarray(a).save(tmp_path / "ramp16.png")
    assert Image.open(tmp_path / "ramp16.png").mode.startswith("I;16")
    x = load_image(tmp_path / "ramp16.png", size=64, keep_aspect=False)
    _check_unit_image(x, 64)
    row = x[0, 10]
    assert bool(torch.all(row[1:] >= row[:-1])) and float(row[0]) == 0.0 and float(row[-1]) == 1.0
    assert len(torch.unique(row)) > 50  # not quantised to 8 bits, not saturated


def test_gray_and_rgb_jpeg(tmp_path):
    gray = np.tile(np.linspace(0, 255, 48).astype(np.uint8)[:, None], (1, 64))  # vertical ramp: dark top
    Image.fromarray(gray).save(tmp_path / "g.jpg", quality=95)
    x = load_image(tmp_path / "g.jpg", size=32, keep_aspect=False)
    _check_unit_image(x, 32)
    assert float(x[0, 0].mean()) < 0.1 and float(x[0, -1].mean()) > 0.9
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[:, :20] = (255, 0, 0)  # red: luma 76
    rgb[:, 20:] = (0, 0, 255)  # blue: luma 29
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=95)
    y = load_image(tmp_path / "c.jpg", size=40)
    assert y.shape == (1, 40, 40)
    assert abs(float(y[0, :, 2:18].mean()) - 76 / 255) < 0.03 and abs(float(y[0, :, 22:38].mean()) - 29 / 255) < 0.03


def test_real_chest_cr_monochrome1_is_inverted():
    path = get_testdata_file("RG1_UNCI.dcm")  # pydicom-data: a real PA chest CR
    assert path is not None, "pydicom-data is not installed"
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsAllocated == 16 and ds.BitsStored > 8
    x = load_image(path, size=64)
    _check_unit_image(x, 64)
    s = 32
    y = load_image(path, size=s, keep_aspect=False)
    raw = _pooled(ds.pixel_array, s)
    assert _corr(y[0], raw) < -0.9  # inverted with respect to the stored values, in the same orientation
    assert _corr(y[0], raw.T) > -0.8  # ... and not transposed
    spine = y[0, 6:18, 14:18].mean()  # mediastinum / spine column: bright
    lungs = torch.cat([y[0, 6:18, 6:11].flatten(), y[0, 6:18, 21:26].flatten()]).mean()
    assert float(spine) > float(lungs) + 0.2


@pytest.mark.parametrize("name, rows", [("CT_small.dcm", 128), ("MR_small.dcm", 64)])
def test_ct_and_mr_dicom(name, rows):
    path = get_testdata_file(name)
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.Rows == rows
    x = load_image(path, size=32)
    _check_unit_image(x, 32)
    raw = _pooled(ds.pixel_array, 32)
    assert _corr(x[0], raw) > 0.9 and _corr(x[0], raw) > _corr(x[0], raw.T) + 0.05  # rows x columns, upright


def test_nifti_2d_and_3d(tmp_path):
    import nibabel as nib

    a = np.zeros((20, 40), np.float32)
    a[:5, :10] = 1.0
    nib.save(nib.Nifti1Image(a.T.copy(), np.eye(4)), tmp_path / "img2d.nii.gz")  # (x, y) index order, as MONAI
    x = load_image(tmp_path / "img2d.nii.gz", size=40, intensity="minmax")
    assert x.shape == (1, 40, 40) and torch.all(x[0, 10:15, :10] == 1.0) and float(x[0, 10:15, 10:].max()) == 0.0

    vol = np.zeros((16, 16, 5), np.float32)
    vol[4:8, 4:8, 2] = 5.0  # only the middle slice has a square
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "vol.nii")
    y = load_image(tmp_path / "vol.nii", size=16, intensity="minmax")
    assert y.shape == (1, 16, 16) and float(y.sum()) == 16.0
    with pytest.raises(ImageLoadError, match="3D volume"):
        apply_transform(LoadGrayImaged(volume="error"), {"image": str(tmp_path / "vol.nii"), "id": "v1"})


def test_corrupt_and_missing_files_name_the_path(tmp_path):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(ImageLoadError, match="corrupt.png") as err:
        load_image(bad)
    assert err.value.path == str(bad)
    tf = build_image_transforms(size=32)
    with pytest.raises(ImageLoadError, match=r"nope\.png \(record 'rec-7'\): image file not found") as err:
        apply_transform(tf, {"image": str(tmp_path / "nope.png"), "id": "rec-7"})
    assert err.value.record_id == "rec-7"
    with pytest.raises(ImageLoadError, match="cannot read as DICOM"):
        (tmp_path / "x.dcm").write_bytes(b"not a dicom")
        load_image(tmp_path / "x.dcm")


def test_augmentation_is_seeded_and_stays_in_range(tmp_path):
    a = (np.random.default_rng(1).random((64, 64)) * 255).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "n.png")
    base = load_image(tmp_path / "n.png", size=64)
    outs = [build_augment_transforms(64, seed=3, prob=1.0)({"image": base})["image"] for _ in range(2)]
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], base)
    assert outs[0].shape == (1, 64, 64) and float(outs[0].min()) >= 0.0 and float(outs[0].max()) <= 1.0
    tf = build_image_transforms(64, augment=True, seed=3)
    first = apply_transform(tf, {"image": str(tmp_path / "n.png")})["image"]
    assert type(first) is torch.Tensor and first.dtype == torch.float32


def test_bad_arguments_fail_at_construction():
    with pytest.raises(ValueError, match="size must be a positive integer"):
        build_load_transforms(0)
    with pytest.raises(ValueError, match="volume must be"):
        LoadGrayImaged(volume="first")
    with pytest.raises(ValueError, match="jitter ranges must be >= 0"):
        build_augment_transforms(rotate_deg=-1)
