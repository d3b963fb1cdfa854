"""CheXpert (v1.0, "small" or full) to manifest, and the CheXpert label columns MIMIC-CXR shares.

CheXpert has labels but no reports, so it suits image-only pre-training, linear probes and simulated federations
(:func:`flare_vlp.data.partition.partition_manifest`); for image-text pre-training an optional templated report can be
derived from the labels, with the caveat documented on :func:`convert_chexpert`.
Layout (Irvin et al., https://arxiv.org/abs/1901.07031)::

    CheXpert-v1.0-small/
      train.csv   valid.csv      # Path, Sex, Age, Frontal/Lateral, AP/PA, 14 label columns
      train/patient00001/study1/view1_frontal.jpg
      valid/...

``Path`` is relative to the folder *above* the dataset root (it starts with ``CheXpert-v1.0-small/``).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from flare_vlp.data.manifest import CHEXPERT_FINDINGS, SPLITS, ManifestError, Record, normalize_finding
from flare_vlp.data.sources.folder import ConvertedManifest, check_choice, finish, iter_table, parse_label

__all__ = ["CHEXPERT_COLUMNS", "chexpert_labels", "labels_report", "convert_chexpert"]

CHEXPERT_COLUMNS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
"""The 14 label columns as spelled in the CheXpert and MIMIC-CXR CSVs, in :data:`CHEXPERT_FINDINGS` order."""

assert tuple(normalize_finding(c) for c in CHEXPERT_COLUMNS) == CHEXPERT_FINDINGS


def chexpert_labels(row: dict[str, str], uncertain: str, path: Path, line: int) -> dict[str, int]:
    """The 14 labels of a CSV row as 0/1 (blank = 0; -1 by the U-zeros/U-ones ``uncertain`` policy)."""
    return {
        finding: parse_label(row[col], uncertain, path, line, col)
        for col, finding in zip(CHEXPERT_COLUMNS, CHEXPERT_FINDINGS)
    }


def labels_report(labels: dict[str, int], view: str = "") -> str:
    """A templated report stating the positive findings (e.g. ``"Frontal AP chest radiograph. Findings: edema."``)."""
    names = [f.replace("_", " ") for f in CHEXPERT_FINDINGS if f != "no_finding" and labels.get(f)]
    head = f"{view} chest radiograph." if view else "Chest radiograph."
    if not names:
        return f"{head} No acute cardiopulmonary abnormality."
    body = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{head} Findings: {body}."


def _image_path(root: Path, rel: str) -> Path:
    """``Path`` is relative to the parent of ``root``; accept a renamed root folder too."""
    rel_path = Path(rel.strip())
    direct = root.parent / rel_path
    if direct.is_file() or len(rel_path.parts) < 2:
        return direct
    renamed = root.joinpath(*rel_path.parts[1:])
    return renamed if renamed.is_file() else direct


def convert_chexpert(
    root: str | os.PathLike,
    out_manifest: str | os.PathLike,
    *,
    uncertain: str = "zeros",
    frontal_only: bool = True,
    site: str = "chexpert",
    valid_split: str = "val",
    report_from_labels: bool = False,
    on_missing_image: str = "error",
) -> ConvertedManifest:
    """Convert a CheXpert v1.0 folder (``train.csv`` required, ``valid.csv`` if present) to a manifest.

    Reports are empty, so read the result with ``read_manifest(..., allow_empty_report=True)``. With
    ``report_from_labels=True`` each row instead gets a *templated* report listing its positive findings (see
    :func:`labels_report`). That text is derived from the labels, so zero-shot classification or retrieval scores on
    it measure template matching, not radiology understanding: use it for plumbing and ablations only.

    Args:
        root: the dataset folder (e.g. ``.../CheXpert-v1.0-small``) holding ``train.csv``.
        out_manifest: ``.jsonl`` or ``.csv`` output; image paths are written relative to its folder.
        uncertain: ``"zeros"`` (U-zeros) or ``"ones"`` (U-ones) for -1 labels.
        frontal_only: keep only ``Frontal/Lateral == "Frontal"`` rows (laterals are counted as skipped).
        site: the site of every row; simulate several sites with ``partition_manifest``.
        valid_split: the manifest split of ``valid.csv`` rows (``"val"`` or ``"test"``, since CheXpert's own test
            labels are not part of v1.0).
        report_from_labels: write a templated report instead of an empty one (see above).
        on_missing_image: ``"error"`` or ``"skip"`` (counted as ``missing_image``) for a CSV row without its image.

    Raises:
        ManifestError: a missing CSV, column or image file, naming the file, line and column; nothing is written.
    """
    root = Path(root).resolve()
    check_choice("uncertain", uncertain, ("zeros", "ones"))
    check_choice("valid_split", valid_split, SPLITS)
    check_choice("on_missing_image", on_missing_image, ("error", "skip"))
    if not root.is_dir():
        raise ManifestError(root, None, None, "CheXpert folder does not exist")
    tables = [(root / "train.csv", "train"), (root / "valid.csv", valid_split)]
    if not tables[0][0].is_file():
        raise ManifestError(tables[0][0], None, None, "required file not found (expected the CheXpert v1.0 layout)")
    required = ["Path", "Frontal/Lateral", "AP/PA", *CHEXPERT_COLUMNS]
    records: list[Record] = []
    skipped: Counter = Counter()
    for table, split in tables:
        if not table.is_file():
            continue
        for line, row in iter_table(table, required):
            if frontal_only and row["Frontal/Lateral"].strip().lower() != "frontal":
                skipped["lateral_view"] += 1
                continue
            image = _image_path(root, row["Path"])
            if not row["Path"].strip() or not image.is_file():
                if on_missing_image == "skip":
                    skipped["missing_image"] += 1
                    continue
                raise ManifestError(table, line, "Path", f"image file not found: {image}")
            labels = chexpert_labels(row, uncertain, table, line)
            view = " ".join(v for v in (row["Frontal/Lateral"].strip(), row["AP/PA"].strip()) if v)
            report = labels_report(labels, view) if report_from_labels else ""
            rel = image.relative_to(root) if image.is_relative_to(root) else Path(row["Path"].strip())
            records.append(Record(rel.with_suffix("").as_posix(), str(image), report, labels, site, split))
    return finish(records, out_manifest, CHEXPERT_FINDINGS, skipped, tables[0][0])
