"""Image->text and text->image retrieval recall@K, with the hit rule stated and the chance level computed.

Hit rules: ``exact`` = the paired item is in the top K; ``labels`` = an item whose label vector equals the query's is
in the top K (duplicate reports make the exact rule punish correct answers). Under ``labels`` chance is high when
label vectors repeat (most images are "normal"), so we also report the exact chance level of a random ranking:
for a query with m matching candidates among N, P(hit in K) = 1 - C(N - m, K) / C(N, K).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["recall_at_k", "chance_recall_at_k"]


def _match_matrix(labels: np.ndarray | None, n: int, hit: str) -> np.ndarray:
    if hit == "exact" or labels is None:
        return np.eye(n, dtype=bool)
    if hit != "labels":
        raise ValueError(f"unknown retrieval hit rule '{hit}'; expected 'labels' or 'exact'")
    labels = np.asarray(labels)
    return (labels[:, None, :] == labels[None, :, :]).all(-1)


def recall_at_k(
    image_embeds: torch.Tensor | np.ndarray,
    text_embeds: torch.Tensor | np.ndarray,
    labels: np.ndarray | None = None,
    ks: Sequence[int] = (1, 5, 10),
    hit: str = "labels",
) -> dict[str, float]:
    """R@K for image->text (``i2t_R@K``) and text->image (``t2i_R@K``), plus ``chance_R@K`` of a random ranking.

    Args:
        image_embeds, text_embeds: N x D l2-normalised embeddings of N pairs (row i of each is a pair).
        labels: N x F label matrix (needed for ``hit="labels"``).
        ks: the K values.
        hit: ``labels`` or ``exact`` (see the module docstring).
    """
    img = torch.as_tensor(image_embeds, dtype=torch.float32)
    txt = torch.as_tensor(text_embeds, dtype=torch.float32)
    n = img.shape[0]
    match = torch.from_numpy(_match_matrix(labels, n, hit))
    sim = img @ txt.T
    out: dict[str, float] = {}
    for k in ks:
        kk = min(k, n)
        top_t = sim.topk(kk, dim=1).indices  # per image, the top texts
        top_i = sim.T.topk(kk, dim=1).indices  # per text, the top images
        out[f"i2t_R@{k}"] = float(match.gather(1, top_t).any(1).float().mean())
        out[f"t2i_R@{k}"] = float(match.T.gather(1, top_i).any(1).float().mean())
        out[f"chance_R@{k}"] = chance_recall_at_k(match.numpy(), k)
    return out


def chance_recall_at_k(match: np.ndarray, k: int) -> float:
    """Expected R@K of a uniformly random ranking, given the N x N boolean matrix of hits."""
    n = match.shape[1]
    k = min(k, n)
    m = match.sum(1)
    # P(no hit in K draws without replacement) = prod_{i<K} (N - m - i) / (N - i)
    i = np.arange(k)[None, :]
    miss = np.clip((n - m[:, None] - i) / (n - i), 0.0, 1.0).prod(1)
    return float(np.mean(1.0 - miss))
