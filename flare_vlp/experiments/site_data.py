"""One FLARE site's share of the experiment: its manifest rows, loaders, tokenizer and model.

Several simulator clients may start at once on one machine and all find SynthCXR missing; a file lock beside the
data folder makes exactly one of them generate it while the others wait and then reuse it.
"""

from __future__ import annotations

import fcntl
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import DataLoader

from flare_vlp.config import ExperimentConfig
from flare_vlp.data.manifest import Manifest, read_manifest
from flare_vlp.experiments.builders import build_dataset, build_loader, build_model, build_tokenizer, prepare_manifest
from flare_vlp.models import DualEncoder

__all__ = ["SiteDataError", "SiteData", "load_site_data", "locked_manifest", "run_manifest"]

_THREAD_LOCK = threading.Lock()


class SiteDataError(RuntimeError):
    """A site that cannot train: no data source, unknown site, or no training rows."""


@dataclass
class SiteData:
    """What one site trains and validates with."""

    site: str
    data_site: str
    n_train: int
    n_val: int
    model: DualEncoder
    tokenizer: object
    train_loader: DataLoader
    val_loader: DataLoader | None


@contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with _THREAD_LOCK, open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def locked_manifest(cfg: ExperimentConfig, data_dir: str | Path) -> Manifest:
    """:func:`prepare_manifest` under an exclusive lock file ``.<data_dir name>.lock`` beside ``data_dir``."""
    data_dir = Path(data_dir).expanduser()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(data_dir.parent / f".{data_dir.name}.lock"):
        return prepare_manifest(cfg, data_dir)


def run_manifest(
    cfg: ExperimentConfig, data_dir: str | Path | None = None, manifest: str | Path | None = None
) -> Manifest:
    """Every row of the run's data (all sites and splits), found the one way every reader finds it (sites, the
    server, the public split): an explicit ``manifest`` file, else the config's ``data.manifest``, else SynthCXR in
    ``data_dir`` (generated once, under :func:`locked_manifest`'s lock).

    Raises:
        SiteDataError: none of the three is given.
    """
    if manifest is not None:
        return read_manifest(manifest, **cfg.data.read_options())
    if cfg.data.manifest is not None:
        return read_manifest(cfg.data.manifest, **cfg.data.read_options())
    if data_dir is None:
        raise SiteDataError("no data source: give `data_dir` or `manifest` (or `data.manifest` in the config)")
    return locked_manifest(cfg, data_dir)


def _site_rows(manifest: Manifest, data_site: str, split: str) -> Manifest:
    return Manifest([r for r in manifest if r.site == data_site and r.split == split], manifest.findings, manifest.path)


def load_site_data(
    cfg: ExperimentConfig,
    site: str,
    *,
    data_dir: str | None = None,
    manifest: str | None = None,
    site_map: dict[str, str] | None = None,
    images: bool = True,
) -> SiteData:
    """Resolve FLARE ``site`` to its data shard and build its model, tokenizer and loaders.

    ``images=False``: a text-only site; its loaders give reports and labels and read no image, so its rows may have
    none (``data.allow_empty_image``).

    Raises:
        SiteDataError: no manifest/data_dir, the mapped data site is not in the manifest, it has no train rows, or
            ``images`` and a row of the site without an image.
    """
    try:
        rows = run_manifest(cfg, data_dir, manifest)
    except SiteDataError as e:
        raise SiteDataError(f"site {site!r}: {e}") from None
    data_site = (site_map or {}).get(site, site)
    train = _site_rows(rows, data_site, "train")
    if len(train) == 0:
        raise SiteDataError(
            f"site {site!r} (data site {data_site!r}) has no train rows in {rows.path}; "
            f"sites there: {rows.sites}; map FLARE sites to data sites with `site_map`"
        )
    val = _site_rows(rows, data_site, "val")
    tokenizer = build_tokenizer(cfg.model)
    loader_args = {"batch_size": cfg.train.batch_size, "max_length": cfg.data.max_text_length, "seed": cfg.seed,
                   "images": images}  # fmt: skip
    try:
        train_set = build_dataset(train, cfg.data, train=True, seed=cfg.seed, images=images)
        val_set = build_dataset(val, cfg.data, train=False, images=images) if len(val) >= 2 else None
    except ValueError as e:
        raise SiteDataError(f"site {site!r}: {e}") from None
    train_loader = build_loader(train_set, tokenizer, shuffle=True, **loader_args)
    val_loader = None
    if val_set is not None:
        val_loader = build_loader(val_set, tokenizer, shuffle=False, **loader_args)
    return SiteData(
        site=site,
        data_site=data_site,
        n_train=len(train),
        n_val=len(val),
        model=build_model(cfg.model, seed=cfg.seed),
        tokenizer=tokenizer,
        train_loader=train_loader,
        val_loader=val_loader,
    )
