"""The committed job folders under jobs/ equal a fresh export, and `flare-vlp run` works end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flare_vlp.cli import main

REPO = Path(__file__).resolve().parents[2]


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_committed_jobs_are_fresh(tmp_path, capsys):
    assert main(["jobs", "export", "--out", str(tmp_path)]) == 0
    fresh, committed = _files(tmp_path), _files(REPO / "jobs")
    assert fresh == committed, "jobs/ is stale: run `flare-vlp jobs export --out jobs` and commit"
    assert not any("custom" in name for name in committed)
    client = json.loads(committed["fedavg_vlp/app/config/config_fed_client.json"])
    assert client["executors"][0]["executor"]["path"] == "flare_vlp.fl.executor.ClientAlgoExecutor"


@pytest.mark.slow
def test_cli_run_fedavg_then_report(tiny_data_dir, tmp_path, capsys):
    data_dir = tiny_data_dir  # made with the tiny config, so the run reuses it instead of regenerating
    out = tmp_path / "fedavg"
    args = ["run", "--method", "fedavg", "--config", "tiny", "--rounds", "1", "--local-steps", "2"]
    assert main([*args, "--data-dir", str(data_dir), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "fedavg" and 0 <= summary["summary"]["zero_shot_pooled"] <= 1
    # the headline is the evaluation of the trained global model: its groups, combined as documented
    groups, headline = summary["eval"]["groups"], summary["summary"]
    assert headline["zero_shot_pooled"] == groups["pooled"]["zero_shot"]["macro"]
    assert headline["zero_shot_worst_site"] == min(groups[s]["zero_shot"]["macro"] for s in ("site-1", "site-2"))
    assert headline["i2t_R@5"] == groups["pooled"]["retrieval"]["i2t_R@5"]
    assert headline != summary["floor"], "the trained global model must not score exactly as the untrained one"
    assert (out / "models" / "global.safetensors").is_file() and (out / "flare").is_dir()
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {(e["site"], e["round"]) for e in events if e["event"] == "site"} == {("site-1", 0), ("site-2", 0)}
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "| fedavg |" in capsys.readouterr().out


def test_committed_poc_project_is_fresh(tmp_path):
    from flare_vlp.fl.provision import write_poc_project

    fresh = write_poc_project(tmp_path / "project.yml", [f"site-{i}" for i in range(1, 6)], port=8102)
    assert fresh.read_text() == (REPO / "poc" / "project.yml").read_text(), "regenerate poc/project.yml (poc/README.md)"
