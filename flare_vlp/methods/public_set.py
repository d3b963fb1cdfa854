"""The public image-text split that representation-sharing methods (CreamFL) exchange representations of: read
by the server and by every site from the same shared data, never private.

One place for what both sides need: the split's rows and dataset, a loader over a chosen subset of public ids (rows
follow the ids' order, so representation row ``i`` is public id ``ids[i]``), the representation pass over such a
subset, and the seeded draw of the subset a round exchanges.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from flare_vlp.config import ExperimentConfig
from flare_vlp.data.manifest import Manifest
from flare_vlp.experiments.builders import build_dataset, build_loader
from flare_vlp.experiments.site_data import SiteDataError, run_manifest
from flare_vlp.training.objectives import batch_to_device

__all__ = ["Embed", "PublicSet", "sample_public_ids"]

Embed = Callable[[nn.Module, dict], Mapping[str, torch.Tensor]]
"""``embed(model, batch)``: modality -> the batch's ``B x E`` representations."""

_DATASETS: dict[tuple, Dataset] = {}
_LOCK = threading.Lock()


def _public_dataset(rows: Manifest, cfg: ExperimentConfig) -> Dataset:
    """The decoded public images, built once per process (the in-process runner's sites and server read the same
    immutable files; a FLARE site is its own process and decodes its own copy)."""
    key = (str(rows.path), tuple(r.id for r in rows), repr(cfg.data))
    with _LOCK:
        if key not in _DATASETS:
            _DATASETS[key] = build_dataset(rows, cfg.data, train=False)
        return _DATASETS[key]


def sample_public_ids(public: Sequence[str], n: int, seed: int) -> list[str]:
    """``n`` of the ``public`` ids (``0`` or more than there are: all), drawn with ``seed``, in split order.

    Raises:
        ValueError: an empty public split (names the setting that makes one).
    """
    if not public:
        raise ValueError("the public split is empty (SynthCXR: set data.synth.public_samples > 0)")
    n = min(n or len(public), len(public))
    picked = np.random.default_rng(seed).choice(len(public), size=n, replace=False)
    return [public[i] for i in sorted(picked)]


@dataclass
class PublicSet:
    """The public split of the shared data, as a dataset indexed by public id.

    Args:
        rows: the public rows (``split == "public"``).
        dataset: their dataset (no augmentation), in ``rows`` order.
    """

    rows: Manifest
    dataset: Dataset

    @classmethod
    def load(cls, cfg: ExperimentConfig, *, data_dir: str | None = None, manifest: str | None = None) -> PublicSet:
        """The public split of the run's data, found as every reader finds it
        (:func:`~flare_vlp.experiments.site_data.run_manifest`: ``manifest``, else the config's ``data.manifest``,
        else the SynthCXR folder ``data_dir``, made once under a lock).

        Raises:
            ValueError: no data source, or no public rows (names the manifest and the setting).
        """
        try:
            rows = run_manifest(cfg, data_dir, manifest)
        except SiteDataError as e:
            raise ValueError(f"the public split: {e}") from None
        public = rows.select(split="public")
        if len(public) == 0:
            raise ValueError(f"{rows.path}: no public split (SynthCXR: set data.synth.public_samples > 0)")
        imageless = [r.id for r in public if not r.image]
        if imageless:
            raise ValueError(f"{rows.path}: public rows {imageless[:3]} have no image; the public split is image-text "
                             f"pairs ({len(imageless)} rows without an image)")  # fmt: skip
        return cls(public, _public_dataset(public, cfg))

    def __post_init__(self) -> None:
        self.ids = [r.id for r in self.rows]
        self._row = {sample: i for i, sample in enumerate(self.ids)}

    @property
    def findings(self) -> list[str]:
        return list(self.rows.findings)

    def check_ids(self, site: str, ids: Sequence[str]) -> None:
        """Raise ``ValueError`` naming ``site`` unless every id is a public id here (and there is at least one)."""
        if not ids:
            raise ValueError(f"site {site!r}: the task names no public samples")
        unknown = [i for i in ids if i not in self._row]
        if unknown:
            raise ValueError(f"site {site!r}: public ids {list(unknown[:3])} are not in this site's public split")

    def loader(
        self, ids: Sequence[str], tokenizer, cfg: ExperimentConfig, *, shuffle: bool = False, seed: int = 0
    ) -> DataLoader:
        """Batches of ``cfg.train.batch_size`` public samples ``ids``, texts cut at ``cfg.data.max_text_length`` (in
        ``ids`` order unless ``shuffle``; ``shuffle`` drops a last partial batch, as every training loader)."""
        subset = torch.utils.data.Subset(self.dataset, [self._row[i] for i in ids])
        return build_loader(subset, tokenizer, batch_size=cfg.train.batch_size, max_length=cfg.data.max_text_length,
                            shuffle=shuffle, seed=seed)  # fmt: skip

    @torch.no_grad()
    def represent(
        self, model: nn.Module, ids: Sequence[str], tokenizer, cfg: ExperimentConfig, embed: Embed, device: str = "cpu"
    ) -> dict[str, np.ndarray]:
        """The representation pass: ``model`` (in eval mode, on ``device``) over the public samples ``ids`` in order;
        modality -> ``len(ids) x E`` float array, row ``i`` of public id ``ids[i]`` (a server's global
        representations and a client's own alike).

        Args:
            embed: ``embed(model, batch)`` -> modality -> the batch's representations.
        """
        model.eval().to(device)
        parts: dict[str, list[torch.Tensor]] = {}
        for batch in self.loader(ids, tokenizer, cfg):
            for modality, z in embed(model, batch_to_device(batch, device)).items():
                parts.setdefault(modality, []).append(z.float().cpu())
        return {modality: torch.cat(z).numpy() for modality, z in parts.items()}
