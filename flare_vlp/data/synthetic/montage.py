"""`render_montage`: a labelled grid of SynthCXR (or any manifest's) images, to eyeball findings and site shift."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from flare_vlp.data.manifest import Record, read_manifest

__all__ = ["render_montage"]


def _rows_by_finding(records: list[Record], findings: tuple[str, ...], per_row: int) -> list[tuple[str, list[Record]]]:
    rows = [("normal", [r for r in records if not any(r.labels.values())][:per_row])]
    for f in findings:
        only = [r for r in records if r.labels.get(f) and sum(r.labels.values()) == 1]
        more = [r for r in records if r.labels.get(f) and sum(r.labels.values()) > 1]
        rows.append((f, (only + more)[:per_row]))
    return rows


def render_montage(
    source: str | os.PathLike,
    png_path: str | os.PathLike,
    *,
    by: Literal["finding", "site"] = "finding",
    per_row: int = 8,
    split: str | None = None,
) -> Path:
    """Write a PNG grid: one row per finding (plus "normal") or per site, ``per_row`` images each.

    Rows are the first matching records in manifest order, so the montage of a given data set is reproducible.

    Args:
        source: a data set folder (holding ``manifest.jsonl``) or a manifest file.
        png_path: the PNG to write; its folder must exist.
        by: ``"finding"`` (images with only that finding first) or ``"site"``.
        per_row: images per row.
        split: only records of this split (default: all).

    Raises:
        ValueError: bad ``by`` / ``per_row``; ManifestError for an unreadable manifest.
    """
    if by not in ("finding", "site"):
        raise ValueError(f"`by` must be 'finding' or 'site', got {by!r}.")
    if per_row < 1:
        raise ValueError(f"`per_row` must be >= 1, got {per_row}.")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    source = Path(source)
    manifest = read_manifest(source / "manifest.jsonl" if source.is_dir() else source)
    records = [r for r in manifest if split is None or r.split == split]
    if by == "finding":
        rows = _rows_by_finding(records, manifest.findings, per_row)
    else:
        rows = [(s, [r for r in records if r.site == s][:per_row]) for s in sorted({r.site for r in records})]
    fig, axes = plt.subplots(len(rows), per_row, figsize=(1.3 * per_row, 1.45 * len(rows)), squeeze=False)
    for i, (title, recs) in enumerate(rows):
        for j in range(per_row):
            ax = axes[i][j]
            ax.set_axis_off()
            if j < len(recs):
                ax.imshow(np.asarray(Image.open(recs[j].image).convert("L")), cmap="gray", vmin=0, vmax=255)
                tags = [k[:3] for k, v in recs[j].labels.items() if v] or ["-"]
                ax.set_title(",".join(tags) if by == "site" else recs[j].site, fontsize=6)
        axes[i][0].text(-0.08, 0.5, title, transform=axes[i][0].transAxes, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(left=0.1, right=0.99, top=0.95, bottom=0.01, wspace=0.05, hspace=0.3)
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path
