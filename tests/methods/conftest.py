"""Fixtures of the platform tests: a tiny SynthCXR with three sites and a public split (for CreamFL)."""

from __future__ import annotations

import pytest
from method_helpers import CREAMFL


@pytest.fixture(scope="session")
def creamfl_data_dir(tmp_path_factory):
    """tiny with three sites and a public split (:data:`method_helpers.CREAMFL`)."""
    from flare_vlp.config import load_config
    from flare_vlp.experiments.builders import prepare_manifest

    data_dir = tmp_path_factory.mktemp("creamfl") / "synthcxr"
    prepare_manifest(load_config("tiny", CREAMFL), data_dir)
    return data_dir
