"""Folder / CSV converter, plus the table and output helpers every converter shares.

A folder of images (PNG, JPEG, DICOM, NIfTI) is the lowest common denominator of medical data; an optional CSV adds
reports and labels. The helpers here (reading ``.csv``/``.csv.gz`` with the header checked first, writing the
manifest only after every row validated) are what make every converter fail before it writes anything.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from flare_vlp.data.manifest import SPLITS, Manifest, ManifestError, Record, normalize_finding, write_manifest

__all__ = ["IMAGE_EXTENSIONS", "ConvertedManifest", "convert_folder", "find_table", "iter_table", "parse_label"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".nii", ".nii.gz")
"""Image files :func:`convert_folder` picks up (case-insensitive); the MONAI loaders read all of them."""

_RESERVED = ("id", "image", "report", "labels", "site", "split")


@dataclass
class ConvertedManifest(Manifest):
    """A :class:`Manifest` returned by a converter, with the rows it skipped counted by reason."""

    skipped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for the CLI: rows written and rows skipped per reason."""
        skipped = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items()) if v) or "none"
        return f"{len(self)} rows written to {self.path}; skipped: {skipped}"


def find_table(root: Path, name: str, *, required: bool = True) -> Path | None:
    """``root/name`` or ``root/name.gz``; a missing required table is an error naming the expected file."""
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    if required:
        raise ManifestError(root / name, None, None, f"required file not found (also looked for {name}.gz)")
    return None


def iter_table(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a ``.csv`` or ``.csv.gz`` as ``(line number, row)``, after checking the header has ``required``.

    The header is checked on the first ``next()``, before any row is produced, so a wrong file fails immediately.
    """
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames
        if header is None:
            raise ManifestError(path, 1, None, "empty CSV: no header row")
        missing = [c for c in required if c not in header]
        if missing:
            raise ManifestError(path, 1, missing[0], f"missing column(s) {missing}; header has {list(header)}")
        for row in reader:
            if None in row:
                raise ManifestError(path, reader.line_num, None, "more values than header columns")
            yield reader.line_num, row


def parse_label(raw: str | None, uncertain: str, path: Path, line: int, column: str) -> int:
    """A CheXpert-style cell (``1.0``/``0.0``/``-1.0``/blank) as 0/1; blank = not mentioned = 0.

    ``uncertain`` is the U-zeros / U-ones policy of Irvin et al. (CheXpert, https://arxiv.org/abs/1901.07031).
    """
    text = (raw or "").strip()
    if not text:
        return 0
    try:
        value = float(text)
    except ValueError:
        raise ManifestError(path, line, column, f"label must be 1, 0, -1 or blank, got {text!r}") from None
    if value == 1.0:
        return 1
    if value == 0.0:
        return 0
    if value == -1.0:
        return 1 if uncertain == "ones" else 0
    raise ManifestError(path, line, column, f"label must be 1, 0, -1 or blank, got {text!r}")


def check_choice(name: str, value: str, choices: Iterable[str]) -> None:
    """Reject an option outside ``choices``, naming the option."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}")


def finish(
    records: list[Record], out_manifest: str | os.PathLike, findings: tuple[str, ...], skipped: Counter, source: Path
) -> ConvertedManifest:
    """Write the validated records atomically and log what was skipped; zero rows is an error, not an empty file."""
    counts = {k: int(v) for k, v in skipped.items() if v}
    if not records:
        raise ManifestError(source, None, None, f"no rows left to write (skipped: {counts or 'none'})")
    out = Path(out_manifest)
    write_manifest(records, out)
    result = ConvertedManifest(records, findings, str(out), skipped=counts)
    logger.info(result.summary())
    return result


def _row_labels(row: dict[str, str], uncertain: str, path: Path, line: int) -> dict[str, int]:
    """Labels of one folder-CSV row: one column per finding (1/0/-1/blank) and/or a ``labels`` column."""
    labels = {
        normalize_finding(col): parse_label(value, uncertain, path, line, col)
        for col, value in row.items()
        if col not in _RESERVED
    }
    text = (row.get("labels") or "").strip()
    if text.startswith(("{", "[")):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ManifestError(path, line, "labels", f"not valid JSON: {e.msg}") from None
        items = raw.items() if isinstance(raw, dict) else [(name, 1) for name in raw]
    else:
        items = [(name, 1) for name in text.replace(";", "|").split("|") if name.strip()]
    for name, value in items:
        if value not in (0, 1):
            raise ManifestError(path, line, "labels", f"finding {name!r} must be 0 or 1, got {value!r}")
        labels[normalize_finding(name)] = int(value)
    return labels


def _is_image(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(ext) for ext in IMAGE_EXTENSIONS)


def _stem(path: Path) -> Path:
    name = path.name
    for ext in sorted(IMAGE_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(ext):
            return path.with_name(name[: -len(ext)])
    return path.with_suffix("")


def _scan(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath, f) for f in sorted(filenames) if not f.startswith(".") and _is_image(Path(f)))
    return found


def convert_folder(
    root: str | os.PathLike,
    out_manifest: str | os.PathLike,
    *,
    labels_csv: str | os.PathLike | None = None,
    site: str = "site-1",
    split: str = "train",
    site_from_subfolder: bool = False,
    uncertain: str = "zeros",
) -> ConvertedManifest:
    """Turn every image under ``root`` (png/jpg/jpeg/dcm/nii/nii.gz) into a manifest row.

    Reports come from ``labels_csv`` if given, else from a sidecar ``<image stem>.txt``, else are empty (read such
    a manifest with ``read_manifest(..., allow_empty_report=True)``).

    The CSV has a column ``image`` (path relative to ``root``, or absolute) and optionally ``report``, ``id``,
    ``site``, ``split`` (per-row overrides), and labels as either a ``labels`` column (``a|b`` or JSON, as in the
    manifest) or one column per finding holding 1/0/-1/blank. With a CSV, the CSV defines the dataset: images under
    ``root`` without a CSV row are skipped and counted (``not_in_csv``); a CSV row whose image is missing is an error.
    Finding names outside the built-in vocabulary need ``read_manifest(..., findings=...)`` when read back.

    Args:
        root: folder scanned recursively (hidden files and folders are ignored).
        out_manifest: ``.jsonl`` or ``.csv`` output; image paths are written relative to its folder.
        labels_csv: optional CSV with reports/labels as described above.
        site: site of every row (unless ``site_from_subfolder`` or a CSV ``site`` column).
        split: split of every row (unless a CSV ``split`` column).
        site_from_subfolder: use the first folder level under ``root`` as the site (``root/<site>/...``).
        uncertain: ``"zeros"`` or ``"ones"``: how a -1 in a finding column is mapped.

    Raises:
        ManifestError: a missing folder/CSV/column/image, naming the file, line and column; nothing is written.
    """
    root = Path(root).resolve()
    check_choice("uncertain", uncertain, ("zeros", "ones"))
    check_choice("split", split, SPLITS)
    if not root.is_dir():
        raise ManifestError(root, None, None, "image folder does not exist")
    images = _scan(root)
    skipped: Counter = Counter()
    findings: list[str] = []
    rows: dict[Path, tuple[int, dict[str, str]]] = {}
    csv_path = None
    if labels_csv is not None:
        csv_path = Path(labels_csv).resolve()
        if not csv_path.is_file():
            raise ManifestError(csv_path, None, None, "labels CSV not found")
        for line, row in iter_table(csv_path, ["image"]):
            image = (root / row["image"].strip()).resolve()
            if not row["image"].strip() or not image.is_file():
                raise ManifestError(csv_path, line, "image", f"image file not found: {image}")
            if image in rows:
                raise ManifestError(csv_path, line, "image", f"image listed twice (first on line {rows[image][0]})")
            rows[image] = (line, row)
        skipped["not_in_csv"] = sum(1 for p in images if p not in rows)
        images = sorted(rows)
    records = []
    for image in images:
        rel = image.relative_to(root) if image.is_relative_to(root) else Path(image.name)
        rid = _stem(rel).as_posix()
        rec_site = rel.parts[0] if site_from_subfolder and len(rel.parts) > 1 else site
        rec_split, labels, report = split, {}, ""
        sidecar = _stem(image).with_suffix(".txt")
        if sidecar.is_file():
            report = sidecar.read_text(encoding="utf-8", errors="replace").strip()
        if image in rows:
            line, row = rows[image]
            rid = (row.get("id") or "").strip() or rid
            report = (row.get("report") or "").strip() or report
            rec_site = (row.get("site") or "").strip() or rec_site
            rec_split = (row.get("split") or "").strip().lower() or rec_split
            if rec_split not in SPLITS:
                raise ManifestError(csv_path, line, "split", f"unknown split {rec_split!r}; expected one of {SPLITS}")
            labels = _row_labels(row, uncertain, csv_path, line)
            findings.extend(k for k in labels if k not in findings)
        records.append(Record(rid, str(image), report, labels, rec_site, rec_split))
    records = [replace(r, labels={f: r.labels.get(f, 0) for f in findings}) for r in records]
    return finish(records, out_manifest, tuple(findings), skipped, csv_path or root)
