"""Centralized and local-only baselines: the same training loop and evaluation as every federated method.

* ``centralized``: one model on the pooled training data of all sites (the upper bound FL methods chase).
* ``local``: one model per site on that site's data alone. Its headline numbers: ``*_mean_site`` / ``*_worst_site``
  use each site's own model on its own test set; ``*_pooled`` and ``*_unseen`` average the per-site models' scores on
  the pooled / unseen test sets (how well one hospital's model transfers).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from flare_vlp.config import ExperimentConfig
from flare_vlp.data.manifest import Manifest
from flare_vlp.evaluation import UNSEEN_SITES, evaluate_model, is_unseen, nanmean
from flare_vlp.experiments.builders import (
    build_dataset,
    build_loader,
    build_model,
    build_tokenizer,
    default_data_dir,
    prepare_manifest,
)
from flare_vlp.experiments.plots import plot_losses
from flare_vlp.experiments.run_folder import RunFolder
from flare_vlp.training import train_loop
from flare_vlp.utils.io import atomic_output_dir

__all__ = ["run_baseline", "train_and_evaluate", "probe_subset"]

logger = logging.getLogger(__name__)


def probe_subset(manifest: Manifest, seed: int, size: int) -> Manifest:
    """The seeded subset of pooled training images the linear probe is fitted on (identical for every method)."""
    train = manifest.select(split="train")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.permutation(len(train))[:size])
    return Manifest([train[i] for i in idx], train.findings, train.path)


def train_and_evaluate(
    cfg: ExperimentConfig,
    train_manifest: Manifest,
    test_manifest: Manifest,
    probe_manifest: Manifest,
    *,
    device: str = "cpu",
    on_log: Callable[[int, dict], None] | None = None,
    evaluate_floor: bool = False,
    text_memo_from: torch.nn.Module | None = None,
):
    """Train one model on ``train_manifest`` and evaluate it; returns (model, TrainResult, eval dict, floor).

    ``text_memo_from``: a model with the same frozen text encoder whose memoised report features this one may reuse.
    """
    tokenizer = build_tokenizer(cfg.model)
    model = build_model(cfg.model, seed=cfg.seed)
    if text_memo_from is not None and "text_encoder" in cfg.model.frozen:
        model.share_text_memo(text_memo_from)
    test_ds = build_dataset(test_manifest, cfg.data, train=False)
    probe_ds = build_dataset(probe_manifest, cfg.data, train=False)
    evaluate = lambda m: evaluate_model(  # noqa: E731
        m,
        tokenizer,
        test_ds,
        test_manifest.findings,
        cfg.eval,
        probe_train=probe_ds,
        max_length=cfg.data.max_text_length,
        device=device,
        seed=cfg.seed,
    )
    floor = evaluate(model) if evaluate_floor else None
    train_ds = build_dataset(train_manifest, cfg.data, train=True, seed=cfg.seed)
    loader = build_loader(
        train_ds,
        tokenizer,
        batch_size=cfg.train.batch_size,
        max_length=cfg.data.max_text_length,
        shuffle=True,
        seed=cfg.seed,
    )
    result = train_loop(model, loader, cfg.train, device=device, seed=cfg.seed, on_log=on_log)
    return model, result, evaluate(model), floor


def run_baseline(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    mode: Literal["centralized", "local"],
    *,
    data_dir: str | Path | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
) -> dict:
    """Run a baseline and write its run folder; returns the summary dict."""
    if mode not in ("centralized", "local"):
        raise ValueError(f"unknown mode '{mode}'; expected 'centralized' or 'local'")
    out_dir = Path(out_dir)
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir(cfg, out_dir.absolute().parent)
    t0 = time.perf_counter()
    manifest = prepare_manifest(cfg, data_dir)
    echo(f"[{mode}] data: {len(manifest)} rows, sites {manifest.sites} ({time.perf_counter() - t0:.0f} s)")
    test = manifest.select(split="test")
    probe = probe_subset(manifest, cfg.seed, cfg.eval.probe_samples)
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        run = RunFolder(tmp)
        run.write_config(cfg, method=mode, data_manifest=str(manifest.path))
        try:
            if mode == "centralized":
                summary, extra = _centralized(cfg, manifest, test, probe, run, device, echo)
            else:
                summary, extra = _local(cfg, manifest, test, probe, run, device, echo)
            extra["seconds"] = round(time.perf_counter() - t0, 1)
            run.write_summary(mode, mode, summary, **extra)
        finally:
            run.close()
    echo(f"[{mode}] wrote {out_dir} ({time.perf_counter() - t0:.0f} s)")
    return summary


def _logger(run: RunFolder, site: str, echo: Callable[[str], None], every: int):
    def on_log(step: int, logs: dict) -> None:
        run.log("train", site=site, step=step, **logs)
        if step % every == 0:
            echo(f"  [{site}] step {step:4d} loss {logs['loss']:.4f} lr {logs['lr']:.2e}")

    return on_log


def _centralized(cfg, manifest, test, probe, run, device, echo):
    train = manifest.select(split="train", site=[s for s in manifest.sites if not is_unseen(s)])
    model, result, ev, floor = train_and_evaluate(
        cfg,
        train,
        test,
        probe,
        device=device,
        on_log=_logger(run, "pooled", echo, 10 * cfg.train.log_every),
        evaluate_floor=cfg.eval.untrained_floor,
    )
    echo(f"[centralized] {result.steps} steps, {result.samples_per_s:.0f} samples/s, loss {result.final_loss:.3f}")
    run.log("eval", site="pooled", **ev["summary"])
    run.save_model("model", model.state_dict())
    plot_losses({"pooled": result.losses}, run.root / "plots" / "loss.png", title="centralized training loss")
    extra = {"eval": ev, "train": result.summary()}
    if floor is not None:
        extra["floor"] = floor["summary"]
    return ev["summary"], extra


def _local(cfg, manifest, test, probe, run, device, echo):
    sites = [s for s in manifest.sites if not is_unseen(s) and len(manifest.select(site=s, split=["train", "test"]))]
    per_site, losses, floor, first = {}, {}, None, None
    for i, site in enumerate(sites):
        train = manifest.select(site=site, split="train")
        model, result, ev, fl = train_and_evaluate(
            cfg,
            train,
            test,
            probe,
            device=device,
            on_log=_logger(run, site, echo, 10 * cfg.train.log_every),
            evaluate_floor=cfg.eval.untrained_floor and i == 0,
            text_memo_from=first,
        )
        first = first or model
        floor = floor or (fl["summary"] if fl else None)
        echo(f"[local] {site}: {result.steps} steps, loss {result.final_loss:.3f}")
        per_site[site] = ev
        losses[site] = result.losses
        run.log("eval", site=site, **ev["summary"])
        run.save_model(f"model-{site}", model.state_dict())
        del model
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    plot_losses(losses, run.root / "plots" / "loss.png", title="local-only training loss per site")
    summary = _local_summary(per_site, sites)
    extra = {"eval": {"per_site_models": per_site}}
    if floor is not None:
        extra["floor"] = floor
    return summary, extra


def _local_summary(per_site: dict, sites: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    first = per_site[sites[0]]["groups"]
    for metric in ("zero_shot", "linear_probe"):
        if metric not in first[sites[0]]:
            continue
        own = [per_site[s]["groups"][s][metric]["macro"] for s in sites]
        out[f"{metric}_pooled"] = nanmean(per_site[s]["groups"]["pooled"][metric]["macro"] for s in sites)
        out[f"{metric}_worst_site"] = float(np.nanmin(own))
        out[f"{metric}_mean_site"] = nanmean(own)
        for unseen, suffix in UNSEEN_SITES.items():
            if unseen in first:
                out[f"{metric}_{suffix}"] = nanmean(per_site[s]["groups"][unseen][metric]["macro"] for s in sites)
    for key in per_site[sites[0]]["summary"]:
        if "R@" in key:
            out[key] = nanmean(per_site[s]["summary"][key] for s in sites)
    return out
