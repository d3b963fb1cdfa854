"""The test-set bootstrap: it reproduces the evaluation's headline numbers and pairs models on the same replicates."""

from __future__ import annotations

import numpy as np
import pytest

from flare_vlp.evaluation.bootstrap import bootstrap_zero_shot, interval, score_test_set, zero_shot_headline

FINDINGS = ["opacity", "nodule"]


def _toy(n_per_site: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    sites = np.repeat(["site-1", "site-2", "unseen"], n_per_site)
    labels = rng.integers(0, 2, size=(sites.size, 2))
    noisy = labels + rng.normal(scale=1.0, size=labels.shape)
    return noisy, labels, sites


def test_headline_matches_the_evaluation_of_a_real_model(synth_small):
    from flare_vlp.config import load_config
    from flare_vlp.evaluation import evaluate_model
    from flare_vlp.experiments.builders import build_dataset, build_model, build_tokenizer

    cfg = load_config("tiny")
    tok = build_tokenizer(cfg.model)
    test = build_dataset(synth_small.select(split="test"), cfg.data, train=False)
    model = build_model(cfg.model, seed=0)
    summary = evaluate_model(model, tok, test, synth_small.findings, cfg.eval, max_length=cfg.data.max_text_length)
    scores, labels, sites = score_test_set(model, tok, test, synth_small.findings, max_length=cfg.data.max_text_length)
    mine = zero_shot_headline(scores, labels, sites, synth_small.findings)
    for metric, value in mine.items():
        assert value == pytest.approx(summary["summary"][metric], abs=1e-9), metric


def test_replicates_are_paired_and_keep_site_sizes():
    scores, labels, sites = _toy()
    reps = bootstrap_zero_shot({"a": scores, "b": scores.copy()}, labels, sites, FINDINGS, n_boot=50, seed=1)
    for metric in ("zero_shot_pooled", "zero_shot_worst_site", "zero_shot_unseen"):
        assert reps["a"][metric].shape == (50,)
        assert np.array_equal(reps["a"][metric], reps["b"][metric])  # same images in every replicate
        assert reps["a"][metric].std() > 0  # resampling does move a noisy scorer's AUC


def test_a_perfect_scorer_has_no_spread_and_the_seed_fixes_the_draws():
    _, labels, sites = _toy()
    perfect = labels.astype(float)
    reps = bootstrap_zero_shot({"p": perfect}, labels, sites, FINDINGS, n_boot=20, seed=0)
    assert np.all(reps["p"]["zero_shot_worst_site"] == 1.0)
    scores, _, _ = _toy(seed=3)
    first = bootstrap_zero_shot({"m": scores}, labels, sites, FINDINGS, n_boot=10, seed=5)
    again = bootstrap_zero_shot({"m": scores}, labels, sites, FINDINGS, n_boot=10, seed=5)
    assert np.array_equal(first["m"]["zero_shot_pooled"], again["m"]["zero_shot_pooled"])


def test_more_test_images_give_a_narrower_interval():
    small = _toy(n_per_site=40)
    large = _toy(n_per_site=640)
    spread = []
    for scores, labels, sites in (small, large):
        reps = bootstrap_zero_shot({"m": scores}, labels, sites, FINDINGS, n_boot=100, seed=0)
        spread.append(interval(reps["m"]["zero_shot_pooled"])[0])
    assert spread[1] < spread[0] / 2  # 16x the images: about a quarter of the spread


def test_a_mismatched_model_is_named():
    scores, labels, sites = _toy()
    with pytest.raises(ValueError, match="model 'bad'"):
        bootstrap_zero_shot({"bad": scores[:, :1]}, labels, sites, FINDINGS, n_boot=2)


def test_rank_auc_equals_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    from flare_vlp.evaluation.bootstrap import _auc

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=200)
    score = np.round(y + rng.normal(size=200), 1)  # rounded: many ties
    assert _auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert np.isnan(_auc(np.ones(5, dtype=int), np.arange(5.0)))
