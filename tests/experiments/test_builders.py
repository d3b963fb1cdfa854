"""SynthCXR settings are checked strictly (errors name `data.synth.<key>`); folders are generated once per config
and never silently replaced."""

from __future__ import annotations

import pytest

from flare_vlp.config import ConfigError, ExperimentConfig, config_from_dict, load_config
from flare_vlp.experiments.builders import (
    default_data_dir,
    prepare_manifest,
    resolved_config_dict,
    synth_config,
    validate_config,
)

SMALL = {"data": {"synth": {"sites": 2, "samples": 40, "test_per_site": 12, "unseen_site": False}}}


@pytest.mark.parametrize(
    "synth, match",
    [
        ({"sitez": 3}, r"`data.synth.sitez` is not a known key \(did you mean `data.synth.sites`\?\)"),
        ({"samples": "many"}, r"`data.synth.samples` expects int, got str"),
        ({"alpha": 0}, r"`data.synth`: `alpha` must be > 0"),
    ],
)
def test_bad_synth_settings_name_the_key(synth, match):
    cfg = load_config("tiny", {"data": {"synth": synth}})  # the config layer cannot check data.synth ...
    with pytest.raises(ConfigError, match=match):
        synth_config(cfg)  # ... the experiments layer does, before any work
    with pytest.raises(ConfigError, match=match):
        validate_config(cfg)
    with pytest.raises(ConfigError, match=match):
        prepare_manifest(cfg, "never-created")


def test_bad_synth_key_fails_even_with_a_manifest(tmp_path):
    cfg = config_from_dict(ExperimentConfig, {"data": {"manifest": "m.jsonl", "image_size": 48, "synth": {"x": 1}}})
    with pytest.raises(ConfigError, match=r"`data.synth.x` is not a known key"):
        validate_config(cfg)
    ok = config_from_dict(ExperimentConfig, {"data": {"manifest": "m.jsonl", "image_size": 48}})
    assert validate_config(ok) is ok  # image size 48 is fine when SynthCXR is not generated
    assert resolved_config_dict(ok)["data"]["synth"] == {}


def test_synth_defaults_and_resolved_round_trip():
    cfg = ExperimentConfig()
    synth = synth_config(cfg)
    assert synth.unseen_site is True and synth.seed == cfg.seed and synth.size == cfg.data.image_size
    assert synth_config(load_config("tiny", {"data": {"synth": {"unseen_site": False}}})).unseen_site is False
    iid = load_config("tiny", {"seed": 3, "data": {"synth": {"alpha": "inf", "acq_shift": 0.0}}})
    resolved = resolved_config_dict(iid)
    assert resolved["data"]["synth"]["alpha"] == "inf" and resolved["data"]["synth"]["seed"] == 3
    again = config_from_dict(ExperimentConfig, resolved)
    assert synth_config(again) == synth_config(iid)
    assert default_data_dir(again, ".") == default_data_dir(iid, ".")


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
