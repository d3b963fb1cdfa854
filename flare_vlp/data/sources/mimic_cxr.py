"""MIMIC-CXR-JPG (PhysioNet v2.x) plus the MIMIC-CXR free-text reports, to manifest.

Layout (Johnson et al., https://physionet.org/content/mimic-cxr-jpg/)::

    root/
      mimic-cxr-2.0.0-metadata.csv(.gz)   dicom_id, subject_id, study_id, ViewPosition, ...
      mimic-cxr-2.0.0-split.csv(.gz)      dicom_id, study_id, subject_id, split (train/validate/test)
      mimic-cxr-2.0.0-chexpert.csv(.gz)   subject_id, study_id, 14 CheXpert label columns (1.0/0.0/-1.0/blank)
      files/p10/p10000032/s50414267/<dicom_id>.jpg
    reports_root/                          (mimic-cxr-reports, from the MIMIC-CXR DICOM project)
      files/p10/p10000032/s50414267.txt

One manifest row per kept image; the images of a study share its report and labels. Rows that cannot be used
(lateral view, no report, no labels, no image file) are skipped and counted by reason, or raise, by option.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

from flare_vlp.data.manifest import CHEXPERT_FINDINGS, ManifestError, Record
from flare_vlp.data.sources.chexpert import CHEXPERT_COLUMNS, chexpert_labels
from flare_vlp.data.sources.folder import ConvertedManifest, check_choice, find_table, finish, iter_table

__all__ = ["extract_sections", "convert_mimic_cxr"]

_SPLITS = {"train": "train", "validate": "val", "val": "val", "test": "test"}
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z &/()-]*[A-Z)]):", re.MULTILINE)


def extract_sections(text: str, sections: tuple[str, ...] = ("FINDINGS", "IMPRESSION")) -> str:
    """The FINDINGS and IMPRESSION sections of a MIMIC-CXR report, whitespace-normalised; else the whole text.

    These two sections describe the image; the others (INDICATION, HISTORY, COMPARISON, ...) describe the patient
    or the request and would teach the text encoder shortcuts unrelated to the pixels.
    """
    heads = list(_HEADER.finditer(text))
    parts = []
    for i, head in enumerate(heads):
        if head.group(1).strip() in sections:
            end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
            body = " ".join(text[head.end() : end].split())
            if body:
                parts.append(body)
    return " ".join(parts) if parts else " ".join(text.split())


def _study_dir(base: Path, subject: str, study: str) -> Path:
    return base / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"


def _table(root: Path, kind: str) -> Path:
    """``mimic-cxr-2.0.0-<kind>.csv(.gz)``, falling back to any ``mimic-cxr-*-<kind>.csv(.gz)`` version."""
    found = find_table(root, f"mimic-cxr-2.0.0-{kind}.csv", required=False)
    if found is None:
        others = sorted(root.glob(f"mimic-cxr-*-{kind}.csv*"))
        if not others:
            find_table(root, f"mimic-cxr-2.0.0-{kind}.csv")  # raises, naming the expected file
        found = others[-1]
    return found


def convert_mimic_cxr(
    root: str | os.PathLike,
    out_manifest: str | os.PathLike,
    *,
    reports_root: str | os.PathLike | None = None,
    uncertain: str = "zeros",
    views: tuple[str, ...] | None = ("PA", "AP"),
    site: str = "mimic",
    site_column: str | None = None,
    on_missing_report: str = "skip",
    on_missing_labels: str = "skip",
    on_missing_image: str = "error",
) -> ConvertedManifest:
    """Convert a MIMIC-CXR-JPG copy (with the reports) to a manifest; splits follow the official split file.

    Args:
        root: the MIMIC-CXR-JPG folder holding the three CSVs and ``files/``.
        out_manifest: ``.jsonl`` or ``.csv`` output; image paths are written relative to its folder.
        reports_root: the folder holding the reports' ``files/`` tree (default: ``root``).
        uncertain: ``"zeros"`` (U-zeros) or ``"ones"`` (U-ones) for -1 labels; blank (not mentioned) is 0.
        views: ``ViewPosition`` values to keep (default frontal: PA and AP); ``None`` keeps every view.
        site: the site of every row, unless ``site_column`` is set.
        site_column: a column of the metadata CSV whose value is the row's site (e.g. one you added).
        on_missing_report: ``"skip"`` (counted as ``missing_report``) or ``"error"`` for a study without report.
        on_missing_labels: ``"skip"`` (counted as ``missing_labels``) or ``"error"`` for a study without a row in
            the chexpert CSV.
        on_missing_image: ``"error"`` or ``"skip"`` (counted as ``missing_image``) for a missing JPEG.

    Returns:
        The written manifest; ``.skipped`` counts the images skipped per reason (``view``, ``missing_report``,
        ``missing_labels``, ``missing_image``), which the caller should report.

    Raises:
        ManifestError: a missing file or column, a bad label or split value, or (by option) a missing
            report/labels/image, naming the file, line and column; nothing is written.
    """
    root = Path(root).resolve()
    reports = Path(reports_root).resolve() if reports_root is not None else root
    check_choice("uncertain", uncertain, ("zeros", "ones"))
    for name, value in (("on_missing_report", on_missing_report), ("on_missing_labels", on_missing_labels)):
        check_choice(name, value, ("skip", "error"))
    check_choice("on_missing_image", on_missing_image, ("skip", "error"))
    for folder, what in ((root, "MIMIC-CXR-JPG folder"), (reports, "reports folder")):
        if not folder.is_dir():
            raise ManifestError(folder, None, None, f"{what} does not exist")
    if not (reports / "files").is_dir():
        raise ManifestError(reports / "files", None, None, "reports folder has no files/ tree (mimic-cxr-reports)")
    meta_path, split_path, label_path = (_table(root, k) for k in ("metadata", "split", "chexpert"))

    splits: dict[str, str] = {}
    for line, row in iter_table(split_path, ["dicom_id", "split"]):
        value = row["split"].strip().lower()
        if value not in _SPLITS:
            raise ManifestError(split_path, line, "split", f"unknown split {value!r}; expected train/validate/test")
        splits[row["dicom_id"].strip()] = _SPLITS[value]
    labels: dict[tuple[str, str], tuple[int, ...]] = {}  # tuples, not dicts: ~230k studies in v2
    for line, row in iter_table(label_path, ["subject_id", "study_id", *CHEXPERT_COLUMNS]):
        key = (row["subject_id"].strip(), row["study_id"].strip())
        labels[key] = tuple(chexpert_labels(row, uncertain, label_path, line).values())

    required = ["dicom_id", "subject_id", "study_id", "ViewPosition"] + ([site_column] if site_column else [])
    wanted = None if views is None else {v.upper() for v in views}
    texts: dict[tuple[str, str], str] = {}
    records: list[Record] = []
    skipped: Counter = Counter()
    for line, row in iter_table(meta_path, required):
        dicom, subject, study = (row[c].strip() for c in ("dicom_id", "subject_id", "study_id"))
        if wanted is not None and row["ViewPosition"].strip().upper() not in wanted:
            skipped["view"] += 1
            continue
        if dicom not in splits:
            raise ManifestError(split_path, None, "dicom_id", f"no split for dicom_id {dicom} ({meta_path}:{line})")
        key = (subject, study)
        if key not in labels:
            if on_missing_labels == "error":
                raise ManifestError(label_path, None, "study_id", f"no labels for subject {subject} study {study}")
            skipped["missing_labels"] += 1
            continue
        if key not in texts:
            report_file = _study_dir(reports, subject, study).with_suffix(".txt")
            raw = report_file.read_text(encoding="utf-8", errors="replace") if report_file.is_file() else ""
            texts[key] = extract_sections(raw)
        if not texts[key]:
            if on_missing_report == "error":
                report_file = _study_dir(reports, subject, study).with_suffix(".txt")
                raise ManifestError(report_file, None, None, f"missing or empty report ({meta_path}:{line})")
            skipped["missing_report"] += 1
            continue
        image = _study_dir(root, subject, study) / f"{dicom}.jpg"
        if not image.is_file():
            if on_missing_image == "error":
                raise ManifestError(meta_path, line, "dicom_id", f"image file not found: {image}")
            skipped["missing_image"] += 1
            continue
        rec_site = row[site_column].strip() if site_column else site
        if not rec_site:
            raise ManifestError(meta_path, line, site_column, "empty site value")
        study_labels = dict(zip(CHEXPERT_FINDINGS, labels[key]))
        records.append(Record(dicom, str(image), texts[key], study_labels, rec_site, splits[dicom]))
    return finish(records, out_manifest, CHEXPERT_FINDINGS, skipped, meta_path)
