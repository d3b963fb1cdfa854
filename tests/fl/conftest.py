"""Fixtures of the FLARE plugin tests: one tiny SynthCXR folder (the ``tiny`` preset's data) per session."""

from __future__ import annotations

import pytest

FAST = {"train": {"bn_recalibration_batches": 1}}
"""Config overrides that keep a tiny round to about a second on 2 CPU cores."""


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """``tiny``'s SynthCXR (2 sites + unseen) generated once, in the layout the executors' ``data_dir`` expects."""
    from flare_vlp.config import load_config
    from flare_vlp.experiments.builders import prepare_manifest

    data_dir = tmp_path_factory.mktemp("fl") / "synthcxr"
    prepare_manifest(load_config("tiny", FAST), data_dir)
    return data_dir
