"""The method math of flare_vlp as pure functions: losses, regularisers, DRO weights, ensembles, aggregation.

Nothing here imports nvflare or the data layer; the FLARE components in ``flare_vlp.fl`` and the training loop call
these functions. See ``docs/methods.md`` for the algorithms and the choices made where the papers leave one open.
"""

from flare_vlp.algorithms.aggregate import UpdateValidationError, split_valid_updates, validate_update, weighted_average
from flare_vlp.algorithms.contrastive import (
    POSITIVES,
    contrastive_accuracy,
    contrastive_logits,
    contrastive_loss,
    positive_mask,
)
from flare_vlp.algorithms.creamfl import CREAMFL_TAU, distillation_loss, inter_modal_contrast, intra_modal_contrast
from flare_vlp.algorithms.dro import (
    DIVERGENCES,
    chi_square_divergence,
    dro_update,
    exponentiated_gradient_step,
    kl_divergence,
    project_chi_square_ball,
    project_kl_ball,
    project_simplex,
)
from flare_vlp.algorithms.ensemble import (
    EnsembleTargets,
    cross_modal_ensemble,
    ensemble_representations,
    ensemble_weights,
)
from flare_vlp.algorithms.orthogonality import (
    ORTHOGONALITY_KINDS,
    LoraFactors,
    orthogonality_representations,
    orthogonality_subspace,
    orthogonality_weights,
)
from flare_vlp.algorithms.regularizers import anchor_loss, proximal_term

__all__ = [
    # contrastive
    "POSITIVES",
    "positive_mask",
    "contrastive_logits",
    "contrastive_loss",
    "contrastive_accuracy",
    # regularizers
    "anchor_loss",
    "proximal_term",
    # orthogonality (FedOPAL)
    "ORTHOGONALITY_KINDS",
    "LoraFactors",
    "orthogonality_weights",
    "orthogonality_subspace",
    "orthogonality_representations",
    # CreamFL
    "CREAMFL_TAU",
    "inter_modal_contrast",
    "intra_modal_contrast",
    "distillation_loss",
    "EnsembleTargets",
    "ensemble_weights",
    "ensemble_representations",
    "cross_modal_ensemble",
    # DRO (FedDRA)
    "DIVERGENCES",
    "chi_square_divergence",
    "kl_divergence",
    "project_simplex",
    "project_chi_square_ball",
    "project_kl_ball",
    "exponentiated_gradient_step",
    "dro_update",
    # aggregation
    "UpdateValidationError",
    "validate_update",
    "split_valid_updates",
    "weighted_average",
]
