"""Settings shared by the platform tests."""

from __future__ import annotations

PUBLIC = {"data": {"synth": {"public_samples": 32}}, "train": {"bn_recalibration_batches": 1}}
"""tiny + a 32-image public split; one BN-recalibration batch keeps a tiny round to about a second."""
