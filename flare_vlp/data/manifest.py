"""The one on-disk format for image-report data: JSONL or CSV rows ``{id, image, report, labels, site, split}``.

Every dataset flare_vlp touches (SynthCXR, MIMIC-CXR-JPG, CheXpert, a folder of images) is converted to this format
once, so the MONAI loaders, the partitioner and the FLARE executors only ever read one thing. Validation happens on
read and fails with an error that names the file, the line and the field, because a bad row discovered in round 7 of
a federated run is far more expensive than one discovered at load time.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import io
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flare_vlp.utils.io import atomic_write_text

__all__ = [
    "SYNTHCXR_FINDINGS",
    "CHEXPERT_FINDINGS",
    "KNOWN_FINDINGS",
    "SPLITS",
    "COLUMNS",
    "ManifestError",
    "Record",
    "Manifest",
    "read_manifest",
    "write_manifest",
    "normalize_finding",
]

SYNTHCXR_FINDINGS: tuple[str, ...] = ("opacity", "nodule", "effusion", "cardiomegaly", "pneumothorax")
"""The five findings SynthCXR renders, in label-vector order."""

CHEXPERT_FINDINGS: tuple[str, ...] = (
    "no_finding",
    "enlarged_cardiomediastinum",
    "cardiomegaly",
    "lung_opacity",
    "lung_lesion",
    "edema",
    "consolidation",
    "pneumonia",
    "atelectasis",
    "pneumothorax",
    "pleural_effusion",
    "pleural_other",
    "fracture",
    "support_devices",
)
"""The 14 CheXpert / MIMIC-CXR labels, snake_case."""

KNOWN_FINDINGS: tuple[str, ...] = tuple(dict.fromkeys(SYNTHCXR_FINDINGS + CHEXPERT_FINDINGS))
"""Default vocabulary: a finding outside it is an error unless the caller passes its own ``findings``."""

SPLITS: tuple[str, ...] = ("train", "val", "test", "public")
"""``public`` is the shared public set CreamFL exchanges representations of."""

COLUMNS: tuple[str, ...] = ("id", "image", "report", "labels", "site", "split")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file, the line and the field."""

    def __init__(self, path: str | os.PathLike | None, line: int | None, field_name: str | None, message: str):
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field_name
        where = self.path or "<manifest>"
        if line is not None:
            where += f":{line}"
        if field_name:
            where += f" field '{field_name}'"
        super().__init__(f"{where}: {message}")


def normalize_finding(name: str) -> str:
    """Lower-case snake_case form of a finding name (``"Pleural Effusion"`` -> ``"pleural_effusion"``)."""
    return "_".join(str(name).strip().lower().replace("-", " ").replace("/", " ").split())


@dataclass(frozen=True)
class Record:
    """One image-report pair.

    Args:
        id: unique identifier within the manifest.
        image: absolute path of the image file (resolved against the manifest's folder on read).
        report: free-text radiology report (may be empty only where the reader allows it).
        labels: finding -> 0/1 for every finding of the manifest's vocabulary.
        site: the institution the sample belongs to (the federated client).
        split: one of :data:`SPLITS`.
    """

    id: str
    image: str
    report: str
    labels: dict[str, int] = field(default_factory=dict)
    site: str = "site-1"
    split: str = "train"

    def label_vector(self, findings: Sequence[str]) -> list[int]:
        return [int(self.labels.get(f, 0)) for f in findings]


@dataclass
class Manifest:
    """A validated list of records plus the finding vocabulary its label vectors use."""

    records: list[Record]
    findings: tuple[str, ...]
    path: str | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __getitem__(self, i: int) -> Record:
        return self.records[i]

    @property
    def sites(self) -> list[str]:
        return sorted({r.site for r in self.records})

    def select(self, *, site: str | Iterable[str] | None = None, split: str | Iterable[str] | None = None) -> Manifest:
        """Records of the given site(s) and split(s). An explicitly named site with no rows is an error."""
        sites = None if site is None else ({site} if isinstance(site, str) else set(site))
        splits = None if split is None else ({split} if isinstance(split, str) else set(split))
        if splits is not None:
            bad = sorted(splits - set(SPLITS))
            if bad:
                raise ManifestError(self.path, None, "split", f"unknown split(s) {bad}; expected one of {list(SPLITS)}")
        rows = [r for r in self.records if (sites is None or r.site in sites) and (splits is None or r.split in splits)]
        if sites is not None:
            present = {r.site for r in rows}
            empty = sorted(sites - present)
            if empty:
                known = self.sites
                raise ManifestError(
                    self.path,
                    None,
                    "site",
                    f"site(s) {empty} have zero rows"
                    + (f" in split(s) {sorted(splits)}" if splits else "")
                    + f"; sites in this manifest: {known}",
                )
        return Manifest(rows, self.findings, self.path)

    def label_matrix(self) -> list[list[int]]:
        return [r.label_vector(self.findings) for r in self.records]

    def counts(self) -> dict[str, dict]:
        """Counts per site, per split, per site x split and positives per finding (for ``flare-vlp data check``)."""
        per_site = Counter(r.site for r in self.records)
        per_split = Counter(r.split for r in self.records)
        per_site_split = Counter((r.site, r.split) for r in self.records)
        positives = {f: sum(int(r.labels.get(f, 0)) for r in self.records) for f in self.findings}
        per_site_finding = {
            s: {f: sum(int(r.labels.get(f, 0)) for r in self.records if r.site == s) for f in self.findings}
            for s in self.sites
        }
        return {
            "total": len(self.records),
            "site": dict(sorted(per_site.items())),
            "split": dict(sorted(per_split.items())),
            "site_split": {f"{s}/{p}": n for (s, p), n in sorted(per_site_split.items())},
            "finding": positives,
            "site_finding": per_site_finding,
        }


# ----------------------------------------------------------------------------------------------------------------
# reading


def _suggest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _parse_labels(raw, path, line, vocab: set[str] | None) -> dict[str, int]:
    """Accepts a dict finding -> 0/1, a list of present findings, or (CSV) a JSON text or a '|'-separated list."""
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("{") or text.startswith("["):
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as e:
                raise ManifestError(path, line, "labels", f"not valid JSON: {e.msg}") from None
        else:
            raw = [t for t in text.replace(";", "|").split("|") if t.strip()]
    if raw is None:
        raw = []
    out: dict[str, int] = {}
    if isinstance(raw, dict):
        items = raw.items()
    elif isinstance(raw, list):
        items = [(name, 1) for name in raw]
    else:
        raise ManifestError(path, line, "labels", f"expected a dict finding->0/1 or a list, got {type(raw).__name__}")
    for name, value in items:
        if not isinstance(name, str) or not name.strip():
            raise ManifestError(path, line, "labels", f"finding names must be non-empty strings, got {name!r}")
        key = normalize_finding(name)
        if vocab is not None and key not in vocab:
            raise ManifestError(path, line, "labels", f"unknown finding '{name}'{_suggest(key, sorted(vocab))}")
        if isinstance(value, bool):
            value = int(value)
        if value not in (0, 1) or isinstance(value, float) and not float(value).is_integer():
            raise ManifestError(path, line, "labels", f"finding '{name}' must be 0 or 1, got {value!r}")
        out[key] = int(value)
    return out


def _rows_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    with open(path, encoding="utf-8") as fh:
        for lineno, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise ManifestError(path, lineno, None, f"invalid JSON: {e.msg}") from None
            if not isinstance(row, dict):
                raise ManifestError(path, lineno, None, f"expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def _rows_csv(path: Path) -> Iterator[tuple[int, dict]]:
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            raise ManifestError(path, 1, None, "empty CSV: no header row")
        for row in reader:
            if None in row:
                raise ManifestError(path, reader.line_num, None, "more values than header columns")
            yield reader.line_num, row


def read_manifest(
    path: str | os.PathLike,
    *,
    findings: Sequence[str] | None = None,
    check_images: bool = True,
    allow_empty_report: bool = False,
    allow_empty_image: bool = False,
) -> Manifest:
    """Read and validate a manifest (``.jsonl`` / ``.json`` lines or ``.csv``).

    Args:
        path: the manifest file. Relative image paths are resolved against its folder.
        findings: the label vocabulary, in label-vector order. Default: the findings that occur in the file, ordered as
            in :data:`KNOWN_FINDINGS`; any name outside ``KNOWN_FINDINGS`` is then an error.
        check_images: fail on a row whose image file does not exist.
        allow_empty_report: accept rows without report text (image-only data such as CheXpert).
        allow_empty_image: accept rows with an empty ``image`` (report-only data, e.g. a site's report archive
            without its images: only a text-only client can train on it); their ``Record.image`` is ``""``.

    Raises:
        ManifestError: naming the file, line and field of the first problem found.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(path, None, None, "manifest file does not exist")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows = _rows_jsonl(path)
    elif suffix == ".csv":
        rows = _rows_csv(path)
    else:
        raise ManifestError(path, None, None, f"unsupported manifest extension '{suffix}' (use .jsonl or .csv)")
    vocab = {normalize_finding(f) for f in findings} if findings is not None else set(KNOWN_FINDINGS)
    base = path.resolve().parent
    records: list[Record] = []
    seen: dict[str, int] = {}
    for lineno, row in rows:
        missing = [c for c in COLUMNS if c not in row or (row[c] is None and c not in ("labels", "report"))]
        if missing:
            raise ManifestError(path, lineno, missing[0], f"missing column(s) {missing}; a row needs {list(COLUMNS)}")
        extra = sorted(set(row) - set(COLUMNS) - {"meta"})
        if extra:
            raise ManifestError(path, lineno, extra[0], f"unexpected column(s) {extra}; allowed: {list(COLUMNS)}")
        rid = str(row["id"]).strip()
        if not rid:
            raise ManifestError(path, lineno, "id", "empty id")
        if rid in seen:
            raise ManifestError(path, lineno, "id", f"duplicate id '{rid}' (first seen on line {seen[rid]})")
        seen[rid] = lineno
        image = str(row["image"]).strip()
        if not image and not allow_empty_image:
            raise ManifestError(path, lineno, "image", "empty image path (report-only rows: allow_empty_image)")
        image_path = "" if not image else Path(image) if os.path.isabs(image) else base / image
        if check_images and image and not image_path.is_file():
            raise ManifestError(path, lineno, "image", f"image file not found: {image_path}")
        report = row.get("report")
        report = "" if report is None else str(report).strip()
        if not report and not allow_empty_report:
            raise ManifestError(path, lineno, "report", "empty or missing report text")
        site = str(row["site"]).strip()
        if not site:
            raise ManifestError(path, lineno, "site", "empty site name")
        split = str(row["split"]).strip().lower()
        if split not in SPLITS:
            raise ManifestError(
                path, lineno, "split", f"unknown split '{row['split']}'; expected one of {list(SPLITS)}"
            )
        labels = _parse_labels(row.get("labels"), path, lineno, vocab)
        records.append(Record(rid, str(image_path), report, labels, site, split))
    if not records:
        raise ManifestError(path, None, None, "manifest has no rows")
    if findings is not None:
        order = tuple(normalize_finding(f) for f in findings)
    else:
        used = {k for r in records for k in r.labels}
        order = tuple(f for f in KNOWN_FINDINGS if f in used)
    full = [Record(r.id, r.image, r.report, {f: r.labels.get(f, 0) for f in order}, r.site, r.split) for r in records]
    return Manifest(full, order, str(path))


# ----------------------------------------------------------------------------------------------------------------
# writing


def _row(record: Record, base: Path | None) -> dict:
    image = record.image
    if base is not None and os.path.isabs(image):
        with contextlib.suppress(ValueError):  # different drive on Windows
            image = os.path.relpath(image, base)
    return {
        "id": record.id,
        "image": image,
        "report": record.report,
        "labels": {k: int(v) for k, v in record.labels.items()},
        "site": record.site,
        "split": record.split,
    }


def write_manifest(records: Iterable[Record], path: str | os.PathLike, *, relative: bool = True) -> Path:
    """Write records atomically (temp file + rename) as JSONL or CSV, chosen by the extension.

    Image paths are stored relative to the manifest's folder when ``relative`` (so a data folder can be moved).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise ManifestError(path, None, None, f"output folder does not exist: {path.parent}")
    base = path.resolve().parent if relative else None
    rows = [_row(r, base) for r in records]
    ids = Counter(r["id"] for r in rows)
    dup = [i for i, n in ids.items() if n > 1]
    if dup:
        raise ManifestError(path, None, "id", f"duplicate id(s) {dup[:3]} in the records to write")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    elif suffix == ".csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(COLUMNS))
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "labels": json.dumps(r["labels"])})
        text = buf.getvalue()
    else:
        raise ManifestError(path, None, None, f"unsupported manifest extension '{suffix}' (use .jsonl or .csv)")
    atomic_write_text(path, text)
    return path
