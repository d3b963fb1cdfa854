"""``flare-vlp data ...`` as a user runs it: exit codes, one clear error line, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flare_vlp.cli import main


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flare_vlp", *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "synth"
    result = _cli(
        "data", "synth", "--out", str(out), "--sites", "3", "--samples", "90", "--test-per-site", "30",
        "--alpha", "0.5", "--acq-shift", "1", "--size", "64", "--seed", "0", "--workers", "1", "--unseen-site",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "SynthCXR:" in result.stdout and "site-3" in result.stdout
    return out


def test_synth_writes_a_valid_manifest(synth_dir):
    assert (synth_dir / "manifest.jsonl").is_file() and (synth_dir / "synthcxr.json").is_file()
    meta = json.loads((synth_dir / "synthcxr.json").read_text())
    assert meta["config"]["sites"] == 3 and meta["config"]["unseen_site"] is True
    assert not [p for p in synth_dir.parent.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_check_prints_counts(synth_dir, capsys):
    assert main(["data", "check", str(synth_dir / "manifest.jsonl"), "--decode"]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "| site-1 |" in out and "| unseen |" in out and "cardiomegaly" in out
    assert main(["data", "check", str(synth_dir / "manifest.jsonl"), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["site_split"]["site-2/test"] == 30 and counts["site"]["unseen"] == 300


def test_montage(synth_dir, tmp_path, capsys):
    png = tmp_path / "m.png"
    assert main(["data", "montage", str(synth_dir), "--by", "site", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_partition_cli(synth_dir, tmp_path, capsys):
    out = tmp_path / "parted.jsonl"
    args = ["data", "partition", str(synth_dir / "manifest.jsonl"), "--out", str(out), "--sites", "2", "--alpha", "1"]
    assert main(args) == 0
    assert "over 2 sites" in capsys.readouterr().out and out.is_file()


def _bad_manifest(synth_dir: Path, tmp_path: Path, mutate) -> Path:
    rows = [json.loads(line) for line in (synth_dir / "manifest.jsonl").read_text().splitlines()[:5]]
    for r in rows:
        r["image"] = str(synth_dir / r["image"])
    mutate(rows)
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda rows: rows[2].update(image="/nonexistent/x.png"), r"bad.jsonl:3 field 'image': image file not found"),
        (lambda rows: rows[1].update(report=""), r"bad.jsonl:2 field 'report': empty or missing report"),
        (lambda rows: rows[0].update(labels={"pneumonia_x": 1}), r"bad.jsonl:1 field 'labels': unknown finding"),
        (lambda rows: rows[4].update(id=rows[0]["id"]), r"bad.jsonl:5 field 'id': duplicate id"),
        (lambda rows: rows[3].pop("split"), r"bad.jsonl:4 field 'split': missing column"),
    ],
)
def test_check_bad_manifest_exits_nonzero_naming_the_place(synth_dir, tmp_path, capsys, mutate, message):
    path = _bad_manifest(synth_dir, tmp_path, mutate)
    assert main(["data", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert __import__("re").search(message, err), err


def test_check_corrupt_image_with_decode(synth_dir, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    path = _bad_manifest(synth_dir, tmp_path, lambda rows: rows[1].update(image=str(corrupt)))
    assert main(["data", "check", str(path)]) == 0  # existence only without --decode
    assert main(["data", "check", str(path), "--decode"]) == 2
    err = capsys.readouterr().err
    assert "corrupt.png" in err and "record" in err


def test_check_site_with_zero_rows(synth_dir, capsys):
    from flare_vlp.data.manifest import ManifestError, read_manifest

    manifest = read_manifest(synth_dir / "manifest.jsonl")
    with pytest.raises(ManifestError, match=r"site\(s\) \['unseen'\] have zero rows in split\(s\) \['train'\]"):
        manifest.select(site="unseen", split="train")


def test_synth_missing_parent_fails_cleanly(tmp_path):
    target = tmp_path / "no" / "such" / "dir"
    result = _cli("data", "synth", "--out", str(target), "--samples", "20", "--sites", "2", "--workers", "1")
    assert result.returncode == 2
    assert "parent folder" in result.stderr and "does not exist" in result.stderr
    assert not (tmp_path / "no").exists()


def test_synth_refuses_non_empty_output_and_keeps_it(synth_dir, capsys):
    before = sorted(p.name for p in synth_dir.iterdir())
    assert main(["data", "synth", "--out", str(synth_dir), "--samples", "10", "--sites", "2", "--workers", "1"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in synth_dir.iterdir()) == before


def test_synth_bad_argument_names_the_field(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--sites", "0", "--workers", "1"]) == 2
    assert "sites" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_convert_unknown_source(tmp_path, capsys):
    assert main(["data", "convert", "mimic", str(tmp_path), "--out", str(tmp_path / "m.jsonl")]) == 2
    assert "unknown source 'mimic'" in capsys.readouterr().err
