"""Config loading: presets, strict keys and types, errors naming the dotted key path."""

from __future__ import annotations

import pytest
import yaml

from flare_vlp.config import (
    ConfigError,
    ExperimentConfig,
    config_from_dict,
    config_to_dict,
    list_presets,
    load_config,
)


def test_presets_load_and_round_trip(tmp_path):
    assert {"tiny", "demo", "bench"} <= set(list_presets())
    for name in list_presets():
        cfg = load_config(name)
        assert cfg.name == name
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config_to_dict(cfg)))
        assert load_config(path) == cfg


def test_overrides_merge_deeply():
    cfg = load_config("tiny", overrides={"train": {"lr": 0.01}, "data": {"synth": {"sites": 3}}})
    assert cfg.train.lr == 0.01 and cfg.data.synth["sites"] == 3 and cfg.data.synth["samples"] == 240


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"train": {"lrr": 1.0}}, r"`train.lrr` is not a known key \(did you mean `train.lr`\?\)"),
        ({"trian": {}}, r"`trian` is not a known key \(did you mean `train`\?\)"),
        ({"train": {"batch_size": "big"}}, r"`train.batch_size` expects int, got str"),
        ({"train": {"schedule": "linear"}}, r"`train.schedule` expects one of 'cosine', 'constant'"),
        ({"train": {"batch_size": 1}}, r"`train.batch_size` must be >= 2"),
        ({"data": {"synth": ["sites", 3]}}, r"`data.synth` expects dict, got list"),
        ({"model": "cnn"}, r"`model` must be a mapping"),
        ({"seed": True}, r"`seed` expects int, got bool"),
    ],
)
def test_bad_configs_name_the_key(raw, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(ExperimentConfig, raw)


def test_data_synth_is_a_plain_mapping():
    """The config layer does not import the data layer: ``data.synth`` stays a mapping here, checked by
    ``flare_vlp.experiments.builders.synth_config`` (tests/experiments/test_builders.py)."""
    assert ExperimentConfig().data.synth == {}
    cfg = config_from_dict(ExperimentConfig, {"data": {"synth": {"sitez": 3}}})
    assert cfg.data.synth == {"sitez": 3}


def test_yaml_exponent_strings_become_floats():
    cfg = config_from_dict(ExperimentConfig, {"train": {"lr": "3e-4", "grad_clip": "1e0"}})
    assert cfg.train.lr == pytest.approx(3e-4) and cfg.train.grad_clip == 1.0


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lr: [1}\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(bad)
    bad.write_text("train: {epoch: 3}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: `train.epoch` is not a known key \(did you mean `train.epochs`"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no config file or preset named 'tinyy'.*did you mean 'tiny'"):
        load_config("tinyy")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_a_retired_key_loads_at_its_old_default_and_is_refused_otherwise(tmp_path):
    """``train.prox_mu`` left the experiment config (FedProx's ``mu`` is a method setting): a file that holds its old
    default, as every run folder's config.yaml written before does, still loads; any other value is refused with the
    place the setting lives now, never silently dropped."""
    old = config_to_dict(load_config("tiny"))
    old["train"]["prox_mu"] = 0.0
    path = tmp_path / "old_run_config.yaml"
    path.write_text(yaml.safe_dump(old))
    assert load_config(path) == load_config("tiny")
    moved = r"`train\.prox_mu` is no longer an experiment setting \(0\.05\).*fl\.fedprox\.mu"
    with pytest.raises(ConfigError, match=moved):
        config_from_dict(ExperimentConfig, {"train": {"prox_mu": 0.05}})
