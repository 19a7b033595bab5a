"""Prince–Dormand RK8(7)13M (``rk87pd``, torchdiffeq's ``dopri8``): its eighth order on a
nonlinear problem (the registry-wide order tests see a linear one, where its ninth-order term
dominates), its first-same-as-last stage, and its continuous extension's end conditions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

import torchnde as nde


def _pendulum(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A forced nonlinear pendulum."""
    return torch.stack([y[1], -torch.sin(y[0]) + 0.3 * torch.cos(t) * y[1] ** 2])


Y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
TS = torch.tensor([0.0, 4.0], dtype=torch.float64)


def test_global_error_is_eighth_order_on_a_nonlinear_problem():
    exact = nde.solve(_pendulum, Y0, TS, "dopri8", rtol=1e-14, atol=1e-15).ys[-1]
    errors = [
        float((nde.solve(_pendulum, Y0, TS, "rk87pd", dt=h).ys[-1] - exact).abs().max())
        for h in (1.0, 0.5, 0.25)
    ]
    slopes = [math.log2(a / b) for a, b in itertools.pairwise(errors)]
    assert all(7.6 < s < 8.8 for s in slopes), (errors, slopes)


def test_thirteen_evaluations_a_step_with_the_last_stage_reused():
    solver = nde.PrinceDormand87()
    assert solver.tableau.stages == 14 and solver.tableau.fsal and solver.evaluations_per_step == 13
    sol = nde.solve(_pendulum, Y0, TS, solver, dt=0.5)
    assert sol.stats.nfe == 1 + 13 * 8  # f(t0, y0), then 13 a step


def test_the_continuous_extension_ends_on_y1_with_slope_f1_and_starts_with_f0():
    """Weights w(theta) = P @ [theta, ..., theta^6]: w(1) = b (the step's y1), w'(1) the FSAL
    stage f1, w'(0) the first stage f0 (to the round-off of coefficients up to 120)."""
    p = nde.PrinceDormand87.interpolant.coefficients  # [14 stages, theta^1..theta^6]
    b = np.array(nde.PrinceDormand87.tableau.b)
    assert np.abs(p.sum(1) - b).max() < 1e-13
    assert np.abs(p @ np.arange(1.0, 7.0) - np.eye(14)[13]).max() < 1e-12
    assert np.array_equal(p[:, 0], np.eye(14)[0])


def test_outputs_between_steps_are_fifth_order_accurate_locally():
    """One step of size h from the exact state, read at 0.37 h: the error falls 2^6-fold per
    halving once asymptotic (order 5)."""
    a = torch.tensor([[-0.1, 2.0, 0.0], [-2.0, -0.1, 0.5], [0.0, -0.5, -0.2]], dtype=torch.float64)
    y0 = torch.tensor([1.0, 0.5, -0.3], dtype=torch.float64)
    errors = []
    for h in (0.5, 0.25):
        sol = nde.solve(
            lambda t, y: a @ y, y0, torch.tensor([0.0, 0.37 * h, h], dtype=torch.float64), "rk87pd", dt=h
        )
        errors.append(float((sol.ys[1] - torch.linalg.matrix_exp(a * 0.37 * h) @ y0).abs().max()))
    assert 5.5 < math.log2(errors[0] / errors[1]) < 6.5, errors
