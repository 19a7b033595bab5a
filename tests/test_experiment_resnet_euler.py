"""``resnet-euler``: the weight-tied ResNet is Euler's method, the slope helper, and the quick tier."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

import torchnde as nde
from torchnde.experiments import get, run_experiment
from torchnde.experiments.anode import TimeMLP
from torchnde.experiments.resnet_euler import asymptotic_slope, residual_network, two_moons


def _field() -> nn.Module:
    torch.manual_seed(0)
    return TimeMLP(3, 16, activation=nn.Tanh).double()


def test_the_experiment_is_registered_with_its_paper():
    assert "1806.07366" in get("resnet-euler").paper


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_the_weight_tied_network_equals_the_fixed_step_solve_to_round_off(method):
    field, x = _field(), torch.randn(32, 3, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for depth in (1, 3, 16):
        ours = residual_network(field, x, depth, method=method)
        solved = nde.solve(field, x, t, solver=method, dt=1.0 / depth).ys[-1]
        assert (ours - solved).abs().max().item() <= 1e-12


def test_each_block_is_one_euler_step_at_its_own_time():
    # f(t, x) = t: block k adds t_k / L, so x_L = sum_k k / L^2 = (L - 1) / (2 L)
    x = torch.zeros(1, dtype=torch.float64)
    out = residual_network(lambda t, y: t.expand_as(y), x, 5)
    assert out.item() == pytest.approx(4 / 10, abs=1e-15)


def test_deeper_networks_approach_the_exponential_at_the_method_order():
    x = torch.ones(1, dtype=torch.float64)
    for method, order in (("euler", 1), ("rk4", 4)):
        errors = [
            abs(residual_network(lambda t, y: y, x, d, method=method).item() - math.e) for d in (8, 16, 32)
        ]
        slope, _ = asymptotic_slope([8, 16, 32], errors)
        assert slope == pytest.approx(order, abs=0.1)


def test_the_slope_helper_recovers_a_known_power_and_drops_points_outside_the_range():
    depths = [1, 2, 4, 8, 16, 32]
    errors = [3.0 * d**-2.5 for d in depths]
    errors[0] = 1.0  # pre-asymptotic, excluded by min_depth
    errors[-1] = 1e-15  # at the reference's accuracy, excluded by the floor
    slope, used = asymptotic_slope(depths, errors, min_depth=2, floor=1e-12)
    assert slope == pytest.approx(2.5, abs=1e-12)
    assert used == [2, 4, 8, 16]


def test_the_slope_helper_rejects_a_range_with_fewer_than_two_points():
    with pytest.raises(ValueError, match="lower min_depth or floor"):
        asymptotic_slope([1, 2, 4], [1.0, 0.5, 0.25], min_depth=4)
    with pytest.raises(ValueError, match="3 depths but 2 errors"):
        asymptotic_slope([1, 2, 4], [1.0, 0.5])


@pytest.mark.parametrize("bad", [0, -2, 2.0, True])
def test_a_depth_that_is_not_a_positive_integer_is_an_error(bad):
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        residual_network(lambda t, y: y, torch.ones(1), bad)


def test_an_unknown_method_is_an_error_listing_the_valid_ones():
    with pytest.raises(ValueError, match="valid: euler, rk4"):
        residual_network(lambda t, y: y, torch.ones(1), 2, method="rk45")


def test_two_moons_are_balanced_seeded_and_on_their_arcs_without_noise():
    x, y = two_moons(100, noise=0.0, seed=3)
    assert x.shape == (100, 2) and x.dtype == torch.float64 and int(y.sum()) == 50
    upper, lower = x[y == 0], x[y == 1]
    assert torch.allclose(upper.norm(dim=1), torch.ones(50, dtype=torch.float64))
    assert torch.allclose(
        (lower - torch.tensor([1.0, 0.5], dtype=torch.float64)).norm(dim=1),
        torch.ones(50, dtype=torch.float64),
    )
    assert torch.equal(two_moons(100, seed=3)[0], two_moons(100, seed=3)[0])
    assert not torch.equal(two_moons(100, seed=3)[0], two_moons(100, seed=4)[0])


@pytest.mark.slow
def test_quick_tier_meets_every_criterion(tmp_path):
    doc = run_experiment("resnet-euler", quick=True, out=tmp_path, progress=False)
    assert doc["passed"], [c for c in doc["checks"] if not c["passed"]]
    metrics = doc["metrics"]
    for label in ("random", "trained"):
        assert abs(metrics["slopes"][label]["euler"] - 1.0) <= 0.15
        assert max(metrics[f"{label}_max_abs_difference_from_solve"].values()) <= 1e-12
    errors = list(metrics["trained_relative_error"]["euler"].values())
    assert all(b < a for a, b in itertools.pairwise(errors))
    assert (tmp_path / "resnet_euler.png").exists()
