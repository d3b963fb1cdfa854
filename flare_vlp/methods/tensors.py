"""Which tensors a weights task exchanges, and numpy <-> torch for the wire.

Server and sites must agree on the exact keys of an update, or every update fails validation; both compute them
with :func:`exchanged_keys` from the same (config-built) model. Params travel as numpy; sites train in torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from flare_vlp.models import DualEncoder

__all__ = ["DEFAULT_GROUPS", "exchanged_keys", "to_numpy", "to_torch"]

DEFAULT_GROUPS: tuple[str, ...] = ("all",)
"""Trainable parameter groups of a task when the strategy does not say (minus the config's ``model.frozen``)."""


def exchanged_keys(model: DualEncoder, groups: Sequence[str], frozen: Iterable[str] = ()) -> list[str]:
    """State-dict keys (parameters and buffers) of ``groups`` minus those of the always-``frozen`` groups."""
    keys: dict[str, None] = {}
    for group in groups:
        keys.update(dict.fromkeys(model.group_state_dict(group)))
    for group in frozen:
        for key in model.group_state_dict(group):
            keys.pop(key, None)
    if not keys:
        raise ValueError(f"parameter groups {list(groups)} minus frozen {list(frozen)} leave nothing to exchange")
    return list(keys)


def to_numpy(state: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in state.items()}


def to_torch(params: Mapping[str, np.ndarray | torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(v).copy()) for k, v in params.items()}
