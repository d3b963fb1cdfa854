"""Converters from real dataset layouts to the flare_vlp manifest (see :mod:`flare_vlp.data.manifest`).

Each converter has the signature ``convert_<name>(root, out_manifest, *, ...) -> ConvertedManifest``: it validates
the layout (an error names the missing file, column or row), writes the manifest atomically with image paths
relative to the manifest's folder, and returns it with the skipped rows counted by reason. ``CONVERTERS`` maps the
names the CLI accepts (``flare-vlp data convert NAME ROOT --out manifest.jsonl``) to the functions.
"""

from __future__ import annotations

from collections.abc import Callable

from flare_vlp.data.sources.chexpert import convert_chexpert
from flare_vlp.data.sources.folder import ConvertedManifest, convert_folder
from flare_vlp.data.sources.mimic_cxr import convert_mimic_cxr

__all__ = ["CONVERTERS", "ConvertedManifest", "convert_chexpert", "convert_folder", "convert_mimic_cxr"]

CONVERTERS: dict[str, Callable[..., ConvertedManifest]] = {
    "mimic-cxr": convert_mimic_cxr,
    "chexpert": convert_chexpert,
    "folder": convert_folder,
}
