"""Physical-system generators: energy conserved along the trajectories, derivatives consistent with
finite differences, reproducible seeds, noise, splits, the reference solver, and input errors."""

from __future__ import annotations

import math

import pytest
import torch

from torchnde.datasets.physics import (
    Trajectories,
    double_pendulum,
    mass_spring,
    pendulum,
    relativistic_particle,
    two_body,
)

D64 = torch.float64

# name -> generator of a small float64 data set (noise-free unless stated)
SMALL = {
    "mass_spring": lambda **k: mass_spring(6, 30, noise=0.0, dtype=D64, **k),
    "pendulum": lambda **k: pendulum(6, 45, noise=0.0, dtype=D64, **k),
    "two_body": lambda **k: two_body(5, 50, dtype=D64, **k),
    "double_pendulum": lambda **k: double_pendulum(200, t_span=(0.0, 10.0), dtype=D64, **k),
    "relativistic_velocity": lambda **k: relativistic_particle(6, 50, dtype=D64, **k),
    "relativistic_canonical": lambda **k: relativistic_particle(
        6, 50, coordinates="canonical", dtype=D64, **k
    ),
}


@pytest.mark.parametrize("name", SMALL)
def test_energy_is_conserved_along_the_trajectories(name):
    data = SMALL[name]()
    drift = (data.energy - data.energy[:, :1]).abs().max() / data.energy.abs().max()
    assert float(drift) < 1e-8
    torch.testing.assert_close(data.energy_fn(data.x_clean), data.energy)


@pytest.mark.parametrize("name", SMALL)
def test_derivatives_match_finite_differences_of_the_trajectories(name):
    """Central differences on a fine grid (h = 1e-3) agree with the exact derivatives to O(h^2)."""
    data = SMALL[name]()
    fine = data.reference(data.x_clean[:, 0], torch.linspace(0.0, 0.02, 21, dtype=D64))  # [21, N, 2d]
    h = 1e-3
    central = (fine[2:] - fine[:-2]) / (2 * h)
    exact = data.vector_field(fine[1:-1])
    scale = exact.abs().max()
    assert float((central - exact).abs().max() / scale) < 1e-4
    torch.testing.assert_close(data.vector_field(data.x_clean), data.dx)


@pytest.mark.parametrize("name", SMALL)
def test_same_seed_same_data_other_seed_other_data(name):
    a, b, c = SMALL[name](seed=3), SMALL[name](seed=3), SMALL[name](seed=4)
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)
    if name != "double_pendulum":  # its initial state is fixed; only noise would use the seed
        assert not torch.allclose(a.x, c.x)


def test_noise_is_added_to_states_but_not_to_derivatives():
    clean = mass_spring(50, 30, noise=0.0, seed=1, dtype=D64)
    noisy = mass_spring(50, 30, noise=0.05, seed=1, dtype=D64)
    torch.testing.assert_close(noisy.x_clean, clean.x_clean)
    torch.testing.assert_close(noisy.dx, clean.dx)
    residual = noisy.x - noisy.x_clean
    assert float(residual.std()) == pytest.approx(0.05, rel=0.05)
    assert float(residual.mean().abs()) < 0.005
    torch.testing.assert_close(clean.x, clean.x_clean)


def test_mass_spring_follows_the_repository_recipe():
    data = mass_spring(seed=0)
    assert data.x.shape == (50, 30, 2) and data.x.dtype == torch.float32
    assert float(data.t[0]) == 0.0 and float(data.t[-1]) == pytest.approx(3.0)
    radius = data.energy[:, 0].sqrt()  # H = q^2 + p^2
    assert float(radius.min()) >= 0.1 - 1e-6 and float(radius.max()) <= 1.0 + 1e-6
    q, p = data.x_clean[0, :, 0].double(), data.x_clean[0, :, 1].double()
    q0, p0 = q[0], p[0]
    t = data.t.double()
    torch.testing.assert_close(q, q0 * torch.cos(2 * t) + p0 * torch.sin(2 * t), rtol=1e-6, atol=1e-6)
    assert data.coordinates == ("q", "p")


def test_pendulum_radius_and_grid():
    data = pendulum(seed=0, dtype=D64)
    assert data.x.shape == (50, 45, 2)
    r = data.x_clean[:, 0].norm(dim=-1)
    assert float(r.min()) >= 0.2 - 1e-9 and float(r.max()) <= 2.0 + 1e-9


def test_two_body_orbits_are_bound_and_momentum_free():
    data = two_body(20, seed=0, dtype=D64)
    assert data.x.shape == (20, 50, 8)
    assert float(data.energy.max()) < 0  # bound orbits
    p = data.x_clean[..., 4:]
    total = p[..., 0:2] + p[..., 2:4]
    assert float(total.abs().max()) < 1e-9  # the centre of mass is at rest


def test_double_pendulum_starts_from_the_lnn_state_and_has_zero_energy_at_rest():
    data = double_pendulum(100, t_span=(0.0, 5.0), dtype=D64)
    torch.testing.assert_close(
        data.x_clean[0, 0], torch.tensor([3 * math.pi / 7, 3 * math.pi / 4, 0.0, 0.0], dtype=D64)
    )
    assert float(data.energy_fn(torch.zeros(4, dtype=D64))) == 0.0
    assert data.coordinates == ("q", "qdot")
    many = double_pendulum(20, t_span=(0.0, 1.0), y0=[[0.1, 0.2, 0.0, 0.0], [0.3, -0.1, 0.5, 0.0]], dtype=D64)
    assert many.x.shape == (2, 20, 4)


def test_relativistic_speeds_stay_below_light_and_coordinates_agree():
    vel = relativistic_particle(10, seed=2, dtype=D64)
    can = relativistic_particle(10, seed=2, coordinates="canonical", dtype=D64)
    v = vel.x_clean[..., 1]
    assert float(v.abs().max()) < 1
    gamma = 1 / torch.sqrt(1 - v.square())
    torch.testing.assert_close(can.x_clean[..., 1], gamma * v, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(can.energy, vel.energy, rtol=1e-9, atol=1e-9)
    assert vel.coordinates == ("q", "qdot") and can.coordinates == ("q", "p")


def test_split_by_trajectory_or_by_time():
    data = mass_spring(10, 30, seed=0)
    first, rest = data.split(0.5)
    assert first.x.shape == (5, 30, 2) and rest.x.shape == (5, 30, 2)
    torch.testing.assert_close(torch.cat([first.x, rest.x]), data.x)
    single = double_pendulum(100, t_span=(0.0, 5.0))
    early, late = single.split(0.5)
    assert early.x.shape == (1, 50, 4) and late.x.shape == (1, 50, 4)
    assert float(early.t[-1]) < float(late.t[0])
    x, dx = first.flat()
    assert x.shape == (150, 2) and dx.shape == (150, 2)
    assert isinstance(first, Trajectories)


def test_reference_reproduces_the_generated_trajectories():
    data = pendulum(4, 45, noise=0.0, seed=0, dtype=D64)
    again = data.reference(data.x_clean[:, 0], data.t)
    torch.testing.assert_close(again.transpose(0, 1), data.x_clean, rtol=1e-8, atol=1e-8)


def test_bad_arguments_raise_errors_that_name_the_fix():
    with pytest.raises(ValueError, match="n_trajectories"):
        mass_spring(0)
    with pytest.raises(ValueError, match="noise"):
        pendulum(noise=-1.0)
    with pytest.raises(TypeError, match="dtype"):
        two_body(dtype=torch.int64)
    with pytest.raises(ValueError, match="coordinates"):
        relativistic_particle(coordinates="momentum")
    with pytest.raises(ValueError, match="radius"):
        mass_spring(radius=(1.0, 0.5))
    with pytest.raises(ValueError, match="y0"):
        double_pendulum(10, y0=[0.0, 0.0])
    with pytest.raises(TypeError, match="seed"):
        mass_spring(seed=1.5)
    with pytest.raises(ValueError, match="fraction"):
        mass_spring().split(1.0)
