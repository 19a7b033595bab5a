"""The toy data generators: g1d, concentric spheres, reflection, twist."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from torchnde.datasets.toys import concentric_spheres, g1d, reflection, twist

# -- g1d -----------------------------------------------------------------------------------------


def test_g1d_maps_minus_one_to_one_and_one_to_minus_one():
    x, y = g1d()
    assert x.shape == y.shape == (2, 1)
    assert x[:, 0].tolist() == [-1.0, 1.0]
    assert y[:, 0].tolist() == [1.0, -1.0]
    assert x.dtype == torch.float32


def test_g1d_noise_moves_inputs_only_and_is_seeded():
    x, y = g1d(200, noise=0.1, seed=3, dtype=torch.float64)
    assert x.dtype == y.dtype == torch.float64
    assert torch.equal(y, torch.cat([torch.ones(100, 1), -torch.ones(100, 1)]).double())
    noise = x - (-y)
    assert 0.07 < noise.std().item() < 0.13
    assert torch.equal(x, g1d(200, noise=0.1, seed=3, dtype=torch.float64)[0])
    assert not torch.equal(x, g1d(200, noise=0.1, seed=4, dtype=torch.float64)[0])


def test_g1d_rejects_odd_counts_and_negative_noise():
    with pytest.raises(ValueError, match="even"):
        g1d(3)
    with pytest.raises(ValueError, match="noise"):
        g1d(noise=-0.1)
    with pytest.raises(TypeError, match="dtype"):
        g1d(dtype=torch.int64)


# -- concentric spheres --------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 3])
def test_concentric_spheres_labels_match_the_radii(dim):
    x, y = concentric_spheres(dim, 300, 700, seed=0)
    assert x.shape == (1000, dim) and y.shape == (1000, 1)
    r = x.double().norm(dim=1)
    inner = y[:, 0] == -1
    assert int(inner.sum()) == 300 and int((y[:, 0] == 1).sum()) == 700
    assert (r[inner] <= 0.5 + 1e-6).all()
    assert ((r[~inner] >= 1.0 - 1e-6) & (r[~inner] <= 1.5 + 1e-6)).all()


@pytest.mark.parametrize("dim", [2, 3])
def test_concentric_spheres_radii_are_uniform_in_volume(dim):
    # uniform in volume: P(|x| <= r) = (r^d - a^d) / (b^d - a^d) in each region (KS test)
    x, y = concentric_spheres(dim, 4000, 4000, seed=1, dtype=torch.float64)
    r = x.norm(dim=1).numpy()
    inner, outer = r[y[:, 0].numpy() < 0], r[y[:, 0].numpy() > 0]
    assert stats.kstest(inner, lambda s: (s / 0.5) ** dim).pvalue > 1e-3
    assert stats.kstest(outer, lambda s: (s**dim - 1.0) / (1.5**dim - 1.0)).pvalue > 1e-3
    # Dupont et al.'s radius law (r2 + (r3 - r2) U^(1/d)) is rejected for the shell
    assert stats.kstest(outer, lambda s: ((s - 1.0) / 0.5) ** dim).pvalue < 1e-6


def test_concentric_spheres_directions_are_isotropic():
    x, _ = concentric_spheres(2, 5000, 5000, seed=2, dtype=torch.float64)
    angle = torch.atan2(x[:, 1], x[:, 0]).numpy()
    assert stats.kstest(angle, stats.uniform(loc=-math.pi, scale=2 * math.pi).cdf).pvalue > 1e-3


def test_concentric_spheres_is_reproducible_from_its_seed():
    a = concentric_spheres(seed=5)
    b = concentric_spheres(seed=5)
    c = concentric_spheres(seed=6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_concentric_spheres_leaves_the_global_generator_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    concentric_spheres(seed=1)
    assert torch.equal(torch.rand(3), expected)


def test_concentric_spheres_rejects_bad_radii_and_sizes():
    with pytest.raises(ValueError, match="r1 < r2 < r3"):
        concentric_spheres(r1=1.0, r2=0.5)
    with pytest.raises(ValueError, match="dim"):
        concentric_spheres(dim=0)
    with pytest.raises(ValueError, match="at least one point"):
        concentric_spheres(inner=0, outer=0)
    with pytest.raises(TypeError, match="seed"):
        concentric_spheres(seed=1.5)


# -- reflection ----------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", ["points", "interval", "grid"])
def test_reflection_targets_are_the_negated_inputs(domain):
    x, y = reflection(64, domain=domain, bound=2.0)
    assert x.shape == y.shape == (64, 1)
    assert torch.equal(y, -x)
    assert (x.abs() <= 2.0).all()


def test_reflection_points_are_plus_and_minus_bound():
    x, _ = reflection(4, domain="points", bound=1.5)
    assert x[:, 0].tolist() == [-1.5, -1.5, 1.5, 1.5]


def test_reflection_interval_is_seeded_and_spread_over_the_interval():
    x, _ = reflection(2000, domain="interval", seed=0, dtype=torch.float64)
    assert torch.equal(x, reflection(2000, domain="interval", seed=0, dtype=torch.float64)[0])
    assert stats.kstest(x[:, 0].numpy(), stats.uniform(loc=-1, scale=2).cdf).pvalue > 1e-3


def test_reflection_grid_spans_the_interval_evenly():
    x, _ = reflection(5, domain="grid")
    assert x[:, 0].tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]


def test_reflection_rejects_unknown_domains_and_odd_point_counts():
    with pytest.raises(ValueError, match="valid: 'points', 'interval', 'grid'"):
        reflection(domain="circle")
    with pytest.raises(ValueError, match="even"):
        reflection(3, domain="points")
    with pytest.raises(ValueError, match="bound"):
        reflection(bound=0.0)


# -- twist ---------------------------------------------------------------------------------------


def test_twist_rotates_each_point_by_the_amplitude_times_a_gaussian_of_its_radius():
    x, y = twist(500, amplitude=3.0, seed=0, dtype=torch.float64)
    assert x.shape == y.shape == (500, 2)
    r = x.norm(dim=1)
    torch.testing.assert_close(y.norm(dim=1), r)
    turned = torch.atan2(y[:, 1], y[:, 0]) - torch.atan2(x[:, 1], x[:, 0])
    expected = 3.0 * torch.exp(-(r**2))
    wrapped = torch.remainder(turned - expected + math.pi, 2 * math.pi) - math.pi
    assert wrapped.abs().max() < 1e-12


def test_twist_inputs_are_uniform_in_the_disc_and_seeded():
    x, _ = twist(4000, radius=1.5, seed=1, dtype=torch.float64)
    assert (x.norm(dim=1) <= 1.5).all()
    # uniform in area: (r / R)^2 is uniform on [0, 1]
    assert stats.kstest((x.norm(dim=1) / 1.5).pow(2).numpy(), "uniform").pvalue > 1e-3
    assert torch.equal(x, twist(4000, radius=1.5, seed=1, dtype=torch.float64)[0])


def test_twist_with_zero_amplitude_is_the_identity():
    x, y = twist(10, amplitude=0.0)
    torch.testing.assert_close(x, y)


def test_twist_rejects_a_nonpositive_radius():
    with pytest.raises(ValueError, match="radius"):
        twist(radius=0.0)
