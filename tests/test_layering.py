"""The layer rule: data/ models/ algorithms/ training/ evaluation/ import without nvflare (only fl/ may import it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "flare_vlp"
NVFLARE_FREE = ["data", "models", "algorithms", "training", "evaluation", "utils"]


@pytest.mark.parametrize("layer", [layer for layer in NVFLARE_FREE if (PACKAGE / layer).is_dir()])
def test_layer_imports_without_nvflare(layer):
    modules = sorted(
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        for p in (PACKAGE / layer).rglob("*.py")
        if p.name != "__main__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m.removesuffix('.__init__'))\n"
        "bad = sorted(m for m in sys.modules if m == 'nvflare' or m.startswith('nvflare.'))\n"
        "assert not bad, bad[:3]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_cli_help_is_light():
    code = "import sys; from flare_vlp.cli import build_parser; build_parser(); assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
