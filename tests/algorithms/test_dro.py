"""DRO weights: exact projections (vs SLSQP and the projection inequality), feasibility, EG-step properties."""

from __future__ import annotations

import numpy as np
import pytest

from flare_vlp.algorithms.dro import (
    chi_square_divergence,
    dro_update,
    exponentiated_gradient_step,
    kl_divergence,
    project_chi_square_ball,
    project_kl_ball,
    project_simplex,
)

optimize = pytest.importorskip("scipy.optimize")


def _instances(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        k = int(rng.integers(2, 11))
        v = rng.normal(size=k) * rng.choice([0.1, 1.0, 3.0])
        center = rng.dirichlet(np.ones(k)) * 0.9 + 0.1 / k if rng.random() < 0.5 else None
        yield k, v, center


def _slsqp(v: np.ndarray, rho: float, center: np.ndarray) -> np.ndarray:
    constraints = [
        {"type": "eq", "fun": lambda x: x.sum() - 1.0, "jac": lambda x: np.ones_like(x)},
        {
            "type": "ineq",
            "fun": lambda x: rho - 0.5 * np.sum((x - center) ** 2 / center),
            "jac": lambda x: -(x - center) / center,
        },
    ]
    result = optimize.minimize(
        lambda x: 0.5 * np.sum((x - v) ** 2),
        center.copy(),
        jac=lambda x: x - v,
        bounds=[(0.0, 1.0)] * v.size,
        constraints=constraints,
        method="SLSQP",
        options={"ftol": 1e-13, "maxiter": 500},
    )
    # status 8 ("positive directional derivative") is SLSQP stalling at its own precision limit, not a wrong answer.
    assert result.success or result.status == 8, result.message
    return result.x


def test_uniform_center_matches_reference_formula():
    lam = np.array([0.5, 0.3, 0.2, 0.0])
    k = lam.size
    assert chi_square_divergence(lam) == pytest.approx(np.sum((k * lam - 1) ** 2) / (2 * k), abs=1e-15)


@pytest.mark.parametrize("rho", [0.01, 0.1, 1.0])
def test_chi_square_projection_matches_slsqp(rho):
    for k, v, center in _instances(25, seed=int(rho * 1000)):
        c = np.full(k, 1.0 / k) if center is None else center
        ours = project_chi_square_ball(v, rho, center)
        ref = _slsqp(v, rho, c)
        # ours is optimal: objective no worse than SLSQP's (which may sit ~1e-9 outside the ball), points agree.
        assert 0.5 * np.sum((ours - v) ** 2) <= 0.5 * np.sum((ref - v) ** 2) + 1e-7
        np.testing.assert_allclose(ours, ref, atol=2e-6)


@pytest.mark.parametrize("rho", [0.01, 0.1, 1.0, 5.0])
def test_chi_square_projection_is_feasible_and_satisfies_projection_inequality(rho):
    rng = np.random.default_rng(7)
    for k, v, center in _instances(40, seed=11):
        c = np.full(k, 1.0 / k) if center is None else center
        lam = project_chi_square_ball(v, rho, center)
        assert np.all(lam >= 0) and lam.sum() == pytest.approx(1.0, abs=1e-12)
        assert chi_square_divergence(lam, c) <= rho + 1e-9
        # Projection onto a convex set: <v - lam, x - lam> <= 0 for every feasible x.
        x = rng.dirichlet(np.ones(k), size=200)
        div = 0.5 * np.sum((x - c) ** 2 / c, axis=1)
        shrink = np.minimum(1.0, np.sqrt(rho / np.maximum(div, 1e-300)))[:, None]
        x = c + shrink * (x - c)  # scaled towards c: inside the ball (divergence scales quadratically)
        assert np.max((x - lam) @ (v - lam)) <= 1e-10


def test_rho_zero_returns_center_bit_for_bit():
    v = np.array([3.0, -1.0, 0.2])
    assert np.array_equal(project_chi_square_ball(v, 0.0), np.full(3, 1.0 / 3))
    center = np.array([0.5, 0.25, 0.25])
    assert np.array_equal(project_chi_square_ball(v, 0.0, center), center)
    assert np.array_equal(project_kl_ball([0.9, 0.05, 0.05], 0.0, center), center)
    assert np.array_equal(dro_update([0.2, 0.3, 0.5], [1.0, 2.0, 0.1], 0.5, 0.0, center=center), center)


def test_points_inside_the_ball_are_unchanged_after_simplex_projection():
    inside = np.array([0.3, 0.36, 0.34])
    np.testing.assert_allclose(project_chi_square_ball(inside, 1.0), inside, atol=1e-15)
    off_simplex = inside + 0.2  # projects onto `inside` itself
    assert np.array_equal(project_chi_square_ball(off_simplex, 1.0), project_simplex(off_simplex))
    assert np.array_equal(project_chi_square_ball([5.0, 0.0, 0.0], np.inf), np.array([1.0, 0.0, 0.0]))


def test_project_simplex_known_values():
    np.testing.assert_allclose(project_simplex([0.5, 0.5, 0.5]), [1 / 3] * 3, atol=1e-15)
    np.testing.assert_allclose(project_simplex([2.0, 0.0, -1.0]), [1.0, 0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(project_simplex([0.8, 0.6, 0.0]), [0.6, 0.4, 0.0], atol=1e-15)


def test_tiny_rho_stays_feasible_and_near_center():
    lam = project_chi_square_ball([10.0, 0.0, 0.0, 0.0], 1e-14)
    assert chi_square_divergence(lam) <= 1e-14 + 1e-18
    np.testing.assert_allclose(lam, 0.25, atol=1e-6)


def test_eg_step_is_shift_invariant_and_stable():
    lam = np.array([0.1, 0.2, 0.3, 0.4])
    losses = np.array([1.0, 2.0, 0.5, 1.5])
    base = exponentiated_gradient_step(lam, losses, 0.5)
    np.testing.assert_allclose(exponentiated_gradient_step(lam, losses + 1e3, 0.5), base, rtol=1e-12, atol=1e-15)
    expected = lam * np.exp(0.5 * losses)
    np.testing.assert_allclose(base, expected / expected.sum(), rtol=1e-14)
    huge = exponentiated_gradient_step(lam, [1e6, 0.0, 0.0, 0.0], 1.0)  # exp(1e6) would overflow
    np.testing.assert_allclose(huge, [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(exponentiated_gradient_step(lam, losses, 0.0), lam, rtol=1e-14)


def test_dro_update_moves_weight_towards_high_loss_sites():
    lam = np.full(4, 0.25)
    for divergence in ("chi2", "kl"):
        new = dro_update(lam, [1.0, 1.0, 1.0, 3.0], eta=0.5, rho=0.05, divergence=divergence)
        assert new[3] > 0.25 > new[0]
        assert new.sum() == pytest.approx(1.0, abs=1e-12)
    assert chi_square_divergence(dro_update(lam, [0, 0, 0, 30.0], 0.5, 0.05)) <= 0.05 + 1e-9
    assert kl_divergence(dro_update(lam, [0, 0, 0, 30.0], 0.5, 0.05, "kl")) <= 0.05 + 1e-9


def _slsqp_kl(q: np.ndarray, rho: float, center: np.ndarray) -> np.ndarray:
    """argmin KL(x || q) s.t. KL(x || center) <= rho, x in the simplex."""
    result = optimize.minimize(
        lambda x: np.sum(x * np.log(x / q)),
        center.copy(),
        bounds=[(1e-12, 1.0)] * q.size,
        constraints=[
            {"type": "eq", "fun": lambda x: x.sum() - 1.0},
            {"type": "ineq", "fun": lambda x: rho - np.sum(x * np.log(x / center))},
        ],
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    )
    return result.x


def test_kl_projection_matches_slsqp_on_kl_objective():
    rng = np.random.default_rng(3)
    for _ in range(10):
        k = int(rng.integers(2, 8))
        q, c, rho = rng.dirichlet(np.ones(k) * 0.5), rng.dirichlet(np.ones(k) * 5), 0.05
        ours = project_kl_ball(q, rho, c)
        assert kl_divergence(ours, c) <= rho + 1e-9
        if kl_divergence(q, c) <= rho:
            np.testing.assert_allclose(ours, q)
            continue
        np.testing.assert_allclose(ours, _slsqp_kl(q, rho, c), atol=1e-4)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: project_chi_square_ball([0.5, 0.5], -0.1), "`rho` must be >= 0"),
        (lambda: project_chi_square_ball([0.5, np.nan], 0.1), "`v` must be finite"),
        (lambda: project_chi_square_ball([0.5, 0.5], 0.1, center=[0.7, 0.7]), "`center` must be a positive"),
        (lambda: project_chi_square_ball([0.5, 0.5], 0.1, center=[1.0, 0.0]), "`center` must be a positive"),
        (lambda: exponentiated_gradient_step([0.5, 0.5], [1.0], 0.5), "`losses` has 1 entries"),
        (lambda: exponentiated_gradient_step([0.5, 0.5], [1.0, 2.0], -1.0), "`eta` must be"),
        (lambda: exponentiated_gradient_step([0.0, 0.0], [1.0, 2.0], 1.0), "`lmbda` must be non-negative"),
        (lambda: dro_update([0.5, 0.5], [1.0, 2.0], 0.5, 0.1, divergence="tv"), "`divergence` must be one of"),
    ],
)
def test_ill_args(call, match):
    with pytest.raises(ValueError, match=match):
        call()
