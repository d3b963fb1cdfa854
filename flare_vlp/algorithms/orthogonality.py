"""FedOPAL orthogonality regularisers between a global and a personal LoRA adapter.

Each adapted layer has ``W = W0 + (alpha / r) * (B_g A_g + B_p A_p)`` (methods.md, section 2), with peft's factor
shapes ``A: r x d_in`` and ``B: d_out x r``; ``dW = B A`` is ``d_out x d_in``. The regulariser ``R_orth`` keeps the
two updates apart so the personal adapter learns what the shared one does not:

(i) ``weights`` (default): ``sum_l <dW_g, dW_p>_F^2 / (||dW_g||_F^2 ||dW_p||_F^2 + eps)``, a squared cosine in
    [0, 1] per layer (0 when orthogonal, 1 when parallel). Computed in r x r form, never building ``d_out x d_in``:
    ``<B_g A_g, B_p A_p>_F = sum((B_g^T B_p) * (A_g A_p^T))`` and ``||B A||_F^2 = sum((B^T B) * (A A^T))``.
(ii) ``subspace`` (O-LoRA, Wang et al., https://arxiv.org/abs/2310.14152): ``sum_l ||A_g A_p^T||_F^2``.
(iii) ``representations``: ``||H_g^T H_p||_F^2`` on the batch outputs of the two branches; by default normalised by
    ``||H_g||_F^2 ||H_p||_F^2`` so it lies in [0, 1] whatever the batch size and feature scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch

__all__ = [
    "ORTHOGONALITY_KINDS",
    "LoraFactors",
    "orthogonality_weights",
    "orthogonality_subspace",
    "orthogonality_representations",
]

ORTHOGONALITY_KINDS: tuple[str, ...] = ("weights", "subspace", "representations")
"""The ``R_orth`` choices of FedOPAL; ``"weights"`` is the project default."""


class LoraFactors(NamedTuple):
    """The global and personal LoRA factors of one adapted layer (peft shapes)."""

    a_global: torch.Tensor  # r_g x d_in
    b_global: torch.Tensor  # d_out x r_g
    a_personal: torch.Tensor  # r_p x d_in
    b_personal: torch.Tensor  # d_out x r_p


def _as_factors(layers: Sequence[LoraFactors | tuple], where: str) -> list[LoraFactors]:
    if len(layers) == 0:
        raise ValueError(f"{where}: `layers` is empty; pass one LoraFactors per adapted layer.")
    out = []
    for index, layer in enumerate(layers):
        if len(layer) != 4:
            raise ValueError(f"{where}: layer {index} must be (a_global, b_global, a_personal, b_personal).")
        f = LoraFactors(*layer)
        shapes = [tuple(t.shape) for t in f]
        (rg, d_in), (d_out, rg2), (rp, d_in2), (d_out2, rp2) = (s if len(s) == 2 else (-1, -2) for s in shapes)
        if rg != rg2 or rp != rp2 or d_in != d_in2 or d_out != d_out2:
            raise ValueError(
                f"{where}: layer {index} has inconsistent 2-D shapes A_g {shapes[0]}, B_g {shapes[1]}, "
                f"A_p {shapes[2]}, B_p {shapes[3]} (expected r_g x d_in, d_out x r_g, r_p x d_in, d_out x r_p)."
            )
        out.append(f)
    return out


def _reduce(values: list[torch.Tensor], reduction: str, where: str) -> torch.Tensor:
    if reduction not in ("sum", "mean"):
        raise ValueError(f"{where}: `reduction` must be 'sum' or 'mean', got {reduction!r}.")
    total = torch.stack(values).sum()
    return total / len(values) if reduction == "mean" else total


def orthogonality_weights(
    layers: Sequence[LoraFactors | tuple],
    eps: float = 1e-12,
    reduction: Literal["sum", "mean"] = "sum",
) -> torch.Tensor:
    """Squared-cosine orthogonality of the weight updates, (i) above.

    Args:
        layers: one ``LoraFactors(a_global, b_global, a_personal, b_personal)`` (or a 4-tuple) per adapted layer.
        eps: added to the denominator, so a zero update (LoRA's ``B = 0`` init) gives 0 with finite gradients.
        reduction: ``"sum"`` over layers (default, as in methods.md) or ``"mean"``.

    Returns:
        Scalar tensor; per layer 0 for orthogonal updates and (up to ``eps``) 1 for parallel ones.

    Raises:
        ValueError: on an empty ``layers`` or inconsistent factor shapes.
    """
    values = []
    for f in _as_factors(layers, "orthogonality_weights"):
        inner = ((f.b_global.T @ f.b_personal) * (f.a_global @ f.a_personal.T)).sum()
        norm_g = ((f.b_global.T @ f.b_global) * (f.a_global @ f.a_global.T)).sum()
        norm_p = ((f.b_personal.T @ f.b_personal) * (f.a_personal @ f.a_personal.T)).sum()
        values.append(inner.pow(2) / (norm_g * norm_p + eps))
    return _reduce(values, reduction, "orthogonality_weights")


def orthogonality_subspace(
    layers: Sequence[LoraFactors | tuple], reduction: Literal["sum", "mean"] = "sum"
) -> torch.Tensor:
    """O-LoRA subspace orthogonality ``sum_l ||A_g A_p^T||_F^2``, (ii) above (the B factors are not used).

    Args:
        layers: one ``LoraFactors`` (or 4-tuple) per adapted layer.
        reduction: ``"sum"`` over layers (default) or ``"mean"``.

    Returns:
        Scalar tensor, 0 when the row spaces of ``A_g`` and ``A_p`` are orthogonal.

    Raises:
        ValueError: on an empty ``layers`` or inconsistent factor shapes.
    """
    values = [(f.a_global @ f.a_personal.T).pow(2).sum() for f in _as_factors(layers, "orthogonality_subspace")]
    return _reduce(values, reduction, "orthogonality_subspace")


def orthogonality_representations(
    h_global: torch.Tensor,
    h_personal: torch.Tensor,
    normalize: bool = True,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Representation orthogonality ``||H_g^T H_p||_F^2``, (iii) above.

    Args:
        h_global: N x D_g outputs of the global branch on a batch (leading dims, e.g. B x T x D, are flattened).
        h_personal: N x D_p outputs of the personal branch on the same inputs.
        normalize: divide by ``||H_g||_F^2 ||H_p||_F^2 + eps`` (default), which bounds the value to [0, 1] and makes
            it independent of batch size and feature scale; ``False`` returns the raw squared norm.
        eps: stabiliser of the normalisation.

    Returns:
        Scalar tensor.

    Raises:
        ValueError: if the two outputs have a different number of rows.
    """
    h_g = h_global.reshape(-1, h_global.shape[-1])
    h_p = h_personal.reshape(-1, h_personal.shape[-1])
    if h_g.shape[0] != h_p.shape[0]:
        raise ValueError(
            "orthogonality_representations: `h_global` and `h_personal` must cover the same rows, got "
            f"{tuple(h_global.shape)} and {tuple(h_personal.shape)}."
        )
    value = (h_g.T @ h_p).pow(2).sum()
    if not normalize:
        return value
    return value / (h_g.pow(2).sum() * h_p.pow(2).sum() + eps)
