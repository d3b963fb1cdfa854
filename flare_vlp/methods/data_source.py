"""Where a run's rows come from (:class:`DataSource`), and what they hold before any is generated
(:func:`data_facts`: training sites and splits, for the checks before launch).

Every reader resolves a source the same way (:func:`~flare_vlp.experiments.site_data.run_manifest`: an explicit
manifest, else the config's ``data.manifest``, else SynthCXR in ``data_dir``); the data readers are imported where
used, so a check before launch needs neither torch nor MONAI.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flare_vlp.config import ExperimentConfig
from flare_vlp.methods.registry import setting

if TYPE_CHECKING:
    from flare_vlp.data.manifest import Manifest

__all__ = ["DataFacts", "DataSource", "data_facts", "job_path", "training_sites"]


def job_path(path: str | Path) -> str:
    """An absolute path for a job config; ``~/...`` and absolute paths stay as they are (a job read on another
    machine keeps its paths, and one under ``~`` works for any user's home)."""
    text = str(path)
    return text if text.startswith("~") or Path(text).is_absolute() else str(Path(text).resolve())


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class DataSource:
    """Where a run's rows come from; every reader resolves it the same way
    (:func:`~flare_vlp.experiments.site_data.run_manifest`: ``manifest``, else the config's ``data.manifest``, else
    SynthCXR in ``data_dir``).

    Args:
        data_dir: SynthCXR folder, generated once (under a lock) when missing.
        manifest: a manifest (JSONL/CSV) with every site's rows; wins over the config's ``data.manifest`` and
            ``data_dir``.
        site_map: FLARE site -> data site of the manifest (default: the same name, ``site-1`` -> ``site-1``).
        data_sites: only these data sites train (default: every training site of the data).
    """

    data_dir: str | None = setting(None, "SynthCXR folder (generated once when missing)")
    manifest: str | None = setting(None, "manifest (JSONL/CSV) with every site's rows; wins over data.manifest")
    site_map: Mapping[str, str] | None = setting(None, "FLARE site -> data site (default: the same name)")
    data_sites: tuple[str, ...] | None = setting(None, "only these data sites train (default: all)")

    def __post_init__(self) -> None:
        for name in ("data_dir", "manifest"):
            if getattr(self, name) is not None:
                _set(self, name, job_path(getattr(self, name)))
        if self.site_map is not None:
            _set(self, "site_map", {str(k): str(v) for k, v in dict(self.site_map).items()})
        if self.data_sites is not None:
            if isinstance(self.data_sites, str) or not self.data_sites:
                raise ValueError(f"`data.data_sites` must be a non-empty list of data sites, got {self.data_sites!r}")
            _set(self, "data_sites", tuple(str(s) for s in self.data_sites))

    def given(self, cfg: ExperimentConfig) -> bool:
        """Whether any source is set (here or as the config's ``data.manifest``)."""
        return self.manifest is not None or cfg.data.manifest is not None or self.data_dir is not None

    def rows(self, cfg: ExperimentConfig) -> Manifest:
        """Every row of the run's data (SynthCXR generated once when missing)."""
        from flare_vlp.experiments.site_data import run_manifest

        return run_manifest(cfg, self.data_dir, self.manifest)

    def taking_part(self, sites: list[str]) -> list[str]:
        """The training ``sites`` (in their order) that take part: all, or only those ``data_sites`` names."""
        if self.data_sites is None:
            return list(sites)
        return [s for s in sites if s in set(self.data_sites)]


def training_sites(rows: Manifest) -> list[str]:
    """The data sites that train, in manifest order: those with train rows (an unseen site has test rows only, the
    public split's rows are no site's)."""
    trained = {r.site for r in rows if r.split == "train"}
    return [s for s in rows.sites if s in trained]


@dataclass(frozen=True)
class DataFacts:
    """What a run's data holds, known before it is generated: where it is (for messages), its training data sites
    (in order) and its splits."""

    where: str
    sites: list[str]
    splits: set[str]
    synthetic: bool


def data_facts(cfg: ExperimentConfig, data: DataSource, config_name: str) -> DataFacts:
    """The training sites and splits of the run's data: read from a manifest, or from the SynthCXR config (nothing
    is generated).

    Raises:
        ValueError: no data source (naming the config).
    """
    from flare_vlp.data.manifest import read_manifest
    from flare_vlp.experiments.builders import synth_config

    manifest = data.manifest or cfg.data.manifest
    if manifest is not None:
        rows = read_manifest(manifest, **cfg.data.read_options())
        return DataFacts(f"manifest {manifest}", training_sites(rows), {r.split for r in rows}, synthetic=False)
    if data.data_dir is None:
        raise ValueError(f"config {config_name!r}: no data source; give `data_dir` or `manifest` (or data.manifest)")
    synth = synth_config(cfg)
    splits = {"train", "val", "test"} | ({"public"} if synth.public_samples else set())
    where = f"config {config_name!r} (SynthCXR data.synth)"
    return DataFacts(where, [f"site-{i + 1}" for i in range(synth.sites)], splits, synthetic=True)
