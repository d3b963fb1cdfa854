"""Converters on tiny fake trees in the published MIMIC-CXR-JPG, CheXpert and folder layouts."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pytest
from PIL import Image

from flare_vlp.data.manifest import CHEXPERT_FINDINGS, ManifestError, read_manifest
from flare_vlp.data.sources import CONVERTERS, convert_chexpert, convert_folder, convert_mimic_cxr
from flare_vlp.data.sources.chexpert import CHEXPERT_COLUMNS
from flare_vlp.data.sources.mimic_cxr import extract_sections

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough.

 FINDINGS:

 There is a small left pleural effusion.
 No pneumothorax.

 IMPRESSION:

 Small left effusion.
"""


def _jpeg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), color=128).save(path)


def _csv(path: Path, header: list[str], rows: list[list], gz: bool = False) -> None:
    opener = gzip.open if gz else open
    with opener(path, "wt", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _labels(**values) -> list:
    """A row of the 14 label cells: blank unless given (e.g. Edema=-1.0)."""
    return [values.get(c.replace(" ", "_"), "") for c in CHEXPERT_COLUMNS]


# study -> (subject, [(dicom, view, split)], labels, report text or None)
STUDIES = {
    "50000001": ("10000032", [("d1", "PA", "train"), ("d2", "LATERAL", "train")], _labels(Edema=-1.0), REPORT),
    "50000002": ("10000032", [("d3", "AP", "validate")], _labels(Cardiomegaly=1.0, Edema=0.0), "plain text only"),
    "50000003": ("11000040", [("d4", "PA", "test")], _labels(No_Finding=1.0), None),  # report missing
}


def _mimic(root: Path, gz: bool) -> Path:
    ext = ".csv.gz" if gz else ".csv"
    meta, split, labels = [], [], []
    for study, (subject, images, lab, report) in STUDIES.items():
        labels.append([subject, study, *lab])
        for dicom, view, part in images:
            meta.append([dicom, subject, study, "CHEST", view])
            split.append([dicom, study, subject, part])
            _jpeg(root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg")
        if report is not None:
            (root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt").write_text(report)
    cols = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition"]
    _csv(root / f"mimic-cxr-2.0.0-metadata{ext}", cols, meta, gz)
    _csv(root / f"mimic-cxr-2.0.0-split{ext}", ["dicom_id", "study_id", "subject_id", "split"], split, gz)
    _csv(root / f"mimic-cxr-2.0.0-chexpert{ext}", ["subject_id", "study_id", *CHEXPERT_COLUMNS], labels, gz)
    return root


@pytest.mark.parametrize("gz", [False, True])
def test_mimic_cxr(tmp_path, gz):
    root = _mimic(tmp_path / "mimic", gz)
    out = tmp_path / "out" / "mimic.jsonl"
    out.parent.mkdir()
    result = convert_mimic_cxr(root, out, uncertain="ones")
    assert result.skipped == {"view": 1, "missing_report": 1}
    m = read_manifest(out)
    assert [r.id for r in m] == ["d1", "d3"]
    assert [r.split for r in m] == ["train", "val"] and {r.site for r in m} == {"mimic"}
    assert m[0].labels["edema"] == 1 and m[1].labels["cardiomegaly"] == 1 and m[1].labels["edema"] == 0
    assert m[0].report == "There is a small left pleural effusion. No pneumothorax. Small left effusion."
    assert m[1].report == "plain text only"
    assert not Path(out.read_text().split('"image": "')[1].split('"')[0]).is_absolute()
    assert read_manifest(convert_mimic_cxr(root, out, uncertain="zeros").path)[0].labels["edema"] == 0


def test_mimic_cxr_options_and_errors(tmp_path):
    root = _mimic(tmp_path / "mimic", gz=False)
    out = tmp_path / "m.jsonl"
    assert len(convert_mimic_cxr(root, out, views=None)) == 3
    out.unlink()
    with pytest.raises(ManifestError, match="s50000003.txt"):
        convert_mimic_cxr(root, out, on_missing_report="error")
    (root / "files/p10/p10000032/s50000001/d1.jpg").unlink()
    with pytest.raises(ManifestError, match="d1.jpg"):
        convert_mimic_cxr(root, out)
    assert convert_mimic_cxr(root, out, on_missing_image="skip").skipped["missing_image"] == 1
    out.unlink()
    (root / "mimic-cxr-2.0.0-split.csv").unlink()
    with pytest.raises(ManifestError, match="mimic-cxr-2.0.0-split.csv"):
        convert_mimic_cxr(root, out)
    _csv(root / "mimic-cxr-2.0.0-split.csv", ["dicom_id", "study_id", "subject_id"], [["d1", "50000001", "10000032"]])
    with pytest.raises(ManifestError, match="'split'"):
        convert_mimic_cxr(root, out)
    with pytest.raises(ValueError, match="uncertain"):
        convert_mimic_cxr(root, out, uncertain="maybe")
    assert not out.exists()


def test_extract_sections_falls_back_to_whole_text():
    assert extract_sections("IMPRESSION: clear lungs.") == "clear lungs."
    assert extract_sections("  no headers\n here ") == "no headers here"


def _chexpert(parent: Path) -> Path:
    root = parent / "CheXpert-v1.0-small"
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_COLUMNS]
    train = [
        ["train/patient00001/study1/view1_frontal.jpg", "Female", 68, "Frontal", "AP", *_labels(Edema=-1.0)],
        ["train/patient00001/study1/view2_lateral.jpg", "Female", 68, "Lateral", "", *_labels()],
        ["train/patient00002/study1/view1_frontal.jpg", "Male", 40, "Frontal", "PA", *_labels(No_Finding=1.0)],
    ]
    valid = [["valid/patient64541/study1/view1_frontal.jpg", "Male", 55, "Frontal", "AP", *_labels(Cardiomegaly=1)]]
    for rows in (train, valid):
        for row in rows:
            _jpeg(root / row[0])
            row[0] = f"{root.name}/{row[0]}"
    _csv(root / "train.csv", header, train)
    _csv(root / "valid.csv", header, valid)
    return root


def test_chexpert(tmp_path):
    root = _chexpert(tmp_path)
    out = tmp_path / "chexpert.csv"
    result = convert_chexpert(root, out, uncertain="ones")
    assert result.skipped == {"lateral_view": 1} and result.findings == CHEXPERT_FINDINGS
    with pytest.raises(ManifestError, match="report"):
        read_manifest(out)
    m = read_manifest(out, allow_empty_report=True)
    assert [r.split for r in m] == ["train", "train", "val"]
    assert m[0].id == "train/patient00001/study1/view1_frontal" and m[0].labels["edema"] == 1
    assert m[2].labels["cardiomegaly"] == 1 and {r.site for r in m} == {"chexpert"}
    m = read_manifest(convert_chexpert(root, out, report_from_labels=True, frontal_only=False).path)
    assert len(m) == 4 and m[3].report == "Frontal AP chest radiograph. Findings: cardiomegaly."


def test_chexpert_bad_layouts(tmp_path):
    root = _chexpert(tmp_path)
    out = tmp_path / "c.jsonl"
    (root / "train/patient00002/study1/view1_frontal.jpg").unlink()
    with pytest.raises(ManifestError, match=r"train.csv:4 field 'Path'.*view1_frontal.jpg"):
        convert_chexpert(root, out)
    header = ["Path", "Frontal/Lateral", "AP/PA", *CHEXPERT_COLUMNS[1:]]
    _csv(root / "valid.csv", header, [])
    with pytest.raises(ManifestError, match="valid.csv:1 field 'No Finding'"):
        convert_chexpert(root, out, on_missing_image="skip")
    (root / "train.csv").unlink()
    with pytest.raises(ManifestError, match="train.csv"):
        convert_chexpert(root, out)
    assert not out.exists()


def test_folder(tmp_path):
    root = tmp_path / "imgs"
    for name in ("a/x1.png", "a/x2.jpg", "b/y1.jpeg", "b/deep/y2.JPG", "b/notes.md"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".md"):
            (root / name).write_text("-")
        else:
            _jpeg(root / name)
    (root / "a/x1.txt").write_text("sidecar report")
    m = convert_folder(root, tmp_path / "f.jsonl", site_from_subfolder=True, split="test")
    assert sorted(r.id for r in m) == ["a/x1", "a/x2", "b/deep/y2", "b/y1"]
    back = read_manifest(m.path, allow_empty_report=True)
    assert {r.id: r.site for r in back} == {"a/x1": "a", "a/x2": "a", "b/y1": "b", "b/deep/y2": "b"}
    assert {r.split for r in back} == {"test"} and back[0].report == "sidecar report"

    _csv(
        tmp_path / "labels.csv",
        ["image", "report", "Pleural Effusion", "labels"],
        [["a/x1.png", "effusion seen", "1", ""], ["b/y1.jpeg", "normal", "", "no_finding"]],
    )
    m = convert_folder(root, tmp_path / "g.jsonl", labels_csv=tmp_path / "labels.csv")
    assert m.skipped == {"not_in_csv": 2}
    back = read_manifest(m.path)
    assert [(r.id, r.report, r.labels) for r in back] == [
        ("a/x1", "effusion seen", {"no_finding": 0, "pleural_effusion": 1}),
        ("b/y1", "normal", {"no_finding": 1, "pleural_effusion": 0}),
    ]


def test_folder_bad_inputs(tmp_path):
    root = tmp_path / "imgs"
    _jpeg(root / "x.png")
    out = tmp_path / "f.jsonl"
    with pytest.raises(ManifestError, match="nope.csv"):
        convert_folder(root, out, labels_csv=tmp_path / "nope.csv")
    _csv(tmp_path / "l.csv", ["img", "report"], [["x.png", "r"]])
    with pytest.raises(ManifestError, match="l.csv:1 field 'image'"):
        convert_folder(root, out, labels_csv=tmp_path / "l.csv")
    _csv(tmp_path / "l.csv", ["image", "report"], [["x.png", "r"], ["gone.png", "r"]])
    with pytest.raises(ManifestError, match="l.csv:3 field 'image'.*gone.png"):
        convert_folder(root, out, labels_csv=tmp_path / "l.csv")
    with pytest.raises(ManifestError, match="no rows"):
        convert_folder(_empty(tmp_path), out)
    assert not out.exists()


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def test_registry():
    assert set(CONVERTERS) == {"mimic-cxr", "chexpert", "folder"}
