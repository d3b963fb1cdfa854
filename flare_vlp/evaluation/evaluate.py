"""The evaluation protocol of every run: zero-shot AUC, retrieval R@K and linear probe, per site, pooled and unseen.

Groups: each training site's label-balanced test set (``site-k``), their union (``pooled``) and the held-out
``unseen`` site when present. ``summary`` leads with zero-shot (the linear probe has a high untrained floor) and
gives pooled / worst-site / unseen figures, the numbers the method comparisons use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from torch import nn
from torch.utils.data import Dataset

from flare_vlp.config import EvalConfig
from flare_vlp.evaluation.embeddings import Embeddings, compute_embeddings, embed_texts
from flare_vlp.evaluation.linear_probe import fit_linear_probe, probe_scores
from flare_vlp.evaluation.metrics import nanmean, per_finding_auc
from flare_vlp.evaluation.retrieval import recall_at_k
from flare_vlp.evaluation.zero_shot import prompt_directions, zero_shot_auc

__all__ = ["evaluate_model", "summarize", "UNSEEN_SITE", "UNSEEN_SITES", "is_unseen"]

UNSEEN_SITE = "unseen"
UNSEEN_SITES = {"unseen": "unseen", "unseen-inside": "unseen_inside"}
"""Held-out test-only sites -> their summary-key suffix: ``unseen`` lies outside the training sites' acquisition
range (a negative control for site reweighting), ``unseen-inside`` inside it."""


def is_unseen(site: str) -> bool:
    """True for a held-out test-only site (never a training site, never in the pooled group)."""
    return site in UNSEEN_SITES


def _group_metrics(emb: Embeddings, directions, findings, cfg: EvalConfig, probe) -> dict:
    out = {
        "n": len(emb.sites),
        "zero_shot": zero_shot_auc(emb.image, emb.labels, directions, findings),
        "retrieval": recall_at_k(emb.image, emb.text, emb.labels, cfg.retrieval_k, cfg.retrieval_hit),
    }
    if probe is not None:
        out["linear_probe"] = per_finding_auc(emb.labels, probe_scores(probe, emb.features), findings)
    return out


def evaluate_model(
    model: nn.Module,
    tokenizer,
    test_set: Dataset,
    findings: Sequence[str],
    cfg: EvalConfig,
    *,
    probe_train: Dataset | None = None,
    max_length: int = 64,
    device: str = "cpu",
    seed: int = 0,
) -> dict:
    """Evaluate ``model`` on every site group of ``test_set`` (whose samples carry their site).

    Args:
        test_set: the test split of all sites (and of the unseen site); grouped by each sample's ``site``.
        findings: label order of the dataset's label vectors.
        probe_train: images the linear probe is fitted on (frozen features); skipped when None or disabled.

    Returns:
        ``{"groups": {name: metrics}, "summary": {...}}`` with ``name`` in site names, ``pooled`` and ``unseen``.
    """
    test = compute_embeddings(
        model, test_set, tokenizer, batch_size=cfg.batch_size, max_length=max_length, device=device
    )
    directions = prompt_directions(
        findings, lambda t: embed_texts(model, tokenizer, t, max_length=max_length, device=device)
    )
    probe = None
    if cfg.linear_probe and probe_train is not None:
        train = compute_embeddings(
            model, probe_train, tokenizer, batch_size=cfg.batch_size, max_length=max_length, device=device
        )
        probe = fit_linear_probe(train.features, train.labels, c=cfg.probe_c, seed=seed)
    sites = np.array(test.sites)
    groups: dict[str, dict] = {}
    train_sites = sorted(s for s in set(test.sites) if not is_unseen(s))
    for site in train_sites:
        groups[site] = _group_metrics(test.subset(sites == site), directions, findings, cfg, probe)
    if train_sites:
        pooled = np.isin(sites, train_sites)
        groups["pooled"] = _group_metrics(test.subset(pooled), directions, findings, cfg, probe)
    for site in sorted(set(test.sites) & set(UNSEEN_SITES)):
        groups[site] = _group_metrics(test.subset(sites == site), directions, findings, cfg, probe)
    return {"groups": groups, "summary": summarize(groups, train_sites, cfg.retrieval_k)}


def summarize(groups: Mapping[str, dict], train_sites: Sequence[str], ks: Sequence[int]) -> dict[str, float]:
    """Flat headline numbers: pooled / worst-site / mean-site / unseen macro AUCs and pooled R@K."""
    out: dict[str, float] = {}
    for metric in ("zero_shot", "linear_probe"):
        if not groups or metric not in next(iter(groups.values())):
            continue
        per_site = [groups[s][metric]["macro"] for s in train_sites]
        out[f"{metric}_pooled"] = groups["pooled"][metric]["macro"] if "pooled" in groups else float("nan")
        out[f"{metric}_worst_site"] = float(np.nanmin(per_site)) if per_site else float("nan")
        out[f"{metric}_mean_site"] = nanmean(per_site)
        for site, suffix in UNSEEN_SITES.items():
            if site in groups:
                out[f"{metric}_{suffix}"] = groups[site][metric]["macro"]
    if "pooled" in groups:
        ret = groups["pooled"]["retrieval"]
        for k in ks:
            out[f"i2t_R@{k}"] = ret[f"i2t_R@{k}"]
            out[f"t2i_R@{k}"] = ret[f"t2i_R@{k}"]
            out[f"chance_R@{k}"] = ret[f"chance_R@{k}"]
    if UNSEEN_SITE in groups:
        out["unseen_i2t_R@5"] = groups[UNSEEN_SITE]["retrieval"].get("i2t_R@5", float("nan"))
    return out
