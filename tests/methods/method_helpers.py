"""Settings shared by the platform tests."""

from __future__ import annotations

PUBLIC = {"data": {"synth": {"public_samples": 32}}, "train": {"bn_recalibration_batches": 1}}
"""tiny + a 32-image public split; one BN-recalibration batch keeps a tiny round to about a second."""

CREAMFL = {"data": {"synth": {"sites": 3, "public_samples": 32}}, "train": {"bn_recalibration_batches": 1}}
"""tiny with three sites (one per CreamFL role) and a 32-pair public split."""
CREAMFL_ROLES = {"site-1": "image_text", "site-2": "image", "site-3": "text"}
