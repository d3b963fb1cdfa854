"""A process-wide memo of a frozen network's outputs, keyed by the network's fingerprint and the input's content.

A frozen pretrained trunk is a fixed function, so on 2 CPU cores it should run once per image, not once per epoch
(the trunk is most of a training step). Keys make a stale entry impossible rather than unlikely:

* the table is chosen by the trunk's **fingerprint** (a hash of every trunk tensor plus the settings that change its
  output: split point, input size, normalisation), so another trunk or another split gets another table;
* an entry is keyed by a hash of the **input tensor's bytes, shape and dtype**, so a changed image is a new key.

Tables live for the process: the centralized run, the local-only baseline and every in-process federated site share
one table per trunk, so each image is embedded once per process. With ``directory`` set, entries are also kept on
disk (``<directory>/<fingerprint>/<key>.npy``, written atomically), so the separate processes of a FLARE simulator
run, and later runs, read them instead of recomputing; an unreadable file is recomputed and replaced. Augmented inputs
are all new keys, so the table is bounded (``max_entries``) and overflowing it is an error that says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from flare_vlp.utils.io import atomic_write

__all__ = ["FeatureCache", "fingerprint_tensors", "content_key"]

_TABLES: dict[str, dict[bytes, torch.Tensor]] = {}


def fingerprint_tensors(named: Iterable[tuple[str, torch.Tensor]], *settings: object) -> str:
    """SHA-256 over names, shapes and bytes of ``named`` tensors plus ``settings`` (hex, 16 characters)."""
    h = hashlib.sha256(repr(settings).encode())
    for name, tensor in named:
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]


def content_key(sample: torch.Tensor) -> bytes:
    """128-bit hash of one input's bytes, shape and dtype."""
    t = sample.detach().cpu().contiguous()
    h = hashlib.blake2b(f"{tuple(t.shape)}:{t.dtype}".encode(), digest_size=16)
    h.update(t.numpy().tobytes())
    return h.digest()


class FeatureCache:
    """Memoises ``fn(inputs)`` per input sample for one frozen function (see the module docstring).

    Args:
        fingerprint: identifies the function exactly (:func:`fingerprint_tensors`).
        max_entries: bound of the table; reaching it raises (default 200,000, ~2.4 GB of 192x4x4 features).
        directory: optional folder for the on-disk copy shared across processes and runs.
    """

    def __init__(self, fingerprint: str, max_entries: int = 200_000, directory: str | Path | None = None) -> None:
        self.fingerprint = fingerprint
        self.max_entries = max_entries
        self.table = _TABLES.setdefault(fingerprint, {})
        self.folder = Path(directory) / fingerprint if directory is not None else None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self.table)

    def __call__(self, fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        """``fn(inputs)`` with every known sample read from the table; each new sample is computed on its own (a
        batch of one), so its entry does not depend on which other samples happened to be missing with it: a batch's
        composition changes the last bits of a conv's output, and a cache filled in one history would otherwise
        give a run other features (and, amplified by training, other results) than one filled in another. The
        price: filling is ~4x slower than batched (Lite0 to stage 7 at 64 px on CPU: 7.6 vs 1.8 ms an image), once
        per image and cache.

        Raises:
            RuntimeError: the table would exceed ``max_entries`` (every input new: augmented images?).
        """
        keys = [content_key(x) for x in inputs.detach().cpu()]  # one device-to-host copy per batch, not per image
        todo = [i for i, k in enumerate(keys) if k not in self.table and not self._read(k)]
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)
        if todo:
            if len(self.table) + len(todo) > self.max_entries:
                raise RuntimeError(
                    f"feature cache {self.fingerprint} would exceed {self.max_entries} entries: nearly every input is "
                    "new, so caching cannot help (random augmentation before a cached trunk? set data.augment: false)"
                )
            with torch.no_grad():
                for i in todo:
                    self.table[keys[i]] = fn(inputs[i : i + 1]).float().cpu()[0].clone()
                    self._write(keys[i], self.table[keys[i]])
        return torch.stack([self.table[k] for k in keys]).to(inputs.device)

    def _read(self, key: bytes) -> bool:
        if self.folder is None:
            return False
        path = self.folder / f"{key.hex()}.npy"
        try:
            self.table[key] = torch.from_numpy(np.load(path, allow_pickle=False))
        except (OSError, ValueError):  # absent, or unreadable (e.g. a crash before an old non-atomic write): recompute
            return False
        return True

    def _write(self, key: bytes, feature: torch.Tensor) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object: np.save would add ".npy" to a path
                np.save(f, feature.numpy(), allow_pickle=False)

        atomic_write(self.folder / f"{key.hex()}.npy", write)

    def __deepcopy__(self, memo: dict) -> FeatureCache:
        # a copied model (e.g. the anchor copy of FedAID) computes the same trunk: share the table, do not copy it
        return self

    def clear(self) -> None:
        """Forget every entry of this fingerprint (all users of the same trunk share the table)."""
        self.table.clear()
