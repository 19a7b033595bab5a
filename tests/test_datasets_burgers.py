"""The Burgers reference (Cole-Hopf + Gauss-Hermite) and its seeded samplers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from torchnde.datasets.burgers import (
    BURGERS_NU,
    burgers_grid,
    burgers_solution,
    collocation_points,
    initial_boundary_points,
    solution_points,
)

# A grid that resolves the shock: the whole domain plus a dense band around x = 0.
_T = np.linspace(0.0, 1.0, 101)[:, None]
_X = np.concatenate([np.linspace(-1.0, 1.0, 201), np.linspace(-0.02, 0.02, 201)])[None, :]


def test_quadrature_has_converged_in_the_number_of_nodes_including_the_shock():
    coarse = burgers_solution(_T, _X, nodes=100)
    default = burgers_solution(_T, _X, nodes=200)
    fine = burgers_solution(_T, _X, nodes=300)
    assert np.abs(default - fine).max() <= 1e-13
    assert np.abs(coarse - fine).max() <= 1e-13
    # and the rule is genuinely converging, not constant: 40 nodes are visibly off
    assert np.abs(burgers_solution(_T, _X, nodes=40) - fine).max() > 1e-6


def test_initial_condition_is_minus_sine():
    x = np.linspace(-1.0, 1.0, 401)
    np.testing.assert_allclose(burgers_solution(0.0, x), -np.sin(np.pi * x), rtol=0, atol=1e-15)


def test_dirichlet_boundaries_are_zero_and_the_solution_is_odd():
    t = np.linspace(0.0, 1.0, 51)
    assert np.abs(burgers_solution(t, -1.0)).max() <= 1e-14
    assert np.abs(burgers_solution(t, 1.0)).max() <= 1e-14
    u = burgers_solution(_T, _X)
    np.testing.assert_allclose(burgers_solution(_T, -_X), -u, rtol=0, atol=1e-13)


def test_pde_holds_by_finite_differences_away_from_the_shock():
    # central differences with step h: the residual is O(h^2) truncation error, so it must be
    # small and shrink by ~100x when h shrinks by 10x (otherwise it would be a model error).
    t, x = np.meshgrid(np.linspace(0.05, 1.0, 40), np.linspace(-1.0, 1.0, 81), indexing="ij")
    away = np.abs(x) >= 0.1
    maxima = []
    for h in (1e-3, 1e-4):
        u = burgers_solution(t, x)
        u_t = (burgers_solution(t + h, x) - burgers_solution(t - h, x)) / (2 * h)
        up, um = burgers_solution(t, x + h), burgers_solution(t, x - h)
        u_x = (up - um) / (2 * h)
        u_xx = (up - 2 * u + um) / h**2
        r = u_t + u * u_x - BURGERS_NU * u_xx
        maxima.append(np.abs(r[away]).max())
    assert maxima[1] <= 1e-5
    assert maxima[0] / maxima[1] > 50


def test_analytic_slope_matches_finite_differences():
    t, x = np.meshgrid(np.linspace(0.05, 1.0, 20), np.linspace(-0.9, 0.9, 37), indexing="ij")
    h = 1e-5
    _, u_x = burgers_solution(t, x, derivative=True)
    fd = (burgers_solution(t, x + h) - burgers_solution(t, x - h)) / (2 * h)
    away = np.abs(x) >= 0.1
    np.testing.assert_allclose(u_x[away], fd[away], rtol=0, atol=1e-6)


def test_steepest_slope_matches_basdevant_benchmark():
    # Basdevant et al. (1986): max |u_x| = 152.00516 at x = 0, t = 1.6037 / pi.
    t_star = 1.6037 / math.pi
    _, slope = burgers_solution(t_star, 0.0, derivative=True)
    assert abs(float(slope) + 152.00516) <= 5e-5
    _, nearby = burgers_solution(np.array([t_star - 2e-3, t_star + 2e-3]), 0.0, derivative=True)
    assert np.all(np.abs(nearby) < abs(float(slope)))
    # and x = 0 is where the slope is steepest at that time
    _, across = burgers_solution(t_star, np.array([-1e-3, 1e-3]), derivative=True)
    assert np.all(np.abs(across) < abs(float(slope)))


def test_solution_broadcasts_and_accepts_tensors():
    u = burgers_solution(torch.tensor([[0.25], [0.5]]), torch.linspace(-1, 1, 7))
    assert u.shape == (2, 7) and u.dtype == np.float64


def test_grid_shapes_and_values():
    t, x, u = burgers_grid(11, 64)
    assert t.shape == (11,) and x.shape == (64,) and u.shape == (11, 64)
    np.testing.assert_allclose(u[3], burgers_solution(t[3], x), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"nu": -1.0}, "nu must be"),
        ({"nodes": 1000}, "nodes must be"),
        ({"nodes": 2.5}, "nodes must be"),
    ],
)
def test_bad_options_are_rejected_with_the_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        burgers_solution(0.5, 0.0, **kwargs)


def test_negative_time_is_rejected():
    with pytest.raises(ValueError, match="t must be >= 0"):
        burgers_solution(-0.1, 0.0)


def test_initial_boundary_points_lie_on_the_edges_with_exact_values():
    coords, values = initial_boundary_points(100, seed=0)
    assert coords.shape == (100, 2) and values.shape == (100, 1) and coords.dtype == torch.float64
    t, x = coords[:, 0], coords[:, 1]
    initial = t == 0
    wall = x.abs() == 1
    assert torch.all(initial | wall)
    assert torch.all(values[wall, 0] == 0)
    inner = initial & ~wall
    torch.testing.assert_close(values[inner, 0], -torch.sin(torch.pi * x[inner]), rtol=0, atol=1e-15)
    assert len({tuple(r) for r in coords.tolist()}) == 100  # drawn without replacement
    assert initial.any() and (x == -1).any() and (x == 1).any()


def test_samplers_are_reproducible_by_seed():
    a, av = initial_boundary_points(50, seed=3)
    b, bv = initial_boundary_points(50, seed=3)
    c, _ = initial_boundary_points(50, seed=4)
    assert torch.equal(a, b) and torch.equal(av, bv) and not torch.equal(a, c)
    assert torch.equal(collocation_points(100, seed=1), collocation_points(100, seed=1))
    assert not torch.equal(collocation_points(100, seed=1), collocation_points(100, seed=2))


def test_latin_hypercube_puts_one_point_in_every_stratum_of_each_coordinate():
    n = 500
    pts = collocation_points(n, seed=0, method="lhs").numpy()
    assert pts.shape == (n, 2)
    assert pts[:, 0].min() >= 0 and pts[:, 0].max() <= 1 and pts[:, 1].min() >= -1 and pts[:, 1].max() <= 1
    t_strata = np.floor(pts[:, 0] * n).astype(int)
    x_strata = np.floor((pts[:, 1] + 1) / 2 * n).astype(int)
    assert sorted(t_strata.tolist()) == list(range(n))
    assert sorted(x_strata.tolist()) == list(range(n))


def test_uniform_collocation_stays_in_the_range_and_unknown_methods_fail():
    pts = collocation_points(1000, seed=0, method="uniform", t_range=(0.0, 0.5), dtype=torch.float32)
    assert pts.dtype == torch.float32 and pts[:, 0].max() <= 0.5 and pts[:, 1].min() >= -1
    with pytest.raises(ValueError, match="valid: 'lhs', 'uniform'"):
        collocation_points(10, method="sobol")


def test_solution_points_are_exact_without_noise_and_perturbed_with_it():
    coords, values = solution_points(300, seed=0)
    exact = burgers_solution(coords[:, 0].numpy(), coords[:, 1].numpy())
    np.testing.assert_allclose(values[:, 0].numpy(), exact, rtol=0, atol=1e-15)
    _, noisy = solution_points(300, seed=0, noise=0.01)
    _, _, u = burgers_grid(100, 256)
    deviation = (noisy - values).std().item()
    assert 0.5 * 0.01 * u.std() < deviation < 1.5 * 0.01 * u.std()


def test_too_many_points_are_rejected():
    with pytest.raises(ValueError, match="candidate points"):
        initial_boundary_points(10_000)
    with pytest.raises(ValueError, match="positive integer"):
        collocation_points(0)
