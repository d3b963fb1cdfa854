"""Local regularisers that tie a site's model to the global one: the FedDRA anchor loss and the FedProx term.

* Anchor loss (FedDRA / FedAID, methods.md section 1, step 2): the frozen global model embeds the SAME batch, and the
  local embeddings are pulled towards those anchors, ``MSE(z_v, zbar_v) + MSE(z_t, zbar_t)``.
* FedProx (Li et al., "Federated Optimization in Heterogeneous Networks", https://arxiv.org/abs/1812.06127, Eq. 2):
  ``mu / 2 * ||w - w_global||^2`` summed over the trainable parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["anchor_loss", "proximal_term"]


def anchor_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    anchor_image: torch.Tensor,
    anchor_text: torch.Tensor,
) -> torch.Tensor:
    """FedDRA anchor loss ``MSE(z_v, zbar_v) + MSE(z_t, zbar_t)``; the anchors are detached.

    ``MSE`` is the mean over all B x D elements (``torch.nn.functional.mse_loss`` with ``reduction="mean"``).

    Args:
        image_embeds: B x D normalised image embeddings of the local model ``z_v``.
        text_embeds: B x D normalised text embeddings of the local model ``z_t``.
        anchor_image: B x D embeddings of the same batch by the frozen global model ``zbar_v``.
        anchor_text: B x D embeddings of the same batch by the frozen global model ``zbar_t``.

    Returns:
        Scalar loss; zero when the local and anchor embeddings are equal.

    Raises:
        ValueError: if a local embedding and its anchor differ in shape.
    """
    for name, local, anchor in (("image", image_embeds, anchor_image), ("text", text_embeds, anchor_text)):
        if local.shape != anchor.shape:
            raise ValueError(
                f"anchor_loss: {name} embeddings {tuple(local.shape)} and anchor_{name} {tuple(anchor.shape)} differ."
            )
    return F.mse_loss(image_embeds, anchor_image.detach()) + F.mse_loss(text_embeds, anchor_text.detach())


def _named_trainable(params: nn.Module | Iterable[tuple[str, torch.Tensor]]) -> Iterable[tuple[str, torch.Tensor]]:
    named = params.named_parameters() if isinstance(params, nn.Module) else params
    return ((name, p) for name, p in named if p.requires_grad)


def proximal_term(
    model_params: nn.Module | Iterable[tuple[str, torch.Tensor]],
    global_params: Mapping[str, torch.Tensor | np.ndarray],
    mu: float,
) -> torch.Tensor:
    """FedProx proximal term ``mu / 2 * sum_name ||w_name - w_global_name||^2``.

    Only trainable parameters (``requires_grad=True``) whose name is in ``global_params`` contribute, so frozen
    encoders and site-private parts (a personal LoRA adapter, a local head) are left out naturally. The global
    tensors are detached and moved to each parameter's device and dtype.

    Args:
        model_params: a module, or an iterable of ``(name, parameter)`` pairs (e.g. ``model.named_parameters()``).
        global_params: name -> global weights (tensor or numpy array), e.g. the state dict received this round.
        mu: proximal strength ``mu >= 0``; ``0`` returns a zero tensor without touching the parameters.

    Returns:
        Scalar tensor, differentiable w.r.t. the local parameters.

    Raises:
        ValueError: if ``mu`` is negative or not finite, a shared name has different shapes, or ``mu > 0`` and no
            trainable parameter name is found in a non-empty ``global_params`` (usually a key-prefix mismatch).
    """
    if not np.isfinite(mu) or mu < 0:
        raise ValueError(f"`mu` must be a finite value >= 0, got {mu}.")
    named = list(_named_trainable(model_params))
    device = named[0][1].device if named else None
    total = torch.zeros((), device=device)
    if mu == 0:
        return total
    matched = 0
    for name, param in named:
        if name not in global_params:
            continue
        reference = torch.as_tensor(global_params[name]).detach().to(device=param.device, dtype=param.dtype)
        if reference.shape != param.shape:
            raise ValueError(
                f"proximal_term: parameter {name!r} has shape {tuple(param.shape)} but the global one has "
                f"{tuple(reference.shape)}."
            )
        total = total + (param - reference).pow(2).sum()
        matched += 1
    if matched == 0 and len(global_params) > 0:
        local_names = [name for name, _ in named][:3]
        raise ValueError(
            "proximal_term: no trainable parameter is in `global_params` "
            f"(local names {local_names}..., global keys {list(global_params)[:3]}...)."
        )
    return 0.5 * mu * total
