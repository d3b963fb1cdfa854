"""The report's columns come from the compared runs' methods (MethodSpec.report_columns, handed in by the caller),
a method's own plots from its registry entry (MethodSpec.plots), the demo's line-up from MethodSpec.demo."""

from __future__ import annotations

import json

import pytest

from flare_vlp.experiments.report import HEADLINE, compare_runs, comparison_table, site_weights_by_round
from flare_vlp.methods.registry import MethodSpec, demo_methods, get_method, report_columns, resolve

PERSONAL = ("bacc_mean", "bacc_worst", "auc_mean", "auc_worst")


def _run(root, name: str, method: str, summary: dict):
    (root / name).mkdir()
    (root / name / "summary.json").write_text(json.dumps({"method": method, "mode": "federated", "summary": summary}))
    return root / name


def test_the_table_takes_the_extra_columns_of_the_runs_methods(tmp_path):
    personal = dict(zip(PERSONAL, (0.7, 0.6, 0.8, 0.75)))
    global_model = {m: 0.5 for m in HEADLINE}
    assert comparison_table({"p": personal}).splitlines()[0].split(" | ")[1] == HEADLINE[0]  # no extras: headline
    header = comparison_table({"p": personal}, extra=PERSONAL).splitlines()[0]
    assert header == "| run | bacc_mean | bacc_worst | auc_mean | auc_worst |"
    runs = [_run(tmp_path, "lora", "fedopal", personal), _run(tmp_path, "avg", "fedavg", global_model)]
    table = compare_runs(runs, columns=report_columns())
    assert table.splitlines()[0] == "| run | " + " | ".join([*HEADLINE, *PERSONAL]) + " |"
    assert "| lora | n/a |" in table and table.splitlines()[3].endswith("| n/a | n/a | n/a | n/a |")  # avg: no bacc
    assert compare_runs(runs[1:], columns=report_columns()).splitlines()[0] == "| run | " + " | ".join(HEADLINE) + " |"


def test_registry_entries_carry_columns_plots_and_demo():
    from flare_vlp.methods.feddra import DEMO_SETTINGS

    assert report_columns()["fedopal"] == PERSONAL and "fedavg" not in report_columns()
    assert demo_methods() == {"fedavg": {}, "feddra": DEMO_SETTINGS}
    assert get_method("feddra").plots == get_method("fedaid").plots and not get_method("fedavg").plots
    for path in get_method("feddra").plots:
        assert callable(resolve(path))
    with pytest.raises(TypeError, match="plots must be a tuple of strings"):
        MethodSpec("x", type(get_method("fedavg").config_cls()), "a.B", {"default": "a.C"}, "x", plots="a.plot")


def _events(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_site_weights_by_round_and_the_lambda_plot(tmp_path):
    """The generic weights (first task of each round, normalised) equal FedDRA's lambda; its plot is drawn only for a
    run with ``dro`` events."""
    from flare_vlp.methods.feddra.plots import dro_trajectories, plot_dro_weights

    (tmp_path / "plots").mkdir()
    lam = [{"a": 0.25, "b": 0.75}, {"a": 0.4, "b": 0.6}]
    records = []
    for rnd, weights in enumerate(lam):
        records.append({"event": "dro", "round": rnd, "lmbda": weights})
        records.append({"event": "round", "round": rnd, "task": "train_deep", "weights": weights})
        records.append({"event": "round", "round": rnd, "task": "train", "weights": {"a": 1.0, "b": 1.0}})
    _events(tmp_path / "metrics.jsonl", records)
    assert site_weights_by_round(tmp_path / "metrics.jsonl") == {"a": [0.25, 0.4], "b": [0.75, 0.6]}
    assert dro_trajectories(tmp_path / "metrics.jsonl") == {"a": [0.25, 0.4], "b": [0.75, 0.6]}
    (path,) = plot_dro_weights(tmp_path, "feddra")
    assert path == tmp_path / "plots" / "dro_weights.png" and path.stat().st_size > 5_000
    _events(tmp_path / "metrics.jsonl", [{"event": "round", "round": 0, "task": "train", "weights": {"a": 3, "b": 1}}])
    assert site_weights_by_round(tmp_path / "metrics.jsonl") == {"a": [0.75], "b": [0.25]}  # n_k weights normalised
    assert plot_dro_weights(tmp_path, "fedavg") == []
