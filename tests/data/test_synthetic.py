"""SynthCXR generator: determinism, output format, atomicity, sizes and the summary."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flare_vlp.data.manifest import SYNTHCXR_FINDINGS, read_manifest
from flare_vlp.data.synthetic import SynthConfig, SynthSummary, generate_synthcxr, render_montage, render_sample
from flare_vlp.data.synthetic import generator as gen_mod
from flare_vlp.data.synthetic.sites import build_sites
from flare_vlp.utils.io import OutputPathError

SMALL = dict(sites=3, samples=60, test_per_site=12, seed=3)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.suffix != ".json"
    }


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> tuple[Path, SynthSummary]:
    out = tmp_path_factory.mktemp("synth") / "ds"
    cfg = SynthConfig(**SMALL, unseen_site=True, unseen_samples=10, public_samples=8)
    return out, generate_synthcxr(cfg, out, workers=1)


def test_manifest_is_valid_and_complete(small_set):
    out, summary = small_set
    m = read_manifest(out / "manifest.jsonl")
    assert m.findings == SYNTHCXR_FINDINGS
    assert len(m) == summary.n_total == 60 + 3 * 12 + 10 + 8
    assert m.sites == ["public", "site-1", "site-2", "site-3", "unseen"]
    assert {r.split for r in m.select(site="unseen")} == {"test"}
    assert {(r.site, r.split) for r in m if r.split == "public"} == {("public", "public")}
    raw = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert all(not Path(r["image"]).is_absolute() and r["image"].startswith("images/") for r in raw)
    img = Image.open(m[0].image)
    assert img.mode == "L" and img.size == (64, 64)
    meta = json.loads((out / "synthcxr.json").read_text())
    assert meta["config"]["sites"] == 3 and len(meta["sites"]) == 5 and meta["summary"]["n_total"] == len(m)


def test_summary_text_names_every_site(small_set):
    _, summary = small_set
    text = summary.to_text()
    for name in ("site-1", "site-2", "site-3", "unseen", "public", "samples in"):
        assert name in text
    assert summary.samples_per_s > 0


def test_same_seed_same_bytes_any_workers(tmp_path, small_set):
    out, _ = small_set
    cfg = SynthConfig(**SMALL, unseen_site=True, unseen_samples=10, public_samples=8)
    again = generate_synthcxr(cfg, tmp_path / "again", workers=2)
    assert again.workers == 2
    assert _tree_bytes(out) == _tree_bytes(tmp_path / "again")


def test_different_seed_differs(tmp_path):
    a = generate_synthcxr(SynthConfig(sites=1, samples=4, test_per_site=0, seed=1), tmp_path / "a", workers=1)
    b = generate_synthcxr(SynthConfig(sites=1, samples=4, test_per_site=0, seed=2), tmp_path / "b", workers=1)
    assert a.n_total == b.n_total == 4
    ta, tb = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert ta.keys() == tb.keys()
    assert all(ta[k] != tb[k] for k in ta)


@pytest.mark.parametrize("size", [64, 128, 224])
def test_render_sizes(size):
    cfg = SynthConfig(size=size, sites=2)
    site = build_sites(cfg)[0]
    for i in range(2):
        img, labels, report, dropped = render_sample(cfg, site, "test", i)
        assert img.shape == (size, size) and img.dtype == np.uint8
        assert 20 < img.mean() < 235 and img.std() > 10
        assert set(labels) == set(SYNTHCXR_FINDINGS) and report and isinstance(dropped, list)


def test_supersample_one_works():
    cfg = SynthConfig(supersample=1, sites=1)
    img, *_ = render_sample(cfg, build_sites(cfg)[0], "train", 0)
    assert img.shape == (64, 64)


def test_progress_reaches_total(tmp_path):
    calls: list[tuple[int, int]] = []
    generate_synthcxr(
        SynthConfig(sites=1, samples=50, test_per_site=0),
        tmp_path / "p",
        workers=1,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls[-1] == (50, 50) and len(calls) == 2


def test_missing_parent_raises_and_leaves_nothing(tmp_path):
    target = tmp_path / "no" / "such" / "ds"
    with pytest.raises(OutputPathError, match="parent"):
        generate_synthcxr(SynthConfig(sites=1, samples=2, test_per_site=0), target, workers=1)
    assert not (tmp_path / "no").exists()


def test_non_empty_target_needs_overwrite(tmp_path):
    cfg = SynthConfig(sites=1, samples=2, test_per_site=0)
    generate_synthcxr(cfg, tmp_path / "d", workers=1)
    with pytest.raises(OutputPathError, match="not empty"):
        generate_synthcxr(cfg, tmp_path / "d", workers=1)
    generate_synthcxr(cfg, tmp_path / "d", workers=1, overwrite=True)
    assert len(read_manifest(tmp_path / "d" / "manifest.jsonl")) == 2


def test_failure_mid_generation_leaves_no_folder(tmp_path, monkeypatch):
    real = gen_mod.render_sample
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(gen_mod, "render_sample", flaky)
    with pytest.raises(RuntimeError, match="disk on fire"):
        generate_synthcxr(SynthConfig(sites=1, samples=10, test_per_site=0), tmp_path / "ds", workers=1)
    assert list(tmp_path.iterdir()) == []


def test_montage_writes_png(small_set, tmp_path):
    out, _ = small_set
    for by in ("finding", "site"):
        png = render_montage(out, tmp_path / f"{by}.png", by=by, per_row=4)
        assert Image.open(png).size[0] > 100
    with pytest.raises(ValueError, match="`by`"):
        render_montage(out, tmp_path / "x.png", by="label")


def test_inf_alpha_serializes(tmp_path):
    cfg = SynthConfig.preset("iid", sites=2, samples=4, test_per_site=0)
    assert math.isinf(cfg.alpha) and cfg.acq_shift == 0
    generate_synthcxr(cfg, tmp_path / "iid", workers=1)
    assert json.loads((tmp_path / "iid" / "synthcxr.json").read_text())["config"]["alpha"] == "inf"
