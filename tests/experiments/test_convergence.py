"""The convergence criterion and the per-round global loss it reads."""

from __future__ import annotations

import json
import math

from flare_vlp.experiments.convergence import convergence, global_loss_by_round, train_loss_by_window


def test_criterion_on_hand_made_series():
    flat = [5.0, 4.0, 3.0, 2.50, 2.49, 2.495, 2.48, 2.49]  # last 5: range 0.02 / mean 2.491 = 0.8%
    assert convergence(flat)["met"] is True
    assert math.isclose(convergence(flat)["relative_change"], 0.02 / 2.491, rel_tol=1e-3)
    falling = [5.0, 4.0, 3.0, 2.6, 2.5, 2.4, 2.3, 2.2]  # still 17% over the last 5
    assert convergence(falling)["met"] is False
    short = convergence([2.0, 2.0, 2.0])
    assert short["met"] is False and math.isnan(short["relative_change"])
    assert convergence([2.0, float("nan"), 2.0, 2.0, 2.0, 2.0])["met"] is True  # a missing round is skipped


def test_global_loss_reads_the_first_task_of_each_round(tmp_path):
    events = [
        {"event": "site", "round": 0, "task": "train_deep", "site": "a", "global_val_loss": 4.0},
        {"event": "site", "round": 0, "task": "train_deep", "site": "b", "global_val_loss": 2.0},
        {"event": "site", "round": 0, "task": "train", "site": "a", "global_val_loss": 9.0},  # stage 2: not read
        {"event": "round", "round": 0},
        {"event": "site", "round": 1, "task": "train_deep", "site": "a", "global_val_loss": 3.0},
        {"event": "site", "round": 1, "task": "train_deep", "site": "b", "global_val_loss": float("nan")},
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    assert global_loss_by_round(path) == [3.0, 3.0]
    assert global_loss_by_round(tmp_path / "absent.jsonl") == []


def test_train_loss_windows():
    assert train_loss_by_window([1, 1, 2, 2, 3, 3], 3) == [1.0, 2.0, 3.0]
    assert train_loss_by_window([1, 2], 5) == [1.0, 2.0]


def test_overview_figure_and_per_site_scores(tmp_path):
    from flare_vlp.experiments.plots import plot_overview
    from flare_vlp.experiments.report import per_site_scores

    group = lambda auc: {"zero_shot": {"macro": auc}}  # noqa: E731
    fed = {"summary": {}, "eval": {"groups": {"site-1": group(0.6), "site-2": group(0.7), "pooled": group(0.65),
                                              "unseen": group(0.55)}}}  # fmt: skip
    one = {"site-1": group(0.62), "site-2": group(0.5), "pooled": group(0.56), "unseen": group(0.5)}
    two = {"site-1": group(0.5), "site-2": group(0.58), "pooled": group(0.54), "unseen": group(0.6)}
    local = {"summary": {}, "eval": {"per_site_models": {"site-1": {"groups": one}, "site-2": {"groups": two}}}}
    for name, data in (("fed", fed), ("local", local)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(data))
    assert per_site_scores(tmp_path / "fed") == {"site-1": 0.6, "site-2": 0.7, "unseen": 0.55}
    scores = per_site_scores(tmp_path / "local")
    assert scores["site-1"] == 0.62 and scores["site-2"] == 0.58 and math.isclose(scores["unseen"], 0.55)
    out = plot_overview({"fed": per_site_scores(tmp_path / "fed"), "local": scores},
                        {"site-1": [0.5, 0.6], "site-2": [0.5, 0.4]}, tmp_path / "o.png", floor=0.5)  # fmt: skip
    assert out.stat().st_size > 10_000
