"""The run spec: built and checked once before anything starts (pre-launch refusals in well under 2 s, no FLARE),
a plain-dict round trip for job configs, and one data source every reader resolves the same way (every registered
method runs from a YAML ``data.manifest`` alone)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from method_helpers import CREAMFL

from flare_vlp.config import ConfigError, merge_overrides, preset_path
from flare_vlp.methods.registry import get_method, method_names
from flare_vlp.methods.run_spec import DataSource, RunSpec
from flare_vlp.methods.runner import run_in_process

SITES = ("site-1",)


@pytest.fixture(scope="module")
def manifest_config(creamfl_data_dir, tmp_path_factory) -> Path:
    """tiny (+ a public split) as a user's YAML whose ``data.manifest`` names the data: no ``data_dir`` anywhere."""
    raw = merge_overrides(yaml.safe_load(preset_path("tiny").read_text()), CREAMFL)
    raw["data"]["manifest"] = str(Path(creamfl_data_dir) / "manifest.jsonl")
    path = tmp_path_factory.mktemp("yaml") / "manifest.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("method", method_names())
def test_every_method_runs_from_a_yaml_data_manifest(method, manifest_config, tmp_path):
    """Sites, the server and the public split all find the rows through the config's data.manifest (a LoRA or
    CreamFL job used to pass validation and then fail at the sites)."""
    spec = RunSpec(method, config=str(manifest_config), sites=SITES, num_rounds=1, local_steps=1)
    assert spec.data == DataSource() and (spec.roles is None) == (set(get_method(method).roles) == {"default"})
    run = run_in_process(spec, tmp_path / "run")
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {e["site"] for e in events if e["event"] == "site"} == set(SITES)
    assert [e["round"] for e in events if e["event"] == "round"][-1] == 0
    assert not [e for e in events if e["event"] in ("rejected", "failed")]
    assert set(run.algos) == set(SITES)


def test_spec_round_trips_through_a_plain_dict():
    spec = RunSpec(
        "creamfl", method_settings={"kd_weight": 0.5}, config="tiny", config_overrides={"seed": 3}, num_rounds=3,
        sites=("site-1", "site-2", "site-3"), role_mix="image:1,text:1,image_text:1",
        role_settings={"image": {"options": {"model": {"image_encoder": "cnn"}}}},
        data=DataSource(data_dir="data/x", site_map={"site-1": "a"}, data_sites=("a", "b")),
        device={"site-1": "cuda:1"}, local_steps=2, num_threads=1, task_timeout=30, wait_after_min_s=5,
    )  # fmt: skip
    plain = spec.to_dict()
    assert json.loads(json.dumps(plain)) == plain and RunSpec.from_dict(plain) == spec
    assert spec.roles == {"site-1": "image", "site-2": "text", "site-3": "image_text"} and spec.role_mix is None
    assert spec.min_clients == 3 and spec.device_of("site-1") == "cuda:1" and spec.device_of("site-2") == "cpu"
    assert spec.data.data_dir == str(Path("data/x").resolve()) and spec.method_settings["kd_weight"] == 0.5
    assert spec.role_options("image") == {"model": {"image_encoder": "cnn"}} and spec.role_options("text") == {}
    assert spec.role_overrides("image") == {"seed": 3}
    assert RunSpec("fedavg", data=DataSource(data_dir="~/x")).data.data_dir == "~/x"  # a job for any user's home


@pytest.mark.parametrize(
    ("fields", "error", "match"),
    [
        ({"num_rounds": 0}, ValueError, r"fedavg: `num_rounds` must be an integer >= 1, got 0"),
        ({"local_steps": 0}, ValueError, r"`local_steps` must be an integer >= 1"),
        ({"sites": ("a",), "min_clients": 2}, ValueError, r"min_clients=2 but only 1 sites \['a'\]"),
        ({"sites": ("a", "a")}, ValueError, r"names a site twice"),
        ({"device": "gpu"}, ValueError, r"device 'gpu' of every site: use cpu, cuda, cuda:N or auto"),
        ({"sites": ("a",), "device": {"b": "cpu"}}, ValueError, r"`device` names sites \['b'\]"),
        ({"method_settings": {"weighting": "nope"}}, ConfigError, r"`fl\.fedavg\.weighting`"),
        ({"role_settings": {"default": {"opts": {}}}}, ValueError, r"role_settings\['default'\]: unknown keys"),
        ({"role_settings": {"image": {}}}, ValueError, r"method 'fedavg' has no site role 'image'"),
        ({"role_mix": "image:1", "sites": ("a",)}, ValueError, r"method 'fedavg' has no site roles"),
    ],
)
def test_bad_specs_are_refused_at_construction_naming_the_field(fields, error, match):
    with pytest.raises(error, match=match):
        RunSpec("fedavg", **fields)


def test_from_dict_names_unknown_and_missing_keys():
    with pytest.raises(ValueError, match=r"unknown keys \['num_round'\]"):
        RunSpec.from_dict({"method": "fedavg", "num_round": 2})
    with pytest.raises(ValueError, match=r"unknown keys \['data.dir'\]"):
        RunSpec.from_dict({"method": "fedavg", "data": {"dir": "x"}})
    with pytest.raises(ValueError, match=r"missing \['method'\]"):
        RunSpec.from_dict({})


# -- checks before launch: each refused in well under 2 s, nothing started, nothing generated ------------------


def _refused(spec: RunSpec, match: str) -> None:
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=match):
        spec.validate()
    assert time.perf_counter() - t0 < 2


def test_a_preset_without_the_split_the_method_reads_is_refused(tmp_path):
    """CreamFL on ``tiny`` (no public split): refused naming the method, the preset and the setting, before any data
    is generated."""
    spec = RunSpec("creamfl", config="tiny", data=DataSource(data_dir=str(tmp_path / "data")))
    _refused(spec, r"method 'creamfl' reads the 'public' split .* config 'tiny' .* set data.synth.public_samples > 0")
    assert not (tmp_path / "data").exists()


def test_a_manifest_without_the_split_is_refused_naming_the_file(tiny_data_dir):
    manifest = Path(tiny_data_dir) / "manifest.jsonl"
    spec = RunSpec("creamfl", data=DataSource(manifest=str(manifest)))
    _refused(spec, rf"method 'creamfl' reads the 'public' split .* manifest {manifest} has no 'public' split$")


def test_a_role_mix_that_does_not_fit_the_data_sites_is_refused(tmp_path):
    data = DataSource(data_dir=str(tmp_path / "data"))
    spec = RunSpec("creamfl", config_overrides=CREAMFL, role_mix="image:2,text:2", data=data)
    _refused(spec, r"role mix 'image:2,text:2' gives 4 sites, but there are 3 training sites .* config 'tiny'")
    _refused(spec.replace(role_mix=None, data=DataSource(data_dir=data.data_dir, data_sites=("site-9",))),
             r"data_sites \['site-9'\]: \['site-9'\] not among the training sites")  # fmt: skip
    _refused(spec.replace(role_mix=None, data=DataSource(data_dir=data.data_dir, site_map={"site-1": "hospital"})),
             r"site_map names data sites \['hospital'\] that have no training rows")  # fmt: skip
    assert not (tmp_path / "data").exists()


def test_bad_role_options_and_configs_are_refused_naming_the_role(tmp_path):
    data = DataSource(data_dir=str(tmp_path / "data"))
    spec = RunSpec("creamfl", config_overrides=CREAMFL, data=data, role_settings={"text": {"options": {"modle": {}}}})
    _refused(spec, r"method 'creamfl', role 'text': bad options \{'modle': \{\}\}: .*modle")
    bad = RunSpec("creamfl", config_overrides=CREAMFL, data=data,
                  role_settings={"text": {"config_overrides": {"model": {"embed_dim": "x"}}}})  # fmt: skip
    _refused(bad, r"model.embed_dim")
    _refused(RunSpec("fedavg", config="tiny"), r"fedavg: no data source; give `data_dir` or `manifest`")


def test_cli_refuses_creamfl_on_tiny_before_flare_starts(tmp_path, capsys):
    """The issue's case: `flare-vlp run --method creamfl --config tiny` ended 50 lines of FLARE logs later with
    "Simulation failed with return code 2"; now one error line, no run folder, no data generated, no FLARE."""
    from flare_vlp.cli import main

    out = tmp_path / "run"
    assert main(["run", "--method", "creamfl", "--config", "tiny", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: method 'creamfl' reads the 'public' split of the shared data, but config 'tiny'")
    assert not out.exists() and not (tmp_path / "data").exists()
