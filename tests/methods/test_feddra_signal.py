"""FedDRA / FedAID at the sites with a real tiny dual encoder: the fixed-batch DRO signal does not measure the size of
a site's val split (the full pass does), a too-small val split is named and keeps its weight, and the reference
code's variants (ITA as a sum, stage 2 from the site's own stage-1 weights) change what the site trains."""

from __future__ import annotations

import dataclasses
import json
import logging
import math

import numpy as np
import pytest
import torch

from flare_vlp.algorithms.dro import scoring_batches
from flare_vlp.config import load_config
from flare_vlp.experiments.builders import build_model
from flare_vlp.methods.client import start_site
from flare_vlp.methods.feddra.config import TRAIN_DEEP
from flare_vlp.methods.messages import Message, Task, TaskName
from flare_vlp.methods.registry import get_method, method_config
from flare_vlp.methods.run_spec import DataSource, RunSpec
from flare_vlp.methods.runner import run_in_process
from flare_vlp.methods.site_store import SiteStore
from flare_vlp.methods.strategy import ServerContext
from flare_vlp.methods.tensors import to_numpy

FAST = {"train": {"bn_recalibration_batches": 1}}


def _site(tmp_path, site: str, *, seed: int = 0, **data):
    """One FedDRA site (DROClientAlgo) on the tiny config, started the way the runner and FLARE start it."""
    spec = RunSpec("feddra", config="tiny", config_overrides={**FAST, "seed": seed}, local_steps=1,
                   data=DataSource(**{k: str(v) for k, v in data.items()}))  # fmt: skip
    _, algo = start_site(spec, site, store=SiteStore(tmp_path / "stores" / site, site))
    return algo


def _global(seed: int = 0) -> dict[str, np.ndarray]:
    return to_numpy(build_model(load_config("tiny").model, seed=seed).state_dict())


def _lambda_after_one_step(replies: dict[str, Message], **settings) -> dict[str, float]:
    """The real FedAID strategy's lambda after the round-0 DRO step on ``replies`` (rho 1: the ball never binds
    for 2 sites, so lambda = softmax(eta * l))."""
    strategy = get_method("fedaid").strategy_cls()(method_config("fedaid", {"rho": 1.0, "eta": 0.5, **settings}))
    strategy.initialize(ServerContext(load_config("tiny"), 1, 2))
    return strategy.update_lambda(replies, 0)


# -- the scoring batches -----------------------------------------------------------------------------------------


def test_scoring_batches_are_seeded_same_size_distinct_rows():
    first = scoring_batches(100, 4, 32, seed=7, rnd=3)
    assert [len(b) for b in first] == [32] * 4 and all(len(set(b.tolist())) == 32 for b in first)
    assert all(b.min() >= 0 and b.max() < 100 for b in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, scoring_batches(100, 4, 32, seed=7, rnd=3)))
    assert not all(np.array_equal(a, b) for a, b in zip(first, scoring_batches(100, 4, 32, seed=7, rnd=4)))
    assert not all(np.array_equal(a, b) for a, b in zip(first, scoring_batches(100, 4, 32, seed=8, rnd=3)))
    # disjoint while one permutation lasts (3 batches of 32 from 100 rows), a fresh draw after that
    assert len(set(np.concatenate(first[:3]).tolist())) == 96
    small = scoring_batches(40, 4, 32, seed=0, rnd=0)  # a 40-row split: 4 overlapping batches of 32 distinct rows
    assert all(len(set(b.tolist())) == 32 for b in small)
    with pytest.raises(ValueError, match="39 rows cannot make a scoring batch of 40"):
        scoring_batches(39, 1, 40, seed=0, rnd=0)
    with pytest.raises(ValueError, match="batch_size >= 2"):
        scoring_batches(10, 1, 1, seed=0, rnd=0)


# -- the signal does not measure the val-set size -------------------------------------------------------------------

SEEDS = range(6)


@pytest.fixture(scope="module")
def one_distribution(tmp_path_factory):
    """800 SynthCXR train-split rows of ONE site (one distribution), re-dealt per seed to the two test sites."""
    from flare_vlp.data.manifest import read_manifest
    from flare_vlp.data.synthetic import SynthConfig, generate_synthcxr

    out = tmp_path_factory.mktemp("one_site") / "synthcxr"
    synth = SynthConfig(sites=1, samples=800, val_fraction=0.0, test_per_site=0, seed=3, supersample=1)
    generate_synthcxr(synth, out, workers=1)
    return [r for r in read_manifest(out / "manifest.jsonl") if r.split == "train"]


def _deal(rows, seed: int, path, plan=(("small", 40, 32), ("big", 400, 32))) -> str:
    """A manifest at ``path`` giving each ``(site, val rows, train rows)`` of ``plan`` rows drawn at random (seeded)
    from the same ``rows``; by default ``small`` 40 val rows and ``big`` 400 (+ 32 train rows each)."""
    from flare_vlp.data.manifest import write_manifest

    pick = iter([rows[i] for i in np.random.default_rng(100 + seed).permutation(len(rows))])
    records = [
        dataclasses.replace(next(pick), site=site, split=split)
        for site, n_val, n_train in plan
        for split, n in (("val", n_val), ("train", n_train))
        for _ in range(n)
    ]
    write_manifest(records, path, relative=False)
    return str(path)


@pytest.mark.slow
def test_fixed_batches_give_a_small_and_a_large_val_site_the_same_lambda(tmp_path, one_distribution):
    """Two sites, same distribution, 40 vs 400 val rows, an untrained tiny dual encoder (a fresh one per seed) and
    the real client algorithm and strategy; one DRO step (eta 0.5) per seed, averaged over 6 seeds.

    Measured over 20 seeds of this set-up: fixed batches (4 x 32) lambda_small 0.5000, per-seed sd 0.0008 (range
    0.4976-0.5015); full pass 0.4686, sd 0.0007 (tiny's batch is 32: the 40-row site is scored on batches of 32
    and 8, the other on twelve of 32 and one of 16: the small site's loss reads 0.25 nats lower). Tolerances for the
    mean of 6 seeds (standard error 0.0004): |fixed - 0.5| < 0.003 (3.5 per-seed sd, 8 standard errors) and full
    pass below 0.48 (the bias is 0.031; the margin of 0.011 is 14 per-seed sd)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    small = {"fixed": [], "full_pass": []}
    try:
        for seed in SEEDS:
            manifest = _deal(one_distribution, seed, tmp_path / f"deal-{seed}.jsonl")
            task = Task(TaskName.TRAIN, seed, 10, ("all",), 1, 0, {"dro_batches": 4, "dro_batch_size": 32})
            replies = {}
            for site in ("small", "big"):
                algo = _site(tmp_path, site, seed=seed, manifest=manifest)
                assert algo.data.n_val == (40 if site == "small" else 400)
                replies[site] = algo.train(task, Message(weights=_global(seed)), should_abort=lambda: False)
            for batches in small:
                small[batches].append(_lambda_after_one_step(replies, signal_batches=batches)["small"])
    finally:
        torch.set_num_threads(threads)
    fixed, full = np.mean(small["fixed"]), np.mean(small["full_pass"])
    assert abs(fixed - 0.5) < 0.003, small
    assert full < 0.48, small


# -- a val split smaller than one scoring batch -----------------------------------------------------------------------


def test_a_site_with_fewer_val_rows_than_a_batch_is_named_and_keeps_its_weight(tmp_path, tiny_data_dir, caplog):
    """``few`` has 6 val rows, ``many`` 20; batches of 8: ``few`` sends NaN (warned at the site, naming it and the
    fixes), ``many`` a finite loss; the server leaves ``few`` where it is (lambda unchanged for both)."""
    from flare_vlp.data.manifest import read_manifest

    rows = list(read_manifest(tiny_data_dir / "manifest.jsonl"))
    manifest = _deal(rows, 0, tmp_path / "deal.jsonl", plan=(("few", 6, 32), ("many", 20, 32)))
    task = Task(TaskName.TRAIN, 0, 1, ("all",), 1, 0, {"dro_batches": 2, "dro_batch_size": 8})
    replies = {}
    with caplog.at_level(logging.WARNING, logger="flare_vlp.site"):
        for site in ("few", "many"):
            algo = _site(tmp_path, site, manifest=manifest)
            replies[site] = algo.train(task, Message(weights=_global()), should_abort=lambda: False)
    assert math.isnan(replies["few"].metrics["dro_loss"]) and math.isnan(replies["few"].metrics["dro_local_loss"])
    assert math.isfinite(replies["many"].metrics["dro_loss"])
    (warning,) = [r.getMessage() for r in caplog.records if "scoring batch" in r.getMessage()]
    assert "'few'" in warning and "6 val rows" in warning and "dro_batch_size=8" in warning
    assert "full_pass" in warning
    assert _lambda_after_one_step(replies, dro_batch_size=8) == pytest.approx({"few": 0.5, "many": 0.5})


def test_bad_signal_options_are_errors_naming_the_site(tmp_path, tiny_data_dir):
    algo = _site(tmp_path, "site-2", data_dir=str(tiny_data_dir))
    for options, match in (
        ({"dro_batches": 2, "dro_batch_size": 1}, "site-2.*dro_batch_size=1"),
        ({"dro_batches": 2}, "site-2.*come together"),
        ({"loss_scale": "max"}, "site-2.*loss_scale='max'"),
    ):
        with pytest.raises(ValueError, match=match):
            algo.train(Task(TaskName.TRAIN, 0, 1, ("all",), 1, 0, options), Message(weights=_global()), lambda: False)


# -- the reference's variants at the site ---------------------------------------------------------------------------


def test_sum_loss_scale_trains_on_twice_the_ita(tmp_path, tiny_data_dir):
    """Same site, seed, first batch and dropout draws: the one-step train loss under ``loss_scale: sum`` is twice the
    mean's."""
    losses = {}
    for scale in ("mean", "sum"):
        algo = _site(tmp_path / scale, "site-2", data_dir=str(tiny_data_dir))
        options = {"loss_scale": "sum"} if scale == "sum" else {}
        reply = algo.train(
            Task(TaskName.TRAIN, 0, 1, ("all",), 1, 0, options), Message(weights=_global()), lambda: False
        )
        losses[scale] = reply.metrics["train_loss"]
    assert losses["sum"] == pytest.approx(2 * losses["mean"], rel=1e-5)


def _stage(algo, name: str, weights: dict, options: dict, rnd: int = 0) -> Message:
    groups = ("deep",) if name == TRAIN_DEEP else ("all",)
    return algo.train(Task(name, rnd, 2, groups, 2, int(name == TaskName.TRAIN), options), Message(weights=weights),
                      lambda: False)  # fmt: skip


def test_stage2_local_starts_from_the_sites_own_stage1_weights(tmp_path, tiny_data_dir, caplog):
    """Site A (``stage2_start: local``) gets the stage-1 average G' = G in stage 2; site B, same seed, runs the same
    stage 1 and then a plain stage 2 handed B's own stage-1 weights: both train the same from the same start. A site
    with a plain stage 2 on G' (the default) ends elsewhere, so the comparison can fail."""
    g = _global()
    local = {"stage2_start": "local"}
    a = _site(tmp_path / "a", "site-2", data_dir=str(tiny_data_dir))
    b = _site(tmp_path / "b", "site-2", data_dir=str(tiny_data_dir))
    c = _site(tmp_path / "c", "site-2", data_dir=str(tiny_data_dir))
    for site, options in ((a, local), (b, {}), (c, {})):
        _stage(site, TRAIN_DEEP, g, options)
    from_local = _stage(a, TaskName.TRAIN, g, local)
    own = {k: v for k, v in b.get_weights(Task()).weights.items()}
    reference = _stage(b, TaskName.TRAIN, own, {})
    from_average = _stage(c, TaskName.TRAIN, g, {})
    assert from_local.metrics["stage2_local"] == 1.0 and "stage2_local" not in reference.metrics
    gap = max(float(np.abs(from_local.weights[k] - from_average.weights[k]).max()) for k in from_local.weights)
    assert gap > 1e-4
    for key in from_local.weights:
        np.testing.assert_allclose(from_local.weights[key], reference.weights[key], rtol=0, atol=1e-6, err_msg=key)
    # the stage-1 weights are used once: a stage 2 of another round falls back to the received model, named
    with caplog.at_level(logging.WARNING, logger="flare_vlp.site"):
        late = _stage(a, TaskName.TRAIN, g, local, rnd=1)
    assert late.metrics["stage2_local"] == 0.0
    assert any("'site-2' round 1" in r.getMessage() and "stage-1 weights" in r.getMessage() for r in caplog.records)


def test_stage2_local_with_the_anchor_pulls_towards_the_stage1_average(tmp_path, tiny_data_dir):
    """With the anchor on, stage 2 from the site's own weights starts away from the anchor (the received stage-1
    average). A global start begins AT the anchor: its first-step anchor term is only the text tower's dropout (the
    anchor copy runs without it), measured 0.0002, against 0.008 from the stage-1 weights; asserted at 10x."""
    g = _global()
    anchors = {}
    for start in ("global", "local"):
        algo = _site(tmp_path / start, "site-2", data_dir=str(tiny_data_dir))
        options = {"anchor_weight": 1.0, **({"stage2_start": "local"} if start == "local" else {})}
        _stage(algo, TRAIN_DEEP, g, options)
        task = Task(TaskName.TRAIN, 0, 2, ("all",), 1, 1, options)
        anchors[start] = algo.train(task, Message(weights=g), lambda: False).metrics["anchor"]
    assert anchors["local"] > 10 * anchors["global"], anchors


@pytest.mark.slow
def test_reference_variants_run_through_the_in_process_runner(tmp_path, tiny_data_dir):
    """FedDRA with every new option over the runner's wire: each site's fixed-batch loss reaches the DRO step and
    stage 2 starts from the sites' stage-1 weights."""
    settings = {"stage1_steps": 1, "stage2_steps": 1, "dro_batches": 2, "dro_batch_size": 4, "loss_scale": "sum",
                "stage2_start": "local", "rho": 1.0}  # fmt: skip
    spec = RunSpec("feddra", sites=("site-1", "site-2"), method_settings=settings, num_rounds=1, local_steps=1,
                   data=DataSource(data_dir=str(tiny_data_dir)), config_overrides=FAST)  # fmt: skip
    run_in_process(spec, tmp_path / "run")
    events = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    (dro,) = [e for e in events if e["event"] == "dro"]
    assert dro["signal_batches"] == "fixed" and dro["loss_scale"] == "sum"
    sites = {(e["task"], e["site"]): e for e in events if e["event"] == "site"}
    for site in ("site-1", "site-2"):
        # the DRO step saw twice the site's fixed-batch loss (loss_scale sum)
        assert dro["losses"][site] == pytest.approx(2 * sites[(TRAIN_DEEP, site)]["dro_loss"])
        assert sites[(TaskName.TRAIN, site)]["stage2_local"] == 1.0
