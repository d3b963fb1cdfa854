"""The manifest format: round trips, label forms, and an error naming file / line / field for every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flare_vlp.data.manifest import (
    SYNTHCXR_FINDINGS,
    Manifest,
    ManifestError,
    Record,
    read_manifest,
    write_manifest,
)


def _img(folder: Path, name: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n")  # existence is all the manifest checks; decoding is the data layer's job
    return path


def _rows(tmp_path: Path, n: int = 4) -> list[dict]:
    rows = []
    for i in range(n):
        _img(tmp_path, f"images/{i}.png")
        rows.append(
            {
                "id": f"s{i}",
                "image": f"images/{i}.png",
                "report": f"Report {i}.",
                "labels": {"opacity": i % 2, "nodule": 0},
                "site": f"site-{1 + i % 2}",
                "split": "train" if i < 3 else "test",
            }
        )
    return rows


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_round_trip_and_relative_paths(tmp_path):
    path = _write_jsonl(tmp_path / "m.jsonl", _rows(tmp_path))
    m = read_manifest(path)
    assert len(m) == 4 and m.sites == ["site-1", "site-2"]
    assert m.findings == ("opacity", "nodule")
    assert Path(m[0].image).is_absolute() and Path(m[0].image).is_file()
    out = write_manifest(m.records, tmp_path / "copy.jsonl")
    assert json.loads(out.read_text().splitlines()[0])["image"] == "images/0.png"
    assert read_manifest(out).records == m.records


def test_csv_round_trip(tmp_path):
    m = read_manifest(_write_jsonl(tmp_path / "m.jsonl", _rows(tmp_path)))
    out = write_manifest(m.records, tmp_path / "m.csv")
    assert read_manifest(out).records == m.records


def test_label_forms_list_dict_and_pipe_string(tmp_path):
    rows = _rows(tmp_path, 3)
    rows[0]["labels"] = ["Opacity", "Pleural Effusion"]
    rows[1]["labels"] = {"cardiomegaly": 1}
    rows[2]["labels"] = "nodule|opacity"
    m = read_manifest(_write_jsonl(tmp_path / "m.jsonl", rows))
    assert m[0].labels["pleural_effusion"] == 1 and m[0].labels["opacity"] == 1
    assert m[1].labels == {f: int(f == "cardiomegaly") for f in m.findings}
    assert m[2].label_vector(["nodule", "opacity", "cardiomegaly"]) == [1, 1, 0]


def test_explicit_vocabulary_orders_label_vectors(tmp_path):
    m = read_manifest(_write_jsonl(tmp_path / "m.jsonl", _rows(tmp_path)), findings=SYNTHCXR_FINDINGS)
    assert m.findings == SYNTHCXR_FINDINGS
    assert m.label_matrix()[1] == [1, 0, 0, 0, 0]


def test_counts_and_select(tmp_path):
    m = read_manifest(_write_jsonl(tmp_path / "m.jsonl", _rows(tmp_path)))
    c = m.counts()
    assert c["total"] == 4 and c["site"] == {"site-1": 2, "site-2": 2}
    assert c["split"] == {"test": 1, "train": 3} and c["finding"]["opacity"] == 2
    assert len(m.select(site="site-1", split="train")) == 2
    with pytest.raises(ManifestError, match="site.*'site-9'.*zero rows"):
        m.select(site="site-9")
    with pytest.raises(ManifestError, match=r"\['site-1'\] have zero rows in split"):
        m.select(site="site-1", split="test")


@pytest.mark.parametrize(
    "mutate, line, field, message",
    [
        (lambda r: r[1].update(image="images/missing.png"), 2, "image", "image file not found"),
        (lambda r: r[2].update(report="  "), 3, "report", "empty or missing report"),
        (lambda r: r[2].pop("report"), 3, "report", "missing column"),
        (
            lambda r: r[0].update(labels={"opacitty": 1}),
            1,
            "labels",
            "unknown finding 'opacitty'.*did you mean 'opacity'",
        ),
        (lambda r: r[0].update(labels={"opacity": 2}), 1, "labels", "must be 0 or 1"),
        (lambda r: r[3].pop("site"), 4, "site", "missing column"),
        (lambda r: r[3].update(extra=1), 4, "extra", "unexpected column"),
        (lambda r: r[3].update(id="s0"), 4, "id", "duplicate id 's0' .first seen on line 1"),
        (lambda r: r[1].update(split="training"), 2, "split", "unknown split 'training'"),
        (lambda r: r[1].update(site=""), 2, "site", "empty site"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, mutate, line, field, message):
    rows = _rows(tmp_path)
    mutate(rows)
    path = _write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ManifestError, match=message) as info:
        read_manifest(path)
    err = info.value
    assert (err.line, err.field) == (line, field)
    assert str(err).startswith(f"{path}:{line} field '{field}'")


def test_invalid_json_line_and_empty_file(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": 1}\n{not json\n')
    with pytest.raises(ManifestError, match=r"m.jsonl:1 field 'image'"):
        read_manifest(path)
    path.write_text(json.dumps(_rows(tmp_path, 1)[0]) + "\n{not json\n")
    with pytest.raises(ManifestError, match=r"m.jsonl:2: invalid JSON"):
        read_manifest(path)
    path.write_text("")
    with pytest.raises(ManifestError, match="no rows"):
        read_manifest(path)


def test_csv_wrong_columns(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("id,path,report\n1,a.png,x\n")
    with pytest.raises(ManifestError, match=r"m.csv:2 field 'image'.*missing column"):
        read_manifest(path)


def test_missing_manifest_and_bad_extension(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "nope.jsonl")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(ManifestError, match="unsupported manifest extension"):
        read_manifest(tmp_path / "m.txt")


def test_allow_empty_report_and_skip_image_check(tmp_path):
    rows = _rows(tmp_path)
    rows[0]["report"] = ""
    rows[1]["image"] = "elsewhere/x.png"
    m = read_manifest(_write_jsonl(tmp_path / "m.jsonl", rows), allow_empty_report=True, check_images=False)
    assert m[0].report == "" and len(m) == 4


def test_report_only_rows_need_allow_empty_image_and_round_trip(tmp_path):
    """A row without an image (a site's report archive) is an error naming the line unless ``allow_empty_image``;
    allowed, its image is ``""`` and survives a write and re-read."""
    rows = _rows(tmp_path)
    rows[1]["image"] = " "
    path = _write_jsonl(tmp_path / "m.jsonl", rows)
    with pytest.raises(ManifestError, match="empty image path.*allow_empty_image") as info:
        read_manifest(path)
    assert (info.value.line, info.value.field) == (2, "image")
    m = read_manifest(path, allow_empty_image=True)
    assert m[1].image == "" and Path(m[0].image).is_file() and len(m) == 4
    again = read_manifest(write_manifest(m, tmp_path / "out.jsonl"), allow_empty_image=True)
    assert [r.image for r in again] == [r.image for r in m]


def test_write_is_atomic_and_refuses_missing_parent(tmp_path):
    records = [Record("a", str(_img(tmp_path, "a.png")), "r", {"opacity": 1})]
    with pytest.raises(ManifestError, match="output folder does not exist"):
        write_manifest(records, tmp_path / "no" / "m.jsonl")
    target = write_manifest(records, tmp_path / "m.jsonl")
    before = target.read_text()
    with pytest.raises(ManifestError, match="duplicate id"):
        write_manifest(records * 2, target)
    assert target.read_text() == before  # the failed write left the old file intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "m.jsonl"]  # and no temp file


def test_manifest_is_a_plain_container():
    m = Manifest([Record("a", "/x.png", "r", {"opacity": 0}, "s", "val")], ("opacity",))
    assert [r.id for r in m] == ["a"] and m.label_matrix() == [[0]]
