"""Settings shared by the platform tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

CREAMFL = {"data": {"synth": {"sites": 3, "public_samples": 32}}, "train": {"bn_recalibration_batches": 1}}
"""tiny with three sites (one per CreamFL role) and a 32-pair public split; one BN-recalibration batch keeps a tiny
round to about a second."""
CREAMFL_ROLES = {"site-1": "image_text", "site-2": "image", "site-3": "text"}


@contextmanager
def recorded_replies(strategy_cls: type) -> Iterator[list]:
    """Every ``(site, reply)`` a ``strategy_cls`` server is handed while the block runs (the real ``accept`` still
    runs: this only records what arrived at the server)."""
    seen: list = []
    original = strategy_cls.accept

    def spy(self, task, site, reply):
        seen.append((site, reply))
        return original(self, task, site, reply)

    strategy_cls.accept = spy
    try:
        yield seen
    finally:
        strategy_cls.accept = original
