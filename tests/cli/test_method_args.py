"""`flare-vlp run`'s method flags come from the registry's typed configs; the YAML `fl:` section is validated."""

from __future__ import annotations

import pytest

from flare_vlp.cli import build_parser
from flare_vlp.cli.method_args import given_method_arguments
from flare_vlp.config import ConfigError
from flare_vlp.methods.registry import fl_settings, get_method, method_config, method_names


def _args(*flags: str):
    return build_parser().parse_args(["run", "--out", "x", *flags])


def test_every_config_field_is_a_flag_of_its_methods():
    args = _args("--method", "feddra", "--rho", "0.1", "--stage1-steps", "2", "--deep-groups", "deep", "image_head")
    assert given_method_arguments(args) == {"rho": 0.1, "stage1_steps": 2, "deep_groups": ["deep", "image_head"]}
    assert method_config("feddra", given_method_arguments(args)).deep_groups == ["deep", "image_head"]
    assert given_method_arguments(_args("--method", "fedavg")) == {}
    with pytest.raises(SystemExit):  # a Literal field's choices are enforced by argparse
        _args("--method", "feddra", "--signal", "lots")


def test_a_flag_of_another_method_is_an_error_naming_both():
    with pytest.raises(SystemExit, match=r"--rho \(fedaid/feddra\) not a setting of --method fedavg"):
        given_method_arguments(_args("--method", "fedavg", "--rho", "0.1"))


def test_fl_section_gives_run_keys_and_validates_every_method_subsection():
    fl = {"rounds": 6, "feddra": {"rho": 0.1}, "fedprox": {"mu": 0.05}}
    assert fl_settings(fl, "feddra") == {
        "rounds": 6,
        "local_steps": None,
        "device": "cpu",
        "method_config": {"rho": 0.1},
    }
    with pytest.raises(ConfigError, match="fl.fedprox.mu"):
        fl_settings({"fedprox": {"mu": 0}}, "feddra")
    with pytest.raises(ConfigError, match="did you mean `fl.rounds`"):
        fl_settings({"round": 3}, "fedavg")
    with pytest.raises(ConfigError, match="fl.feddra.rhoo"):
        fl_settings({"feddra": {"rhoo": 1}}, "feddra")


def test_registry_names_and_errors():
    assert method_names()[:4] == ["fedavg", "fedprox", "fedaid", "feddra"]
    with pytest.raises(ValueError, match="did you mean 'fedprox'"):
        get_method("fedprx")
    assert get_method("feddra").job_name == "feddra_vlp"
