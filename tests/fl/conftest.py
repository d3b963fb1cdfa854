"""Settings of the FLARE plugin tests (the tiny SynthCXR folder is the session fixture ``tiny_data_dir``)."""

from __future__ import annotations

FAST = {"train": {"bn_recalibration_batches": 1}}
"""Config overrides that keep a tiny round to about a second on 2 CPU cores."""
