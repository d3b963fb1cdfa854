"""ManifestDataset / CachedManifestDataset over a small manifest written to tmp_path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from flare_vlp.data.datasets import CachedManifestDataset, ManifestDataset
from flare_vlp.data.keys import SampleKey
from flare_vlp.data.manifest import Record, read_manifest, write_manifest
from flare_vlp.data.text import TextImageCollate, load_tokenizer
from flare_vlp.data.transforms import ImageLoadError

FINDINGS = ("effusion", "opacity", "nodule")  # deliberately not the default order


@pytest.fixture
def manifest(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    records = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (48, 40), dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")
        labels = {"opacity": i % 2, "effusion": int(i == 3), "nodule": int(i >= 4)}
        report = "No acute findings." if i % 2 == 0 else f"Patchy opacity in the right lower lobe, case {i}."
        records.append(Record(f"p{i}", str(tmp_path / "img" / f"{i}.png"), report, labels, f"site-{i % 2 + 1}"))
    path = write_manifest(records, tmp_path / "manifest.jsonl")
    return read_manifest(path, findings=FINDINGS)


def test_manifest_dataset_batch_with_text_collate(manifest):
    ds = ManifestDataset(manifest, size=32)
    sample = ds[3]
    assert set(sample) == {"image", "report", "labels", "id", "site", "split"}
    assert sample["image"].shape == (1, 32, 32) and sample["id"] == "p3"
    assert sample["labels"].tolist() == [1.0, 1.0, 0.0]  # effusion, opacity, nodule
    loader = DataLoader(ds, batch_size=4, collate_fn=TextImageCollate(load_tokenizer(), max_length=12))
    batch = next(iter(loader))
    assert batch[SampleKey.IMAGE].shape == (4, 1, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == [r.label_vector(FINDINGS) for r in manifest.records[:4]]
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["input_ids"].dtype == torch.long
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"].shape[1] <= 12
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()  # short report is padded
    assert batch["id"] == ["p0", "p1", "p2", "p3"] and batch["site"] == ["site-1", "site-2", "site-1", "site-2"]


def test_cached_matches_uncached_and_reuses_its_file(manifest, tmp_path, monkeypatch):
    seen = []
    cache = tmp_path / "cache.pt"
    cached = CachedManifestDataset(manifest, size=32, cache_path=cache, progress=lambda d, n: seen.append((d, n)))
    assert cache.is_file() and seen[-1] == (6, 6)
    assert cached.images.shape == (6, 1, 32, 32) and cached.images.dtype == torch.uint8
    plain = ManifestDataset(manifest, size=32)
    for i in range(len(plain)):
        assert torch.allclose(cached[i]["image"], plain[i]["image"], atol=0.5 / 255 + 1e-6)
        assert cached[i]["labels"].tolist() == plain[i]["labels"].tolist() and cached[i]["report"] == plain[i]["report"]

    def no_decode(*args, **kwargs):
        raise AssertionError("the cache file should have been used")

    monkeypatch.setattr(CachedManifestDataset, "_decode", no_decode)
    again = CachedManifestDataset(manifest, size=32, cache_path=cache)
    assert torch.equal(again.images, cached.images)
    monkeypatch.undo()
    bigger = CachedManifestDataset(manifest, size=16, cache_path=cache)  # other settings: rebuilt, file replaced
    assert bigger.images.shape == (6, 1, 16, 16)
    cache.write_bytes(b"truncated")  # an unreadable cache is rebuilt, not trusted
    assert CachedManifestDataset(manifest, size=16, cache_path=cache).images.shape == (6, 1, 16, 16)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".cache")] == []  # no temp files left


def test_cached_augmentation_is_seeded_and_float16_option(manifest):
    a = CachedManifestDataset(manifest, size=32, augment=True, seed=1)
    b = CachedManifestDataset(manifest, size=32, augment=True, seed=1)
    xa, xb = [a[i]["image"] for i in range(6)], [b[i]["image"] for i in range(6)]
    assert all(torch.equal(p, q) for p, q in zip(xa, xb))
    assert all(p.shape == (1, 32, 32) and p.dtype == torch.float32 for p in xa)
    half = CachedManifestDataset(manifest, size=32, cache_dtype="float16")
    assert half.images.dtype == torch.float16
    with pytest.raises(ValueError, match="cache_dtype"):
        CachedManifestDataset(manifest, cache_dtype="int4")


def test_missing_and_corrupt_images_raise_with_path_and_id(manifest, tmp_path):
    bad = manifest.records[2].image
    with open(bad, "wb") as fh:
        fh.write(b"\x89PNG garbage")
    with pytest.raises(ImageLoadError, match=r"2\.png \(record 'p2'\)"):
        ManifestDataset(manifest, size=32)[2]
    with pytest.raises(ImageLoadError, match=r"2\.png \(record 'p2'\)") as err:
        CachedManifestDataset(manifest, size=32, num_workers=2)  # the error's type survives the worker processes
    assert err.value.record_id == "p2" and err.value.path == bad
    missing = manifest.records[4].image
    (tmp_path / "img" / "4.png").unlink()
    with pytest.raises(ImageLoadError, match=r"4\.png \(record 'p4'\): image file not found") as err:
        CachedManifestDataset(manifest, size=32)
    assert err.value.path == missing
