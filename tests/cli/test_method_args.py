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


def test_a_shared_flag_name_means_one_thing():
    """FedProx's proximal `--mu` and FedOPAL's orthogonality `--orth-mu` are two flags; two methods whose same-named
    config fields differ in help text or type (one flag, two meanings) are refused when the flags are built, naming
    the flag, the field and both methods."""
    import dataclasses

    from flare_vlp.cli.method_args import FlagConflictError, _fields
    from flare_vlp.methods import registry
    from flare_vlp.methods.registry import DEFAULT_ROLE, MethodSpec, register_method, setting

    assert given_method_arguments(_args("--method", "fedopal", "--orth-mu", "0.2")) == {"orth_mu": 0.2}
    with pytest.raises(SystemExit, match=r"--mu \(fedprox\) not a setting of --method fedopal"):
        given_method_arguments(_args("--method", "fedopal", "--mu", "0.1"))
    table = _fields()
    assert table["mu"][2] == ["fedprox"] and "FedProx" in table["mu"][1]
    assert "fedopal" in table["orth_mu"][2] and "orthogonality" in table["orth_mu"][1]
    assert table["weighting"][2][:2] == ["fedavg", "fedprox"] and "fedopal" in table["weighting"][2]
    fedprox_help = dataclasses.fields(get_method("fedprox").config_cls)[-1].metadata["help"]
    for field_type, help_text, says in [(float, "the other method's mu", "help text"), (int, fedprox_help, "type")]:
        clash = dataclasses.make_dataclass("Clash", [("mu", field_type, setting(1, help_text))], frozen=True)
        register_method(MethodSpec("clash", clash, "x.Strategy", {DEFAULT_ROLE: "x.Client"}, "a test method"))
        try:
            with pytest.raises(FlagConflictError, match=rf"--mu would mean two things: .*'mu' has {says} .* in method "
                                                        r"'clash' but .* in 'fedprox'"):  # fmt: skip
                _fields()
        finally:
            registry._REGISTRY.pop("clash")
    assert "clash" not in method_names()
