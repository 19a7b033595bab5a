"""Ornstein–Uhlenbeck and geometric Brownian motion sample paths and their analytic moments."""

from __future__ import annotations

import math

import pytest
import torch

from torchnde.datasets import (
    GeometricBrownianMotion,
    OrnsteinUhlenbeck,
    geometric_brownian_motion,
    ornstein_uhlenbeck,
)

N = 20000


def test_ou_paths_are_time_first_on_an_even_grid_from_zero():
    data = ornstein_uhlenbeck(n=7, t_end=2.0, steps=5, seed=0)
    assert data.paths.shape == (5, 7, 1)
    assert data.t.tolist() == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])
    assert data.mean.shape == data.std.shape == (5,)
    assert data.paths.dtype == torch.float32


def test_the_same_seed_gives_the_same_paths_and_another_seed_other_paths():
    a = ornstein_uhlenbeck(n=16, seed=3).paths
    b = ornstein_uhlenbeck(n=16, seed=3).paths
    c = ornstein_uhlenbeck(n=16, seed=4).paths
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_generating_leaves_the_global_generator_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    geometric_brownian_motion(n=10, seed=1)
    ornstein_uhlenbeck(n=10, seed=1)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("slope", [0.0, 1.0])
def test_ou_sample_mean_and_std_match_the_analytic_moments(slope):
    data = ornstein_uhlenbeck(n=N, t_end=3.0, steps=7, slope=slope, seed=0, dtype=torch.float64)
    y = data.paths[..., 0]
    stderr_mean = data.std / math.sqrt(N)
    assert ((y.mean(1) - data.mean).abs() <= 4 * stderr_mean).all()
    # the sample std of a Gaussian has standard error std / sqrt(2 N)
    assert ((y.std(1) - data.std).abs() <= 4 * data.std / math.sqrt(2 * N)).all()


def test_ou_mean_and_variance_solve_their_moment_equations():
    # m' = theta (mu - m) + kappa t and v' = -2 theta v + sigma^2, by central differences
    ou = OrnsteinUhlenbeck(theta=0.7, mu=0.3, sigma=0.5, slope=0.4, y0_mean=-1.0, y0_std=0.2)
    t = torch.linspace(0.1, 4.0, 9, dtype=torch.float64)
    h = 1e-5
    dm = (ou.mean(t + h) - ou.mean(t - h)) / (2 * h)
    dv = (ou.std(t + h) ** 2 - ou.std(t - h) ** 2) / (2 * h)
    assert torch.allclose(dm, 0.7 * (0.3 - ou.mean(t)) + 0.4 * t, atol=1e-8)
    assert torch.allclose(dv, -1.4 * ou.std(t) ** 2 + 0.25, atol=1e-8)
    zero = torch.zeros(1, dtype=torch.float64)
    assert ou.mean(zero).item() == pytest.approx(-1.0)
    assert ou.std(zero).item() == pytest.approx(0.2)


def test_ou_paths_have_the_exact_autocorrelation_between_two_times():
    # Cov(Y(s), Y(t)) = exp(-theta (t - s)) Var Y(s) for s < t
    data = ornstein_uhlenbeck(n=N, t_end=2.0, steps=3, theta=1.5, seed=2, dtype=torch.float64)
    y = data.paths[..., 0]
    dev = y - y.mean(1, keepdim=True)
    cov = (dev[1] * dev[2]).mean()
    expected = math.exp(-1.5 * 1.0) * data.std[1] ** 2
    assert abs(cov - expected) < 0.05 * data.std[1] * data.std[2]


def test_gbm_sample_moments_and_log_mean_match_the_closed_form():
    data = geometric_brownian_motion(n=N, t_end=1.0, steps=5, mu=0.5, sigma=0.3, seed=0, dtype=torch.float64)
    y = data.paths[..., 0]
    assert ((y.mean(1) - data.mean).abs() <= 4 * data.std / math.sqrt(N)).all()
    assert torch.allclose(y.std(1), data.std, rtol=0.03)
    # log Y(t) = (mu - sigma^2 / 2) t + sigma W(t): Gaussian with that mean and std sigma sqrt(t)
    log = y.log()
    assert torch.allclose(log.mean(1), (0.5 - 0.045) * data.t, atol=4 * 0.3 / math.sqrt(N))
    assert torch.allclose(log.std(1), 0.3 * data.t.sqrt(), atol=0.01)


def test_gbm_moments_at_time_zero_are_the_start_value_and_no_spread():
    gbm = GeometricBrownianMotion(mu=0.1, sigma=0.2, y0=2.0)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    assert gbm.mean(t).tolist() == pytest.approx([2.0, 2.0 * math.exp(0.2)])
    assert gbm.std(t).tolist() == pytest.approx([0.0, 2.0 * math.exp(0.2) * math.sqrt(math.exp(0.08) - 1)])


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: OrnsteinUhlenbeck(theta=0.0), "theta"),
        (lambda: OrnsteinUhlenbeck(sigma=-1.0), "sigma"),
        (lambda: GeometricBrownianMotion(y0=0.0), "y0"),
        (lambda: ornstein_uhlenbeck(steps=1), "steps"),
        (lambda: ornstein_uhlenbeck(t_end=-1.0), "t_end"),
        (lambda: OrnsteinUhlenbeck().mean(torch.tensor([-1.0])), "times"),
        (lambda: OrnsteinUhlenbeck().sample(3, torch.tensor([1.0, 0.5])), "increasing"),
    ],
)
def test_bad_parameters_are_rejected_naming_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_an_integer_dtype_is_rejected():
    with pytest.raises(TypeError, match="floating"):
        ornstein_uhlenbeck(n=3, dtype=torch.int64)
