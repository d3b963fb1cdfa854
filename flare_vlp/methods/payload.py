"""Checks on payloads: what a site may send (its declaration) and whether a reply can be combined (per kind).

Two different questions, asked at two places:

* **Disclosure** (at the site, before anything leaves): :func:`check_outgoing` compares a message with the client
  algorithm's :class:`Declaration`. A payload kind it does not declare, a tensor key outside its shareable set or in
  its private set (a personal adapter, a head), representations of samples that are not public ids of the task, an
  array in ``meta``: :class:`DisclosureError`, and the message is not sent.
* **Validity** (at the server, before anything is combined): weights and adapters against the reference (keys,
  shapes, dtype kinds, NaN/Inf; :mod:`flare_vlp.algorithms.aggregate`), representations against the expected ids
  and dimension (:func:`validate_representations`). An invalid reply is excluded with its reason.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np

from flare_vlp.algorithms.aggregate import UpdateValidationError
from flare_vlp.methods.messages import Message, PayloadKind, Representations

__all__ = [
    "Declaration",
    "DisclosureError",
    "check_incoming",
    "check_outgoing",
    "validate_representations",
    "validate_metrics",
]

_PLAIN = (str, int, float, bool, type(None))


class DisclosureError(RuntimeError):
    """A site tried to send something its client algorithm does not declare shareable."""


@dataclass(frozen=True)
class Declaration:
    """What a client algorithm receives, trains and lets leave the site.

    Args:
        receives: payload kinds it reads from the server.
        trains: what it trains, in words or group names (documentation; shown in logs).
        shares: payload kinds that may leave the site.
        shareable_keys: tensor keys (weights and adapters) that may leave; ``None`` = none may.
        private_keys: tensor keys that must never leave (personal adapters, heads); checked even if shareable.
        modalities: representation modalities it may send.
        train_tasks: the FLARE task names it trains on (other names, besides validate / submit, are unknown).
    """

    receives: frozenset[PayloadKind] = frozenset()
    trains: tuple[str, ...] = ()
    shares: frozenset[PayloadKind] = frozenset({PayloadKind.METRICS})
    shareable_keys: frozenset[str] | None = None
    private_keys: frozenset[str] = field(default_factory=frozenset)
    modalities: frozenset[str] = field(default_factory=frozenset)
    train_tasks: frozenset[str] = frozenset({"train"})


def _plain(value: object) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def check_outgoing(
    site: str, declaration: Declaration, message: Message, public_ids: Collection[str] | None = None
) -> None:
    """Raise :class:`DisclosureError` unless everything in ``message`` is declared shareable by ``declaration``.

    Args:
        site: the sending site (named in the error).
        declaration: the client algorithm's declaration.
        message: the outgoing message.
        public_ids: the public-sample ids the task asked representations of (``None``: none were asked).
    """
    undeclared = sorted(k.value for k in message.kinds - declaration.shares)
    if undeclared:
        raise DisclosureError(
            f"site {site!r}: outgoing message carries {undeclared}, which the client algorithm does not declare "
            f"shareable (it declares {sorted(k.value for k in declaration.shares)})"
        )
    for kind, tensors in ((PayloadKind.WEIGHTS, message.weights), (PayloadKind.ADAPTERS, message.adapters)):
        private = sorted(set(tensors) & declaration.private_keys)
        if private:
            raise DisclosureError(
                f"site {site!r}: outgoing {kind.value} include private tensor(s) {private[:3]} (site-local state)"
            )
        allowed = declaration.shareable_keys or frozenset()
        extra = sorted(set(tensors) - allowed)
        if extra:
            raise DisclosureError(
                f"site {site!r}: outgoing {kind.value} include {len(extra)} tensor(s) not declared shareable: "
                f"{extra[:3]}"
            )
    reps = message.representations
    if reps is not None:
        modalities = sorted(set(reps.arrays) - declaration.modalities)
        if modalities:
            raise DisclosureError(f"site {site!r}: representations of undeclared modalities {modalities}")
        public = set(public_ids or ())
        private = [i for i in reps.ids if i not in public]
        if private:
            raise DisclosureError(
                f"site {site!r}: representations of {len(private)} sample(s) that are not public ids of this task, "
                f"e.g. {private[:3]}"
            )
    for key, value in message.meta.items():
        if not _plain(value):
            raise DisclosureError(
                f"site {site!r}: meta[{key!r}] is a {type(value).__name__}; meta carries plain values only "
                "(arrays travel as declared payloads)"
            )
    for key, value in message.metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DisclosureError(f"site {site!r}: metric {key!r} is a {type(value).__name__}, not a number")


def check_incoming(site: str, declaration: Declaration, message: Message) -> None:
    """Refuse a received message carrying payload kinds the algorithm does not declare it reads (a job whose server
    and site run different methods, say): ``ValueError`` naming the site and the kinds."""
    unread = sorted(k.value for k in message.kinds - declaration.receives - {PayloadKind.METRICS})
    if unread:
        raise ValueError(
            f"site {site!r}: received {unread}, which its client algorithm does not read "
            f"(it declares {sorted(k.value for k in declaration.receives)}); do server and site run the same method?"
        )


def validate_metrics(site: str, metrics: Mapping[str, object], required: Collection[str] = ()) -> None:
    """Every metric a number; the ``required`` ones present and finite."""
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise UpdateValidationError(f"site {site!r}: metric {key!r} is not a number ({value!r})", site, key)
    for key in required:
        if key not in metrics or not math.isfinite(float(metrics[key])):
            raise UpdateValidationError(f"site {site!r}: metric {key!r} missing or not finite", site, key)


def validate_representations(
    site: str,
    reps: Representations | None,
    expected_ids: list[str],
    dims: Mapping[str, int],
    *,
    require: Collection[str] = (),
) -> None:
    """Check one site's representations before they are combined.

    Args:
        site: the sending site (named in the error).
        reps: what it sent.
        expected_ids: the public ids the task asked for, in order (rows must follow it exactly).
        dims: modality -> expected dimension ``D``; a modality not listed is an error.
        require: modalities that must be present (e.g. the site's role's modalities).

    Raises:
        UpdateValidationError: no representations, other ids or another order, an unknown or missing modality, a
            wrong shape, a non-float dtype, NaN/Inf.
    """
    if reps is None:
        raise UpdateValidationError(f"site {site!r}: no representations in the reply", site)
    if list(reps.ids) != list(expected_ids):
        missing = [i for i in expected_ids if i not in set(reps.ids)]
        raise UpdateValidationError(
            f"site {site!r}: representation ids differ from the task's public ids "
            f"({len(reps.ids)} sent, {len(expected_ids)} asked; missing e.g. {missing[:3]})",
            site,
        )
    absent = sorted(set(require) - set(reps.arrays))
    if absent:
        raise UpdateValidationError(f"site {site!r}: representations lack modalities {absent}", site)
    for modality, array in reps.arrays.items():
        if modality not in dims:
            raise UpdateValidationError(
                f"site {site!r}: unknown modality {modality!r} (expected one of {sorted(dims)})", site, modality
            )
        array = np.asarray(array)
        shape = (len(expected_ids), dims[modality])
        if array.shape != shape:
            raise UpdateValidationError(
                f"site {site!r}, modality {modality!r}: shape {array.shape} != expected {shape}", site, modality
            )
        if array.dtype.kind != "f":
            raise UpdateValidationError(f"site {site!r}, modality {modality!r}: dtype {array.dtype} is not float", site)
        bad = int((~np.isfinite(array)).sum())
        if bad:
            raise UpdateValidationError(
                f"site {site!r}, modality {modality!r}: {bad} non-finite value(s) (NaN/Inf)", site, modality
            )
