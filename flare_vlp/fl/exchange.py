"""What travels between the server and the sites: task meta keys, which tensors a round exchanges, numpy <-> torch.

Server and clients must agree on the exact keys of an update, or every update fails validation; both compute them
with :func:`exchanged_keys` from the same (config-built) model. Params travel as numpy (FOBS serialises numpy
natively and the server never needs torch tensors); ``meta`` holds only plain Python values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from flare_vlp.models import DualEncoder

__all__ = ["TaskMeta", "TaskName", "DEFAULT_GROUPS", "exchanged_keys", "to_numpy", "to_torch"]

DEFAULT_GROUPS: tuple[str, ...] = ("all",)
"""Trainable parameter groups of a round when the controller does not say (minus the config's ``model.frozen``)."""


class TaskMeta:
    """``FLModel.meta`` keys of the flare_vlp tasks (plain strings: meta must stay FOBS-serialisable).

    Attributes:
        TRAINABLE_GROUPS: server -> site, list of parameter groups trained (and sent back) this round.
        PROX_MU: server -> site, FedProx mu for this round (overrides ``train.prox_mu``).
        LOCAL_STEPS: server -> site, optimizer steps of this round (overrides the executor's ``local_steps``).
        ANCHOR_WEIGHT: server -> site, FedDRA/FedAID ``lambda_anchor`` (> 0 adds the anchor loss to the local loss).
        ROUND: persisted global model, the last completed round (for resuming).
        CONTROLLER_STATE: persisted global model, the controller's resumable state (e.g. the DRO weights).
        N_SAMPLES: site -> server, training rows of the site (the FedAvg weight n_k).
        SITE: site -> server, the data site the FLARE client trained on.
    """

    TRAINABLE_GROUPS = "trainable_groups"
    PROX_MU = "prox_mu"
    LOCAL_STEPS = "local_steps"
    ANCHOR_WEIGHT = "anchor_weight"
    ROUND = "round"
    CONTROLLER_STATE = "controller_state"
    N_SAMPLES = "n_samples"
    SITE = "data_site"


class TaskName:
    """Training task names. FedDRA's stage 1 is its own task, so FLARE's logs and traffic show each phase apart.

    Attributes:
        TRAIN: a full training task (FLARE's ``train``; stage 2 of FedDRA).
        TRAIN_DEEP: FedDRA stage 1, the deep groups only.
    """

    TRAIN = "train"
    TRAIN_DEEP = "train_deep"


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
