"""Test-set bootstrap of the zero-shot headline metrics: how much of a difference the test sets alone can make.

A site's test set is a sample; a second draw of the same size would give another AUC. Resampling every group's test
images with replacement (each site on its own, so every replicate keeps the sites' sizes) gives the spread of
``zero_shot_pooled`` / ``_worst_site`` / ``_unseen`` that test-set sampling alone causes. Applying the SAME resampled
indices to two models of the same test set gives the spread of their difference (a paired bootstrap), which is what
decides whether one method beats another on these test sets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import rankdata
from torch import nn
from torch.utils.data import Dataset

from flare_vlp.evaluation.embeddings import compute_embeddings, embed_texts
from flare_vlp.evaluation.evaluate import UNSEEN_SITES, is_unseen
from flare_vlp.evaluation.metrics import nanmean
from flare_vlp.evaluation.zero_shot import prompt_directions, zero_shot_scores

__all__ = ["ZERO_SHOT_HEADLINE", "score_test_set", "zero_shot_headline", "bootstrap_zero_shot", "interval"]

ZERO_SHOT_HEADLINE: tuple[str, ...] = ("zero_shot_pooled", "zero_shot_worst_site", "zero_shot_unseen")


def score_test_set(
    model: nn.Module,
    tokenizer,
    test_set: Dataset,
    findings: Sequence[str],
    *,
    batch_size: int = 256,
    max_length: int = 64,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores N x F, labels N x F, sites N) of ``model`` on ``test_set``: the inputs of the bootstrap, computed the
    way :func:`flare_vlp.evaluation.evaluate.evaluate_model` computes them."""
    emb = compute_embeddings(model, test_set, tokenizer, batch_size=batch_size, max_length=max_length, device=device)
    directions = prompt_directions(
        findings, lambda t: embed_texts(model, tokenizer, t, max_length=max_length, device=device)
    )
    return zero_shot_scores(emb.image, directions), emb.labels, np.asarray(emb.sites)


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties counted half: equal to sklearn's ``roc_auc_score`` and
    NaN for one class like :func:`~flare_vlp.evaluation.metrics.safe_auc`, without its per-call checks (the bootstrap
    computes thousands)."""
    pos = y == 1
    n_pos = int(pos.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _macro_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return nanmean([_auc(labels[:, j], scores[:, j]) for j in range(labels.shape[1])])


def zero_shot_headline(scores: np.ndarray, labels: np.ndarray, sites: np.ndarray, findings: Sequence[str]) -> dict:
    """The zero-shot headline numbers of :func:`flare_vlp.evaluation.evaluate.summarize` from per-image scores.

    Args:
        scores: N x F zero-shot scores (cosine to the positive minus the negative prompts).
        labels: N x F 0/1 labels; sites: N site names (``unseen`` for the held-out site).
    """
    if labels.shape[1] != len(findings):
        raise ValueError(f"labels have {labels.shape[1]} columns for {len(findings)} findings")
    train_sites = sorted(s for s in set(sites.tolist()) if not is_unseen(s))
    per_site = [_macro_auc(labels[sites == s], scores[sites == s]) for s in train_sites]
    out = {"zero_shot_worst_site": float(np.nanmin(per_site)) if per_site else float("nan")}
    pooled = np.isin(sites, train_sites)
    out["zero_shot_pooled"] = _macro_auc(labels[pooled], scores[pooled])
    out["zero_shot_mean_site"] = nanmean(per_site)
    for site, suffix in UNSEEN_SITES.items():
        if (sites == site).any():
            out[f"zero_shot_{suffix}"] = _macro_auc(labels[sites == site], scores[sites == site])
    return out


def _resample(by_site: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Indices of one replicate: each site's images (``by_site``: one index array per site) drawn with replacement,
    as many as the site has."""
    return np.concatenate([rng.choice(idx, size=idx.size, replace=True) for idx in by_site])


def bootstrap_zero_shot(
    scores: Mapping[str, np.ndarray],
    labels: np.ndarray,
    sites: Sequence[str],
    findings: Sequence[str],
    *,
    n_boot: int = 500,
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """Replicates of the zero-shot headline metrics of several models scored on the same test images.

    Args:
        scores: model name -> N x F zero-shot scores, rows in the same order for every model.
        labels: N x F labels; sites: N site names.
        n_boot: replicates; seed: the resampling seed (one draw of indices per replicate, shared by all models).

    Returns:
        model name -> metric -> array of ``n_boot`` replicate values (paired across models: replicate i of every
        model used the same images, so ``a[m] - b[m]`` are replicates of the difference).
    """
    sites = np.asarray(sites)
    labels = np.asarray(labels)
    n = len(sites)
    for name, s in scores.items():
        if s.shape != labels.shape:
            raise ValueError(f"model {name!r}: scores of shape {s.shape} for labels of shape {labels.shape}")
    if n == 0:
        raise ValueError("no test images to bootstrap")
    rng = np.random.default_rng(seed)
    by_site = [np.flatnonzero(sites == site) for site in sorted(set(sites.tolist()))]
    out: dict[str, dict[str, list[float]]] = {name: {} for name in scores}
    for _ in range(n_boot):
        idx = _resample(by_site, rng)
        for name, s in scores.items():
            for metric, value in zero_shot_headline(s[idx], labels[idx], sites[idx], findings).items():
                out[name].setdefault(metric, []).append(value)
    return {name: {m: np.asarray(v) for m, v in metrics.items()} for name, metrics in out.items()}


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(std, low, high): the replicates' spread and their central ``level`` percentile interval."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(values.std(ddof=1)) if values.size > 1 else float("nan"), float(low), float(high)
