"""Shared fixtures. Everything runs offline: HF lookups are forced local, and nothing binds beyond 127.0.0.1."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory):
    """A small SynthCXR federation (2 sites + unseen, 64 px) generated once per test session."""
    from flare_vlp.data.manifest import read_manifest
    from flare_vlp.data.synthetic import SynthConfig, generate_synthcxr

    out = tmp_path_factory.mktemp("synth") / "synthcxr"
    cfg = SynthConfig(sites=2, samples=640, test_per_site=40, unseen_site=True, unseen_samples=40, seed=0)
    generate_synthcxr(cfg, out, workers=1)
    return read_manifest(out / "manifest.jsonl")


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """``tiny``'s SynthCXR (2 sites + unseen) generated once, in the layout the executors' ``data_dir`` expects."""
    from flare_vlp.config import load_config
    from flare_vlp.experiments.builders import prepare_manifest

    data_dir = tmp_path_factory.mktemp("fl") / "synthcxr"
    prepare_manifest(load_config("tiny", {"train": {"bn_recalibration_batches": 1}}), data_dir)
    return data_dir
