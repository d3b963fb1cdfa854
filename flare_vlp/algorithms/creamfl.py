"""CreamFL client regularisers and server distillation loss.

Yu et al., "Multimodal Federated Learning via Contrastive Representation Ensemble", ICLR 2023
(https://arxiv.org/abs/2302.08888); methods.md, section 3. Clients and server only exchange representations of a
public image-text set. On a batch of N public samples ``j``:

* inter-modal: ``CE(<i_loc^j, t_g^.> / tau_r, target j)``: the local image representation of sample j must pick
  the global TEXT representation of the same sample among the WHOLE bank of global text representations the server
  sent (the round's public subset), with the public index j as target, as the reference code does
  (``MMClientTrainer.py``), not only among the batch (the text side mirrors it);
* intra-modal (MOON style): ``CE([<i_loc^j, i_g^j>, <i_loc^j, i_old^j>] / tau_r, target 0)``: closer to the global
  representation of the same modality than to the client's own round-start representation;
* distillation (server): ``MSE(f(x_j), I_j)`` towards the client ensemble ``I_j`` (see ``ensemble.py``).

Inner products are taken on the representations as given; the project passes l2-normalised embeddings, so they are
cosines. Global, old and target representations are detached.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["CREAMFL_TAU", "inter_modal_contrast", "intra_modal_contrast", "distillation_loss"]

CREAMFL_TAU: float = 0.5
"""Temperature ``tau_r`` of the CreamFL regularisers."""


def _check_rows(where: str, **tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    first = next(iter(shapes.values()))
    if any(len(s) != 2 for s in shapes.values()) or any(s != first for s in shapes.values()):
        raise ValueError(f"{where}: expected N x D tensors of one shape, got {shapes}.")
    if first[0] == 0:
        raise ValueError(f"{where}: empty batch (N = 0).")


def _check_tau(tau_r: float) -> None:
    if not tau_r > 0:
        raise ValueError(f"`tau_r` must be > 0, got {tau_r}.")


def inter_modal_contrast(
    local_embeds: torch.Tensor,
    global_bank: torch.Tensor,
    targets: torch.Tensor,
    tau_r: float = CREAMFL_TAU,
) -> torch.Tensor:
    """Inter-modal regulariser ``CE(<i_loc^j, t_g^j'> / tau_r over every j' of the bank, target j)``.

    The reference scores a batch of local representations against the whole bank of global representations of the
    other modality, the target being each sample's row in the bank (its public index), not in-batch.

    Args:
        local_embeds: B x D local representations of B public samples in one modality (``i_loc``).
        global_bank: N x D global representations of the round's N public samples in the OTHER modality (``t_g``).
        targets: B row indices into ``global_bank`` (long): the public index of each local sample.
        tau_r: temperature, default 0.5.

    Returns:
        Scalar loss, mean over the B samples.

    Raises:
        ValueError: on mismatched dimensions, an empty batch or bank, targets outside the bank, or ``tau_r <= 0``.
    """
    if local_embeds.ndim != 2 or global_bank.ndim != 2 or local_embeds.shape[1] != global_bank.shape[1]:
        raise ValueError(
            f"inter_modal_contrast: expected B x D local and N x D bank, got {tuple(local_embeds.shape)} and "
            f"{tuple(global_bank.shape)}."
        )
    if local_embeds.shape[0] == 0 or global_bank.shape[0] == 0:
        raise ValueError("inter_modal_contrast: empty batch or bank.")
    targets = torch.as_tensor(targets, dtype=torch.long, device=local_embeds.device)
    if targets.shape != (local_embeds.shape[0],):
        raise ValueError(f"inter_modal_contrast: {tuple(targets.shape)} targets for {local_embeds.shape[0]} samples.")
    if int(targets.min()) < 0 or int(targets.max()) >= global_bank.shape[0]:
        raise ValueError(f"inter_modal_contrast: targets outside the bank of {global_bank.shape[0]} rows.")
    _check_tau(tau_r)
    logits = local_embeds @ global_bank.detach().T / tau_r
    return F.cross_entropy(logits, targets)


def intra_modal_contrast(
    local_embeds: torch.Tensor,
    global_same_modal: torch.Tensor,
    old_local: torch.Tensor,
    tau_r: float = CREAMFL_TAU,
) -> torch.Tensor:
    """Intra-modal (MOON-style) regulariser ``CE([<i_loc^j, i_g^j>, <i_loc^j, i_old^j>] / tau_r, target 0)``.

    Args:
        local_embeds: N x D current local representations ``i_loc``.
        global_same_modal: N x D global representations of the same samples and modality ``i_g`` (positive).
        old_local: N x D representations by the client's model at round start ``i_old`` (negative).
        tau_r: temperature, default 0.5.

    Returns:
        Scalar loss, mean over the N samples.

    Raises:
        ValueError: on mismatched shapes, an empty batch or ``tau_r <= 0``.
    """
    _check_rows(
        "intra_modal_contrast", local_embeds=local_embeds, global_same_modal=global_same_modal, old_local=old_local
    )
    _check_tau(tau_r)
    positive = (local_embeds * global_same_modal.detach()).sum(dim=-1)
    negative = (local_embeds * old_local.detach()).sum(dim=-1)
    logits = torch.stack([positive, negative], dim=1) / tau_r
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device))


def distillation_loss(student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Representation distillation ``MSE(student, target)`` (mean over all N x D elements; target detached).

    Args:
        student: N x D server representations of the public samples ``f(x_j)``.
        target: N x D ensemble targets ``I_j`` (or ``T_j``).

    Returns:
        Scalar loss; the caller multiplies it by ``kd_weight`` (0.3 in the reference).

    Raises:
        ValueError: if the shapes differ.
    """
    if student.shape != target.shape:
        raise ValueError(
            f"distillation_loss: student {tuple(student.shape)} and target {tuple(target.shape)} shapes differ."
        )
    return F.mse_loss(student, target.detach())
