"""Distributionally robust site weights for FedDRA / FedAID: mirror ascent on lambda plus projection on a ball.

Objective (methods.md, section 1): ``min_theta max_{lambda in P_rho} sum_k lambda_k L_k(theta)``. Per round the
server takes an exponentiated-gradient (mirror ascent) step on the reported site losses and projects the result back
onto the uncertainty set ``P_rho``.

The chi-square ball is defined around a centre distribution ``c`` (uniform by default, or e.g. the sample
proportions ``n_k / n``) with the chi-square divergence ``f(t) = (t - 1)^2 / 2``:

    D_chi2(lambda || c) = 0.5 * sum_k (lambda_k - c_k)^2 / c_k,     P_rho = {lambda in simplex : D_chi2 <= rho}.

For ``c_k = 1/K`` this is ``0.5 * K * sum_k (lambda_k - 1/K)^2 = (1/(2K)) sum_k (K lambda_k - 1)^2``, the set of
Namkoong & Duchi, "Stochastic Gradient Methods for Distributionally Robust Optimization with f-divergences", NeurIPS
2016 (https://papers.nips.cc/paper/6040). ``rho = 0`` gives ``{c}`` (FedAvg with weights ``c``), and
``rho >= max_k (1 - c_k) / (2 c_k)`` lets the whole simplex in.

Euclidean projection (KKT, multiplier ``beta >= 0`` for the ball): ``lambda_k = w_k max(0, v_k + eta)`` with
``w_k = c_k / (c_k + beta)`` and ``eta`` fixing ``sum = 1``. For a given ``beta``, ``eta`` is found exactly by a sort
(a weighted simplex projection); ``D_chi2`` is non-increasing in ``beta``, so ``beta`` is bisected down to adjacent
floating-point numbers and the feasible end is returned.

The KL ball ``{KL(lambda || c) <= rho}`` option uses the KL (Bregman) projection, the one that matches the entropic
mirror step: ``argmin KL(lambda || q)`` over the ball is the geometric mixture ``lambda ∝ q^theta c^(1 - theta)``,
with ``theta in [0, 1]`` bisected so that ``KL(lambda || c) = rho``.

Everything is float64 numpy, as on the FLARE server.

:func:`scoring_batches` draws the rows a site scores the received global model on (the DRO loss signal): the same
number of same-size batches at every site, so the signal's expected value does not depend on the size of the site's
validation split (an uninformed InfoNCE loss is ``ln(batch size)``: ragged or small batches read as a lower loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = [
    "DIVERGENCES",
    "chi_square_divergence",
    "kl_divergence",
    "project_simplex",
    "project_chi_square_ball",
    "project_kl_ball",
    "exponentiated_gradient_step",
    "dro_update",
    "scoring_batches",
]

DIVERGENCES: tuple[str, ...] = ("chi2", "kl")
"""Valid ``divergence`` values of :func:`dro_update`."""

ArrayLike = np.ndarray | Sequence[float]


def _vector(name: str, value: ArrayLike) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D vector, got shape {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{name}` must be finite, got {array}.")
    return array


def _center(center: ArrayLike | None, size: int) -> np.ndarray:
    if center is None:
        return np.full(size, 1.0 / size)
    c = _vector("center", center)
    if c.shape != (size,) or np.any(c <= 0) or abs(c.sum() - 1.0) > 1e-6:
        raise ValueError(f"`center` must be a positive distribution over the {size} sites (sum 1), got {c}.")
    return c / c.sum()


def _radius(rho: float) -> float:
    if np.isnan(rho) or rho < 0:
        raise ValueError(f"`rho` must be >= 0, got {rho}.")
    return float(rho)


def chi_square_divergence(lmbda: ArrayLike, center: ArrayLike | None = None) -> float:
    """``D_chi2(lambda || c) = 0.5 * sum_k (lambda_k - c_k)^2 / c_k`` (uniform ``c`` when ``center`` is None)."""
    lam = _vector("lmbda", lmbda)
    c = _center(center, lam.size)
    return float(0.5 * np.sum((lam - c) ** 2 / c))


def kl_divergence(lmbda: ArrayLike, center: ArrayLike | None = None) -> float:
    """``KL(lambda || c) = sum_k lambda_k log(lambda_k / c_k)`` with ``0 log 0 = 0``."""
    lam = _vector("lmbda", lmbda)
    c = _center(center, lam.size)
    positive = lam > 0
    return float(np.sum(lam[positive] * np.log(lam[positive] / c[positive])))


def _weighted_simplex(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``lambda = w * max(0, v + eta)`` with the unique ``eta`` giving ``sum lambda = 1`` (w > 0), by one sort."""
    order = np.argsort(-v, kind="stable")
    a, ww = v[order], w[order]
    etas = (1.0 - np.cumsum(ww * a)) / np.cumsum(ww)
    # The support is a prefix of the sorted order; its size is the last m with a_m + eta_m > 0 (always true for m=1).
    m = np.flatnonzero(a + etas > 0)[-1]
    return w * np.maximum(v + etas[m], 0.0)


def project_simplex(v: ArrayLike) -> np.ndarray:
    """Euclidean projection onto the probability simplex (sort-based, exact).

    Args:
        v: K scores.

    Returns:
        K float64 weights, ``>= 0`` and summing to 1.
    """
    array = _vector("v", v)
    return _weighted_simplex(array, np.ones_like(array))


def project_chi_square_ball(v: ArrayLike, rho: float, center: ArrayLike | None = None) -> np.ndarray:
    """Euclidean projection of ``v`` onto ``{lambda in simplex : D_chi2(lambda || c) <= rho}``.

    Args:
        v: K values (need not be on the simplex).
        rho: radius ``>= 0``; ``0`` returns the centre exactly, ``inf`` reduces to :func:`project_simplex`.
        center: K positive weights summing to 1 (normalised once); ``None`` is uniform ``1/K``.

    Returns:
        K float64 weights; a ``v`` whose simplex projection lies in the ball comes back as that projection.

    Raises:
        ValueError: on a non-finite ``v``, a negative ``rho`` or an invalid ``center``.

    Example:
        >>> project_chi_square_ball([0.7, 0.2, 0.1], rho=0.1)  # doctest: +SKIP
    """
    array = _vector("v", v)
    rho = _radius(rho)
    c = _center(center, array.size)
    if rho == 0:
        return c.copy()
    lam = _weighted_simplex(array, np.ones_like(array))  # beta = 0
    if chi_square_divergence(lam, c) <= rho:
        return lam

    def point(beta: float) -> np.ndarray:
        return _weighted_simplex(array, c / (c + beta))

    lo, hi = 0.0, 1.0
    while chi_square_divergence(point(hi), c) > rho:
        lo, hi = hi, 2.0 * hi
        if hi > 1e300:  # rho below floating-point resolution around c
            return c.copy()
    return point(_bisect_to_boundary(hi, lo, lambda beta: chi_square_divergence(point(beta), c) <= rho))


def _bisect_to_boundary(feasible: float, infeasible: float, is_feasible) -> float:
    """Bisect a monotone feasibility boundary down to adjacent floats; return the feasible end (so the result is
    inside the ball, never outside by rounding)."""
    while True:
        mid = 0.5 * (feasible + infeasible)
        if mid in (feasible, infeasible):
            return feasible
        if is_feasible(mid):
            feasible = mid
        else:
            infeasible = mid


def project_kl_ball(q: ArrayLike, rho: float, center: ArrayLike | None = None) -> np.ndarray:
    """KL (Bregman) projection of a distribution ``q`` onto ``{lambda : KL(lambda || c) <= rho}``.

    Computes ``argmin_lambda KL(lambda || q)`` over the ball, i.e. ``lambda_theta ∝ q^theta c^(1 - theta)`` with
    the largest ``theta in [0, 1]`` (found by bisection) such that ``KL(lambda_theta || c) <= rho``.

    Args:
        q: K non-negative weights (normalised to sum 1), e.g. the output of :func:`exponentiated_gradient_step`.
        rho: radius ``>= 0``; ``0`` returns the centre exactly.
        center: K positive weights summing to 1; ``None`` is uniform.

    Returns:
        K float64 weights on the simplex.

    Raises:
        ValueError: on a negative or all-zero ``q``, a negative ``rho`` or an invalid ``center``.
    """
    q = _vector("q", q)
    if np.any(q < 0) or q.sum() <= 0:
        raise ValueError(f"`q` must be non-negative weights with a positive sum, got {q}.")
    rho = _radius(rho)
    c = _center(center, q.size)
    if rho == 0:
        return c.copy()
    q = q / q.sum()
    if kl_divergence(q, c) <= rho:
        return q
    support = q > 0
    log_q = np.log(np.where(support, q, 1.0))
    log_c = np.log(c)

    def point(theta: float) -> np.ndarray:
        z = theta * log_q + (1.0 - theta) * log_c
        if theta > 0:
            z[~support] = -np.inf  # q_k = 0 stays 0 for every theta > 0
        z = np.exp(z - z.max())
        return z / z.sum()

    return point(_bisect_to_boundary(0.0, 1.0, lambda theta: kl_divergence(point(theta), c) <= rho))


def exponentiated_gradient_step(lmbda: ArrayLike, losses: ArrayLike, eta: float) -> np.ndarray:
    """Mirror-ascent step ``lambda_k <- lambda_k exp(eta * l_k) / Z`` (methods.md, section 1, step 5).

    Computed in log space with the maximum subtracted, so large ``eta * l`` cannot overflow; the step is invariant to
    adding a constant to every loss. A site with ``lambda_k = 0`` stays at 0 (the projection may move it back).

    Args:
        lmbda: K current weights (non-negative, positive sum).
        losses: K site losses ``l_k`` (higher loss -> more weight).
        eta: step size ``>= 0`` (project default 0.5).

    Returns:
        K float64 weights summing to 1.

    Raises:
        ValueError: on mismatched lengths, non-finite values, negative weights or a negative ``eta``.
    """
    lam = _vector("lmbda", lmbda)
    loss = _vector("losses", losses)
    if loss.shape != lam.shape:
        raise ValueError(f"`losses` has {loss.size} entries but `lmbda` has {lam.size}.")
    if np.any(lam < 0) or lam.sum() <= 0:
        raise ValueError(f"`lmbda` must be non-negative weights with a positive sum, got {lam}.")
    if not np.isfinite(eta) or eta < 0:
        raise ValueError(f"`eta` must be a finite value >= 0, got {eta}.")
    with np.errstate(divide="ignore"):
        z = np.log(lam) + eta * loss
    z = np.exp(z - z.max())
    return z / z.sum()


def dro_update(
    lmbda: ArrayLike,
    losses: ArrayLike,
    eta: float,
    rho: float,
    divergence: Literal["chi2", "kl"] = "chi2",
    center: ArrayLike | None = None,
) -> np.ndarray:
    """One FedDRA weight update: exponentiated-gradient step, then projection onto ``P_rho``.

    Args:
        lmbda: K current site weights.
        losses: K robust loss estimates ``l_k`` of the new global model on each site's held-out slice.
        eta: mirror-ascent step size.
        rho: radius of the uncertainty set (``0`` pins lambda to ``center``).
        divergence: ``"chi2"`` (Euclidean projection onto the chi-square ball, default) or ``"kl"`` (KL projection
            onto the KL ball).
        center: centre of the ball (``None`` = uniform; ``n_k / n`` makes ``rho = 0`` sample-weighted FedAvg).

    Returns:
        K float64 weights in ``P_rho``; use them as the aggregation weights of this round.

    Raises:
        ValueError: on an unknown ``divergence`` or any invalid argument of the two steps.
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"`divergence` must be one of {DIVERGENCES}, got {divergence!r}.")
    stepped = exponentiated_gradient_step(lmbda, losses, eta)
    if divergence == "chi2":
        return project_chi_square_ball(stepped, rho, center)
    return project_kl_ball(stepped, rho, center)


def scoring_batches(n_rows: int, batches: int, batch_size: int, seed: int, rnd: int) -> list[np.ndarray]:
    """Row indices of ``batches`` scoring batches of ``batch_size`` distinct rows out of ``n_rows`` (seeded).

    Why: each batch is a uniformly random ``batch_size``-subset of the rows, so its expected loss is that of a random
    ``batch_size``-sample of the site's distribution whatever ``n_rows`` is. Batches are cut from one random
    permutation while it has rows left and from a fresh permutation after that, so they are disjoint when the split is
    large enough and overlap only when it is not.

    Args:
        n_rows: rows of the site's validation split (``>= batch_size``).
        batches: number of batches (``>= 1``).
        batch_size: rows per batch (``>= 2``: a contrastive loss needs a negative).
        seed: the experiment seed.
        rnd: the round (a fresh draw every round; the same draw for the same ``(seed, rnd)``).

    Returns:
        ``batches`` int64 arrays of ``batch_size`` distinct indices in ``[0, n_rows)``.

    Raises:
        ValueError: ``n_rows < batch_size``, ``batch_size < 2`` or ``batches < 1``.
    """
    if batch_size < 2 or batches < 1:
        raise ValueError(f"need batches >= 1 and batch_size >= 2, got batches={batches}, batch_size={batch_size}")
    if n_rows < batch_size:
        raise ValueError(f"{n_rows} rows cannot make a scoring batch of {batch_size} distinct rows")
    rng = np.random.default_rng((int(seed) % 2**63, int(rnd) % 2**63, 0xD20))  # salt: apart from other (seed, rnd)
    out: list[np.ndarray] = []
    order, pos = rng.permutation(n_rows), 0
    for _ in range(batches):
        if pos + batch_size > n_rows:
            order, pos = rng.permutation(n_rows), 0
        out.append(order[pos : pos + batch_size].astype(np.int64))
        pos += batch_size
    return out
