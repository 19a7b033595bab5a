"""Irregularly sampled series with observation masks: spirals and periodic signals."""

from __future__ import annotations

import math

import pytest
import torch

from torchnde.datasets import irregular_spirals, periodic_signals


def test_spirals_are_seeded_and_leave_the_global_generator_alone():
    state = torch.get_rng_state()
    a = irregular_spirals(n=6, n_points=20, n_observed=7, seed=3)
    b = irregular_spirals(n=6, n_points=20, n_observed=7, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.values, b.values) and torch.equal(a.mask, b.mask)
    assert not torch.equal(a.values, irregular_spirals(n=6, n_points=20, n_observed=7, seed=4).values)


def test_spirals_follow_the_archimedean_formulas_on_their_window():
    data = irregular_spirals(n=20, n_points=30, noise=0.0, seed=0, dtype=torch.float64)
    theta = torch.linspace(0, 6 * math.pi, 1000, dtype=torch.float64)
    for j in range(20):
        grid = theta[int(data.params["start"][j]) + torch.arange(30)]
        if data.params["labels"][j] == 1:  # counter-clockwise: r = 0.3 θ around (5, 0)
            centre, radius, angle = 5.0, 0.3 * grid, grid
        else:  # clockwise: r = 15 / θ', θ' = 6π + 1 - θ, around (-5, 0)
            angle = 6 * math.pi + 1 - grid
            centre, radius = -5.0, 15.0 / angle
        expected = torch.stack([radius * angle.cos() + centre, radius * angle.sin()], -1)
        assert torch.allclose(data.clean[j], expected, atol=1e-12)
    assert torch.equal(data.values, data.clean)
    assert torch.allclose(data.times, theta[:30])
    assert set(data.params["labels"].tolist()) == {0, 1}


def test_spiral_noise_has_the_requested_standard_deviation():
    data = irregular_spirals(n=400, n_points=50, noise=0.3, seed=1)
    assert (data.values - data.clean).std().item() == pytest.approx(0.3, rel=0.03)


def test_each_spiral_observes_the_requested_number_of_times_in_both_channels():
    data = irregular_spirals(n=10, n_points=40, n_observed=13, seed=0)
    assert data.mask.shape == (10, 40, 2) and data.mask.dtype == torch.bool
    assert torch.equal(data.mask[..., 0], data.mask[..., 1])
    assert data.mask[..., 0].sum(1).tolist() == [13] * 10
    assert len({tuple(row.nonzero().flatten().tolist()) for row in data.mask[..., 0]}) > 1


def test_periodic_signals_are_sines_at_sorted_irregular_times():
    data = periodic_signals(n=5, n_points=60, n_observed=20, noise=0.0, seed=2, dtype=torch.float64)
    p = data.params
    assert data.times[0] == 0 and (data.times.diff() > 0).all() and data.times[-1] <= 5.0
    gaps = data.times.diff()
    assert gaps.max() > 2 * gaps.min()  # irregular
    expected = p["amplitude"][:, None] * torch.sin(
        2 * math.pi * p["frequency"][:, None] * data.times + p["phase"][:, None]
    )
    assert torch.allclose(data.clean[..., 0], expected, atol=1e-12)
    assert data.mask.shape == (5, 60, 1) and data.mask.sum(1).flatten().tolist() == [20] * 5
    assert ((p["amplitude"] >= 0.5) & (p["amplitude"] <= 1.5)).all()


def test_bad_arguments_are_errors_that_name_the_valid_range():
    with pytest.raises(ValueError, match="n_observed must be at most"):
        irregular_spirals(n=2, n_points=10, n_observed=11)
    with pytest.raises(ValueError, match="below n_total / 2"):
        irregular_spirals(n=2, n_points=600)
    with pytest.raises(ValueError, match="noise"):
        periodic_signals(n=2, noise=-1.0)
    with pytest.raises(ValueError, match="frequency"):
        periodic_signals(n=2, frequency=(2.0, 1.0))
    with pytest.raises(TypeError, match="dtype"):
        periodic_signals(n=2, dtype=torch.int64)
