"""Weighted averaging of site updates, with every update validated first.

``theta = sum_k w_k theta_k / sum_k w_k`` (FedAvg, McMahan et al., https://arxiv.org/abs/1602.05629, Alg. 1; FedDRA
uses ``w = lambda``, methods.md section 1, step 6). One bad update (a diverged site sending NaN, a site running a
different adapter config, a truncated upload) would silently poison the global model, so every update is checked
first: no empty update, the same keys as the reference, the same shapes, the same dtype kind (float / int / bool),
finite values, and finite non-negative weights with a positive total. A failure raises ``UpdateValidationError``
naming the site and the key; :func:`split_valid_updates` lets a controller exclude bad sites and average the rest.

Conventions:
    * Float entries are accumulated in float64 and cast back to the dtype of the template (the ``reference`` when
      given, otherwise the first update). float16 / bfloat16 / float32 / float64 updates of one key mix freely.
    * Integer and bool entries (e.g. BatchNorm ``num_batches_tracked``) are not averaged: they are copied from the
      first update (in iteration order) that has a positive weight.
    * Torch tensors and numpy arrays both work; each output entry has the type, dtype and (torch) device of its
      template, so numpy in gives numpy out (FLARE's server side) and torch in gives torch out.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch

__all__ = ["UpdateValidationError", "validate_update", "split_valid_updates", "weighted_average"]

Array = torch.Tensor | np.ndarray
Update = Mapping[str, Array]


class UpdateValidationError(ValueError):
    """An update (or its weight) that cannot be aggregated; ``site`` and ``key`` say where (``None`` if not one)."""

    def __init__(self, message: str, site: Hashable | None = None, key: str | None = None):
        super().__init__(message)
        self.site = site
        self.key = key


def _kind(value: Array) -> str:
    """'f' float, 'i' integer, 'b' bool, 'c' complex, '?' anything else."""
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool:
            return "b"
        return "c" if value.dtype.is_complex else "f" if value.dtype.is_floating_point else "i"
    kind = value.dtype.kind
    return {"f": "f", "i": "i", "u": "i", "b": "b", "c": "c"}.get(kind, "?")


def _nonfinite(value: Array) -> int:
    if isinstance(value, torch.Tensor):
        return int((~torch.isfinite(value)).sum().item())
    return int((~np.isfinite(value)).sum())


def _numel(value: Array) -> int:
    return value.numel() if isinstance(value, torch.Tensor) else int(value.size)


def _check_entry(site: Hashable, key: str, value: object) -> None:
    where = f"site {site!r}, key {key!r}"
    if not isinstance(value, (torch.Tensor, np.ndarray)):
        raise UpdateValidationError(
            f"{where}: expected a torch.Tensor or numpy.ndarray, got {type(value).__name__}.", site, key
        )
    if _kind(value) not in ("f", "i", "b"):
        raise UpdateValidationError(f"{where}: unsupported dtype {value.dtype} (float, int or bool only).", site, key)
    if _kind(value) == "f" and (bad := _nonfinite(value)):
        raise UpdateValidationError(f"{where}: {bad} non-finite value(s) (NaN/Inf) of {_numel(value)}.", site, key)


def _key_list(keys: list[str]) -> str:
    return f"{keys[:3]}{' ...' if len(keys) > 3 else ''}"


def validate_update(site: Hashable, update: Update, reference: Update | None = None) -> None:
    """Check one site's update; raise on the first problem.

    Args:
        site: the site name, used in the error.
        update: key -> tensor or array.
        reference: key -> template (the global model, or the first update); ``None`` checks only the update itself
            (non-empty, tensor/array values, supported dtypes, finite floats).

    Raises:
        UpdateValidationError: empty update, missing or extra keys, a shape or dtype-kind mismatch, NaN/Inf, or a
            value that is not a tensor/array. ``.site`` and ``.key`` name the culprit.
    """
    if not isinstance(update, Mapping):
        raise UpdateValidationError(f"site {site!r}: update must be a mapping, got {type(update).__name__}.", site)
    if len(update) == 0:
        raise UpdateValidationError(f"site {site!r}: empty update (no keys).", site)
    if reference is not None:
        missing = [key for key in reference if key not in update]
        extra = [key for key in update if key not in reference]
        for label, keys in (("is missing", missing), ("has unexpected", extra)):
            if keys:
                raise UpdateValidationError(
                    f"site {site!r}: update {label} {len(keys)} key(s): {_key_list(keys)}", site, keys[0]
                )
    for key, value in update.items():
        _check_entry(site, key, value)
        if reference is None:
            continue
        template = reference[key]
        if tuple(value.shape) != tuple(template.shape):
            raise UpdateValidationError(
                f"site {site!r}, key {key!r}: shape {tuple(value.shape)} != expected {tuple(template.shape)}.",
                site,
                key,
            )
        if _kind(value) != _kind(template):
            raise UpdateValidationError(
                f"site {site!r}, key {key!r}: dtype {value.dtype} does not match expected {template.dtype}.", site, key
            )


def split_valid_updates(
    updates: Mapping[Hashable, Update], reference: Update | None = None
) -> tuple[dict[Hashable, Update], dict[Hashable, UpdateValidationError]]:
    """Partition updates into valid ones and rejected ones (with the reason), for a controller that excludes sites.

    Args:
        updates: site -> update.
        reference: template to validate against; ``None`` uses the first update that passes its own checks.

    Returns:
        ``(valid, rejected)``: site -> update, and site -> the ``UpdateValidationError`` to log.
    """
    valid: dict[Hashable, Update] = {}
    rejected: dict[Hashable, UpdateValidationError] = {}
    for site, update in updates.items():
        try:
            validate_update(site, update, reference)
            if reference is None:
                reference = update
        except UpdateValidationError as error:
            rejected[site] = error
            continue
        valid[site] = update
    return valid, rejected


def _normalised_weights(updates: Mapping[Hashable, Update], weights: Mapping[Hashable, float]) -> dict:
    raw = {}
    for site in updates:
        if site not in weights:
            raise UpdateValidationError(f"site {site!r}: no weight given (weights for {list(weights)[:3]}).", site)
        weight = float(weights[site])
        if not np.isfinite(weight) or weight < 0:
            raise UpdateValidationError(f"site {site!r}: weight must be finite and >= 0, got {weight}.", site)
        raw[site] = weight
    total = sum(raw.values())
    if total <= 0:
        raise UpdateValidationError(f"total weight is zero over sites {list(raw)[:3]}; nothing to average.")
    return {site: weight / total for site, weight in raw.items()}


def _float64_like(value: Array, template: Array) -> Array:
    if isinstance(template, torch.Tensor):
        tensor = value.detach() if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
        return tensor.to(device=template.device, dtype=torch.float64)
    if isinstance(value, torch.Tensor):
        return value.detach().to(device="cpu", dtype=torch.float64).numpy()
    return value.astype(np.float64, copy=False)


def _cast_like(value: Array, template: Array) -> Array:
    if isinstance(template, torch.Tensor):
        return torch.as_tensor(value).to(device=template.device, dtype=template.dtype).clone()
    numpy = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
    return np.array(numpy, dtype=template.dtype, copy=True)


def weighted_average(
    updates: Mapping[Hashable, Update],
    weights: Mapping[Hashable, float],
    *,
    reference: Update | None = None,
) -> dict[str, Array]:
    """Validated weighted average ``sum_k (w_k / sum_j w_j) * update_k`` of site updates.

    Args:
        updates: site -> (key -> tensor or array). Every update is validated, including zero-weight ones.
        weights: site -> non-negative weight (e.g. ``n_k`` or the DRO ``lambda_k``); normalised here. Entries for
            sites not in ``updates`` are ignored.
        reference: expected keys, shapes, dtypes and output types (e.g. the current global model); ``None`` uses the
            first update.

    Returns:
        key -> averaged entry, in the reference's key order, with the template's type, dtype and device. Integer and
        bool entries are copied from the first positive-weight update.

    Raises:
        UpdateValidationError: no updates, a missing/negative/non-finite weight, a zero total weight, or any problem
            found by :func:`validate_update`.

    Example:
        >>> weighted_average({"a": {"w": np.ones(2)}, "b": {"w": np.zeros(2)}}, {"a": 3, "b": 1})
        {'w': array([0.75, 0.75])}
    """
    if len(updates) == 0:
        raise UpdateValidationError("no updates to average.")
    norm = _normalised_weights(updates, weights)
    template_update = reference if reference is not None else next(iter(updates.values()))
    for site, update in updates.items():
        validate_update(site, update, template_update)
    contributing = [site for site in updates if norm[site] > 0]
    result: dict[str, Array] = {}
    for key, template in template_update.items():
        if _kind(template) != "f":
            result[key] = _cast_like(updates[contributing[0]][key], template)
            continue
        total = None
        for site in contributing:
            term = norm[site] * _float64_like(updates[site][key], template)
            total = term if total is None else total + term
        result[key] = _cast_like(total, template)
    return result
