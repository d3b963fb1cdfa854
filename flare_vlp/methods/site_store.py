"""Site-local persistent state: tensors and plain metadata in the site's own workspace, never sent anywhere.

Personal adapters, classification heads, a site's whole private model: what a method keeps at a site between
rounds and across restarts of the site process or of the job. Each entry is one safetensors file; its metadata
records the site and whatever the algorithm needs to recognise it later (e.g. a model fingerprint), so an entry of
another site or another model is refused with an error naming the file and the field. Writes go to a temporary
file that is renamed into place: a process killed mid-write leaves the previous entry intact.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["SiteStore", "SiteStoreError"]

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_META_KEY = "flare_vlp"


class SiteStoreError(ValueError):
    """An entry that cannot be used: another site's or another model's, or an unreadable file."""


class SiteStore:
    """A folder of named tensor entries for one site.

    Args:
        root: the folder (created on first write).
        site: the site the store belongs to (recorded in every entry, checked on every load).
    """

    def __init__(self, root: str | Path, site: str):
        self.root = Path(root)
        self.site = site

    def path(self, name: str) -> Path:
        if not _NAME.match(name):
            raise ValueError(f"site store entry name {name!r}: use letters, digits, '_', '-', '.' only")
        return self.root / f"{name}.safetensors"

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def names(self) -> list[str]:
        return sorted(p.name.removesuffix(".safetensors") for p in self.root.glob("*.safetensors"))

    def save(self, name: str, tensors: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> Path:
        """Atomically write ``tensors`` (torch) and ``meta`` (JSON-able) as entry ``name``; returns its path."""
        from safetensors.torch import save_file

        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {_META_KEY: json.dumps({"site": self.site, **dict(meta or {})}, sort_keys=True)}
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata=header)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    def load(self, name: str, expect: Mapping[str, Any] | None = None) -> tuple[dict, dict] | None:
        """``(tensors, meta)`` of entry ``name``, or ``None`` if there is none.

        Args:
            expect: metadata fields that must match (e.g. ``{"model": fingerprint}``); the site always must.

        Raises:
            SiteStoreError: unreadable file, or a field (``site`` included) that does not match; names both.
        """
        from safetensors import safe_open

        path = self.path(name)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = json.loads((fh.metadata() or {}).get(_META_KEY, "{}"))
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118  (safe_open is not a dict)
        except Exception as e:  # a truncated or foreign file: say which
            raise SiteStoreError(f"{path}: not a readable site-store entry: {e}") from None
        for key, want in {"site": self.site, **dict(expect or {})}.items():
            if meta.get(key) != want:
                raise SiteStoreError(
                    f"{path}: entry {name!r} has {key}={meta.get(key)!r}, expected {want!r} "
                    f"(an entry of another {'site' if key == 'site' else key}; it is left untouched)"
                )
        return tensors, meta
