"""Site-local persistent state: tensors and plain metadata in the site's own workspace, never sent anywhere.

Personal adapters, classification heads, a site's whole private model: what a method keeps at a site between
rounds and across restarts of the site process or of the job. Each entry is one safetensors file; its metadata
records the site and whatever the algorithm needs to recognise it later (e.g. a model fingerprint), so an entry of
another site or another model is refused with an error naming the file and the field. Writes go to a temporary
file that is renamed into place: a process killed mid-write leaves the previous entry intact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flare_vlp.utils.io import atomic_write

__all__ = ["PersonalState", "SiteStore", "SiteStoreError", "fingerprint"]

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
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))

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


def fingerprint(value: Any) -> str:
    """A short hash of ``value`` (JSON, keys sorted; other objects by ``str``): what a personal-state entry is
    tagged with, so an entry of another model is refused, not loaded."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


class PersonalState:
    """A site's personal model in its store: one entry, tagged with a model fingerprint, and the rounds it has done.

    The one way a site algorithm keeps what never leaves the site (a LoRA site's personal adapter and head, a CreamFL
    client's whole model) across rounds and restarts of the site or the job.

    Args:
        store: the site's store.
        entry: the entry name.
        model_fingerprint: :func:`fingerprint` of what makes the tensors fit the model (architecture, settings).
    """

    def __init__(self, store: SiteStore, entry: str, model_fingerprint: str):
        self.store, self.entry, self.fingerprint = store, entry, model_fingerprint
        self.rounds_done = 0

    def restore(
        self, model: Any, logger: logging.Logger, *, strict: bool = True, what: str = "model"
    ) -> dict[str, Any] | None:
        """Load the stored tensors into ``model`` (a torch module) and the round count; the entry's metadata, or
        ``None`` (nothing stored yet). ``strict``: the entry must hold every tensor of the model (else only some).
        Logs ``site '<site>': restored its <what> from the site store (N rounds)`` on ``logger``.

        Raises:
            SiteStoreError: an entry of another site or model, or tensors the model does not have (or lacks).
        """
        stored = self.store.load(self.entry, expect={"model": self.fingerprint})
        if stored is None:
            return None
        tensors, meta = stored
        own = set(model.state_dict())
        unknown, missing = sorted(set(tensors) - own), sorted(own - set(tensors)) if strict else []
        if unknown or missing:
            raise SiteStoreError(
                f"{self.store.path(self.entry)}: tensors {unknown[:3]} unknown to this model, {missing[:3]} missing"
            )
        model.load_state_dict(tensors, strict=strict)
        self.rounds_done = int(meta.get("rounds_done", 0))
        logger.info(f"site {self.store.site!r}: restored its {what} from the site store ({self.rounds_done} rounds)")
        return meta

    def save(self, tensors: Mapping[str, Any], **meta: Any) -> None:
        """Count a finished round and write ``tensors`` with the fingerprint, the round count and ``meta``."""
        self.rounds_done += 1
        self.store.save(self.entry, tensors, {"model": self.fingerprint, "rounds_done": self.rounds_done, **meta})
