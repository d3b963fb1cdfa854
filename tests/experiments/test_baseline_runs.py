"""Centralized and local-only baselines end to end from the CLI (tiny preset), then ``flare-vlp report``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from flare_vlp.cli import main

pytestmark = pytest.mark.slow

SITES = ["site-1", "site-2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_data_dir):
    """Both baselines on the session's tiny SynthCXR (made with tiny's data settings: reused, not generated again)."""
    root = tmp_path_factory.mktemp("runs")
    for mode in ("centralized", "local"):
        argv = ["train", "--config", "tiny", "--mode", mode, "--out", str(root / mode)]
        assert main([*argv, "--data-dir", str(tiny_data_dir)]) == 0
    return root


def _summary(run) -> dict:
    return json.loads((run / "summary.json").read_text())


def _macro(aucs: dict) -> float:
    """A group's macro AUC by hand: the mean over the findings whose AUC is defined."""
    values = [v for k, v in aucs.items() if k != "macro" and not math.isnan(v)]
    return sum(values) / len(values)


def test_centralized_summary_is_the_evaluation_of_its_trained_model(runs):
    """The headline numbers are the pooled / per-site / unseen groups of the evaluation, combined as documented, and
    the evaluated model is a trained one (its weights moved away from the seeded start; its AUCs differ from the
    untrained floor's)."""
    written = _summary(runs / "centralized")
    summary, groups = written["summary"], written["eval"]["groups"]
    assert set(groups) == {*SITES, "pooled", "unseen"}
    for group in groups.values():
        for metric in ("zero_shot", "linear_probe"):
            assert group[metric]["macro"] == pytest.approx(_macro(group[metric]), abs=1e-12)
    for metric in ("zero_shot", "linear_probe"):
        own = [groups[s][metric]["macro"] for s in SITES]
        assert summary[f"{metric}_pooled"] == groups["pooled"][metric]["macro"]
        assert summary[f"{metric}_worst_site"] == min(own)
        assert summary[f"{metric}_mean_site"] == pytest.approx(sum(own) / len(own), abs=1e-12)
        assert summary[f"{metric}_unseen"] == groups["unseen"][metric]["macro"]
    for k in (1, 5, 10):
        for key in (f"i2t_R@{k}", f"t2i_R@{k}", f"chance_R@{k}"):
            assert summary[key] == groups["pooled"]["retrieval"][key], key
    assert summary["unseen_i2t_R@5"] == groups["unseen"]["retrieval"]["i2t_R@5"]
    assert summary != written["floor"], "the trained model must not score exactly as the untrained one"
    events = [json.loads(line) for line in (runs / "centralized" / "metrics.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in events if e["event"] == "train"]
    assert losses[-1] < losses[0], losses
    from flare_vlp.config import load_config
    from flare_vlp.experiments.builders import build_model

    cfg = load_config("tiny")
    start = build_model(cfg.model, seed=cfg.seed).state_dict()
    trained = load_file(runs / "centralized" / "models" / "model.safetensors")
    assert set(trained) == set(start)
    assert not np.allclose(trained["image_head.weight"], start["image_head.weight"].numpy())


def test_local_summary_averages_the_site_models(runs):
    """Local-only: one model per site, each evaluated on every group; the headline averages the site models
    (pooled, unseen, R@K) and takes each site's own model on its own test rows for the worst / mean site."""
    written = _summary(runs / "local")
    summary, per_model = written["summary"], written["eval"]["per_site_models"]
    assert set(per_model) == set(SITES)
    for metric in ("zero_shot", "linear_probe"):
        own = [per_model[s]["groups"][s][metric]["macro"] for s in SITES]
        pooled = [per_model[s]["groups"]["pooled"][metric]["macro"] for s in SITES]
        unseen = [per_model[s]["groups"]["unseen"][metric]["macro"] for s in SITES]
        assert summary[f"{metric}_worst_site"] == min(own)
        assert summary[f"{metric}_mean_site"] == pytest.approx(sum(own) / 2, abs=1e-12)
        assert summary[f"{metric}_pooled"] == pytest.approx(sum(pooled) / 2, abs=1e-12)
        assert summary[f"{metric}_unseen"] == pytest.approx(sum(unseen) / 2, abs=1e-12)
    for key in ("i2t_R@5", "t2i_R@5", "chance_R@5", "unseen_i2t_R@5"):
        assert summary[key] == pytest.approx(sum(per_model[s]["summary"][key] for s in SITES) / 2, abs=1e-12), key
    models = {s: load_file(runs / "local" / "models" / f"model-{s}.safetensors") for s in SITES}
    assert not np.allclose(models["site-1"]["image_head.weight"], models["site-2"]["image_head.weight"])
    events = [json.loads(line) for line in (runs / "local" / "metrics.jsonl").read_text().splitlines()]
    assert {e["site"] for e in events if e["event"] == "train"} == set(SITES)


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


def test_bad_config_and_paths(tmp_path, capsys, tiny_data_dir):
    from flare_vlp.config import preset_path

    tiny = yaml.safe_load(preset_path("tiny").read_text())  # tiny's data: the session's SynthCXR, not generated again
    tiny["model"].update(text_encoder="hf_text", text_kwargs={"path": "/nonexistent/bert"})
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tiny))
    data = ["--data-dir", str(tiny_data_dir)]
    assert main(["train", "--config", str(bad), "--mode", "centralized", "--out", str(tmp_path / "r"), *data]) == 2
    assert "/nonexistent/bert" in capsys.readouterr().err
    assert main(["train", "--config", "tinyy", "--mode", "local", "--out", str(tmp_path / "r"), *data]) == 2
    assert "did you mean 'tiny'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
