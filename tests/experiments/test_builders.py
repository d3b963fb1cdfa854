"""SynthCXR folders are generated once per config and never silently replaced."""

from __future__ import annotations

import pytest

from flare_vlp.config import load_config
from flare_vlp.experiments.builders import default_data_dir, prepare_manifest

SMALL = {"data": {"synth": {"sites": 2, "samples": 40, "test_per_site": 12, "unseen_site": False}}}


def test_generate_reuse_and_refuse(tmp_path):
    cfg = load_config("tiny", SMALL)
    data_dir = default_data_dir(cfg, tmp_path)
    assert data_dir.parent == tmp_path / "data" and data_dir.name.startswith("synthcxr-")
    first = prepare_manifest(cfg, data_dir)
    stamp = (data_dir / "manifest.jsonl").stat().st_mtime_ns
    assert prepare_manifest(cfg, data_dir).records == first.records  # reused, not regenerated
    assert (data_dir / "manifest.jsonl").stat().st_mtime_ns == stamp
    other = load_config("tiny", {**SMALL, "seed": 1})
    assert default_data_dir(other, tmp_path) != data_dir
    with pytest.raises(ValueError, match="not a SynthCXR folder made with this config"):
        prepare_manifest(other, data_dir)
    assert (data_dir / "manifest.jsonl").stat().st_mtime_ns == stamp
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="mine: not a SynthCXR folder"):
        prepare_manifest(cfg, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_load_model_weights_names_a_missing_file(tmp_path):
    from flare_vlp.config import load_config
    from flare_vlp.experiments.builders import build_model, load_model_weights

    missing = tmp_path / "models" / "global.safetensors"
    with pytest.raises(FileNotFoundError, match="global.safetensors"):
        load_model_weights(build_model(load_config("tiny").model), missing)
