"""Centralized and local-only baselines end to end from the CLI (tiny preset), then ``flare-vlp report``."""

from __future__ import annotations

import json

import pytest

from flare_vlp.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for mode in ("centralized", "local"):
        assert main(["train", "--config", "tiny", "--mode", mode, "--out", str(root / mode)]) == 0
    return root


def test_run_folder_layout(runs):
    for mode in ("centralized", "local"):
        run = runs / mode
        assert {"config.yaml", "metrics.jsonl", "summary.json", "summary.md", "models", "plots"} <= {
            p.name for p in run.iterdir()
        }
        summary = json.loads((run / "summary.json").read_text())
        assert summary["method"] == mode
        for key in ("zero_shot_pooled", "zero_shot_worst_site", "zero_shot_unseen", "linear_probe_pooled", "i2t_R@5"):
            assert 0.0 <= summary["summary"][key] <= 1.0, key
        assert "floor" in summary and (run / "plots" / "loss.png").stat().st_size > 1000
        events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert {e["event"] for e in events} >= {"train", "eval"}
    assert sorted(p.name for p in (runs / "local" / "models").iterdir()) == [
        "model-site-1.safetensors",
        "model-site-2.safetensors",
    ]
    assert not [p for p in runs.iterdir() if p.name.startswith(".")]  # no temp folder left behind


def test_report_compares_runs(runs, capsys, tmp_path):
    png = tmp_path / "cmp.png"
    assert main(["report", str(runs / "centralized"), str(runs / "local"), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "| centralized |" in out and "| local |" in out and "| untrained floor |" in out
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_existing_run_folder_is_not_overwritten(runs, capsys):
    before = (runs / "centralized" / "summary.json").read_text()
    assert main(["train", "--config", "tiny", "--mode", "centralized", "--out", str(runs / "centralized")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (runs / "centralized" / "summary.json").read_text() == before


def test_bad_config_and_paths(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {text_encoder: hf_text, text_kwargs: {path: /nonexistent/bert}}\n")
    assert main(["train", "--config", str(bad), "--mode", "centralized", "--out", str(tmp_path / "r")]) == 2
    assert "/nonexistent/bert" in capsys.readouterr().err
    assert main(["train", "--config", "tinyy", "--mode", "local", "--out", str(tmp_path / "r")]) == 2
    assert "did you mean 'tiny'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
