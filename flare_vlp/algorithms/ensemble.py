"""CreamFL global-local cross-modal representation ensemble (server side).

Yu et al., ICLR 2023 (https://arxiv.org/abs/2302.08888), Eq. 3-4; methods.md, section 3, step 4. For public sample j
and the K clients that uploaded an image representation ``i_k^j`` this round, scored against the global TEXT
representations ``t_g``:

    s_kj     = <i_k^j, t_g^j> - log sum_j' exp <i_k^j, t_g^j'>      (log-probability of retrieving its own pair)
    alpha_kj = softmax_k(s_kj)
    I_j      = sum_k alpha_kj i_k^j

The text side is symmetric against the global IMAGE representations. The set of clients is whatever arrived: K may
be 1, and a client without a modality is simply absent from that modality's list. ``cross_modal_ensemble`` returns
``None`` for a modality no client uploaded this round, so a round without, say, any text-only or image-text client
still aggregates the other side (the reference code breaks there).

Inputs may be torch tensors or numpy arrays; the result has the type of ``global_other``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["EnsembleTargets", "ensemble_weights", "ensemble_representations", "cross_modal_ensemble"]

Array = torch.Tensor | np.ndarray


class EnsembleTargets(NamedTuple):
    """Distillation targets of one round; a side is ``None`` when no client uploaded that modality."""

    image: Array | None  # N x D, ensemble of client image representations
    text: Array | None  # N x D, ensemble of client text representations
    image_clients: tuple[str, ...]  # clients that contributed to ``image``, in input order
    text_clients: tuple[str, ...]  # clients that contributed to ``text``


def _stack_clients(client_reps: Array | Sequence[Array], global_other: torch.Tensor) -> torch.Tensor:
    if isinstance(client_reps, (torch.Tensor, np.ndarray)):
        reps = torch.as_tensor(client_reps)
    else:
        if len(client_reps) == 0:
            raise ValueError("`client_reps` is empty: at least one client representation (N x D) is needed.")
        for index, rep in enumerate(client_reps):
            if tuple(rep.shape) != tuple(global_other.shape):
                raise ValueError(
                    f"client_reps[{index}] has shape {tuple(rep.shape)}, expected {tuple(global_other.shape)} "
                    "(the same public samples and dimension as `global_other`)."
                )
        reps = torch.stack([torch.as_tensor(rep) for rep in client_reps])
    if reps.shape[0] == 0:
        raise ValueError("`client_reps` is empty: at least one client representation (N x D) is needed.")
    if reps.ndim != 3 or reps.shape[1:] != global_other.shape:
        raise ValueError(
            f"`client_reps` must be K x N x D with N x D = {tuple(global_other.shape)}, got {tuple(reps.shape)}."
        )
    return reps.to(device=global_other.device, dtype=global_other.dtype)


def _as_global(global_other: Array) -> torch.Tensor:
    tensor = torch.as_tensor(global_other)
    if tensor.ndim != 2 or tensor.shape[0] == 0:
        raise ValueError(f"`global_other` must be a non-empty N x D array, got shape {tuple(tensor.shape)}.")
    return tensor


def _like(value: torch.Tensor, template: Array) -> Array:
    return value.cpu().numpy() if isinstance(template, np.ndarray) else value


@torch.no_grad()
def _weights(reps: torch.Tensor, global_other: torch.Tensor, chunk_size: int) -> torch.Tensor:
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` must be >= 1, got {chunk_size}.")
    n = global_other.shape[0]
    scores = torch.empty(reps.shape[:2], dtype=reps.dtype, device=reps.device)
    for start in range(0, n, chunk_size):
        rows = torch.arange(start, min(start + chunk_size, n), device=reps.device)
        sims = reps[:, rows] @ global_other.T  # K x c x N, bounded memory for large public sets
        own = sims[:, torch.arange(len(rows), device=reps.device), rows]
        scores[:, rows] = own - torch.logsumexp(sims, dim=-1)
    return torch.softmax(scores, dim=0)


def ensemble_weights(client_reps: Array | Sequence[Array], global_other: Array, chunk_size: int = 1024) -> Array:
    """Per-sample client weights ``alpha`` (K x N) of the CreamFL ensemble.

    Args:
        client_reps: K x N x D array, or a list of K arrays of shape N x D (one per contributing client).
        global_other: N x D global representations of the OTHER modality of the same public samples.
        chunk_size: public samples scored at once (memory is K x chunk_size x N).

    Returns:
        K x N weights, each column a distribution over the K clients.

    Raises:
        ValueError: on an empty client list or mismatched shapes (the message names the client index).
    """
    global_t = _as_global(global_other)
    return _like(_weights(_stack_clients(client_reps, global_t), global_t, chunk_size), global_other)


def ensemble_representations(
    client_reps: Array | Sequence[Array], global_other: Array, chunk_size: int = 1024
) -> Array:
    """Ensembled representations ``I_j = sum_k alpha_kj i_k^j`` (N x D).

    Args:
        client_reps: K x N x D array or a list of K arrays of shape N x D.
        global_other: N x D global representations of the other modality.
        chunk_size: see :func:`ensemble_weights`.

    Returns:
        N x D array of the type of ``global_other``.

    Raises:
        ValueError: on an empty client list or mismatched shapes.
    """
    global_t = _as_global(global_other)
    reps = _stack_clients(client_reps, global_t)
    alpha = _weights(reps, global_t, chunk_size)
    return _like((alpha[..., None] * reps).sum(dim=0), global_other)


def cross_modal_ensemble(
    image_reps: Mapping[str, Array],
    text_reps: Mapping[str, Array],
    global_image: Array,
    global_text: Array,
    chunk_size: int = 1024,
) -> EnsembleTargets:
    """Both sides of the ensemble for one round, tolerating absent client types.

    Args:
        image_reps: client name -> N x D image representations (image-only and image-text clients that arrived).
        text_reps: client name -> N x D text representations (text-only and image-text clients that arrived).
        global_image: N x D global image representations (scores the text side).
        global_text: N x D global text representations (scores the image side).
        chunk_size: see :func:`ensemble_weights`.

    Returns:
        ``EnsembleTargets``; ``image`` / ``text`` is ``None`` when its mapping is empty.

    Raises:
        ValueError: if a client's representations do not match the global shape (names the client).
    """
    targets = {}
    for side, reps, other in (("image", image_reps, global_text), ("text", text_reps, global_image)):
        names = list(reps)
        for name in names:
            if tuple(reps[name].shape) != tuple(other.shape):
                raise ValueError(
                    f"client {name!r}: {side} representations have shape {tuple(reps[name].shape)}, expected "
                    f"{tuple(other.shape)} (the broadcast public subset)."
                )
        targets[side] = ensemble_representations([reps[n] for n in names], other, chunk_size) if names else None
    return EnsembleTargets(targets["image"], targets["text"], tuple(image_reps), tuple(text_reps))
