"""Evaluation: zero-shot classification, retrieval R@K and linear probe, per site, pooled and on an unseen site."""

from flare_vlp.evaluation.embeddings import Embeddings, compute_embeddings, embed_texts
from flare_vlp.evaluation.evaluate import UNSEEN_SITE, UNSEEN_SITES, evaluate_model, is_unseen, summarize
from flare_vlp.evaluation.linear_probe import fit_linear_probe, probe_scores
from flare_vlp.evaluation.metrics import nanmean, per_finding_auc, safe_auc
from flare_vlp.evaluation.retrieval import chance_recall_at_k, recall_at_k
from flare_vlp.evaluation.zero_shot import prompt_directions, zero_shot_auc, zero_shot_scores

__all__ = [
    "Embeddings",
    "compute_embeddings",
    "embed_texts",
    "evaluate_model",
    "summarize",
    "UNSEEN_SITE",
    "UNSEEN_SITES",
    "is_unseen",
    "fit_linear_probe",
    "probe_scores",
    "safe_auc",
    "per_finding_auc",
    "nanmean",
    "recall_at_k",
    "chance_recall_at_k",
    "prompt_directions",
    "zero_shot_scores",
    "zero_shot_auc",
]
