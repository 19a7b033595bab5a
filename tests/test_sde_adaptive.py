"""Adaptive SDE steps by step doubling (``nde.StepDoubling``): ``solve(SDETerm(...), rtol=,
atol=)`` converges to the exact solution on the same Brownian path as the tolerance shrinks,
rejected steps revisit that path, a stiff transient costs fewer steps than a fixed grid of the
same error, and what adaptive steps cannot do is refused with the fix."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import torchnde as nde

from .sde_helpers import DTYPE

MU, SIGMA = 0.5, 0.8
TS = torch.tensor([0.0, 0.5, 1.0], dtype=DTYPE)


def _gbm(calculus: str, bm: nde.BrownianInterval) -> nde.SDETerm:
    return nde.SDETerm(lambda t, y: MU * y, lambda t, y: SIGMA * y, calculus=calculus, brownian=bm)


def _gbm_exact(calculus: str, w: torch.Tensor) -> torch.Tensor:
    """Geometric Brownian motion from 1 at t = 1 on the path with W(1) = w."""
    drift = MU - (0.5 * SIGMA**2 if calculus == "ito" else 0.0)
    return torch.exp(drift + SIGMA * w)


@pytest.mark.parametrize(
    ("solver", "calculus", "tolerances"),
    [
        ("euler", "ito", (1e-1, 1e-2, 1e-3)),
        ("milstein", "ito", (1e-1, 1e-2, 1e-3, 1e-4)),
        ("srk", "ito", (1e-1, 1e-2, 1e-3, 1e-4)),
        ("heun", "stratonovich", (1e-1, 1e-2, 1e-3, 1e-4)),
    ],
)
def test_the_adaptive_solution_converges_to_the_exact_gbm_on_the_same_path(solver, calculus, tolerances):
    bm = nde.BrownianInterval(0.0, 1.0, (32, 1), dtype=DTYPE, seed=0, levy_area=solver == "srk")
    exact = _gbm_exact(calculus, bm(0.0, 1.0))
    y0 = torch.ones(32, 1, dtype=DTYPE)
    errors = []
    for tol in tolerances:
        sol = nde.solve(_gbm(calculus, bm), y0, TS, solver=solver, rtol=tol, atol=tol)
        errors.append((sol.ys[-1] - exact).abs().mean().item())
    slope = torch.linalg.lstsq(
        torch.tensor([[math.log(t), 1.0] for t in tolerances], dtype=DTYPE),
        torch.tensor([[math.log(e)] for e in errors], dtype=DTYPE),
    ).solution[0, 0]
    assert slope > 0.3, (errors, slope)
    assert errors[-1] < errors[0] / 10, errors


@pytest.mark.parametrize(
    ("solver", "calculus", "noise"),
    [("heun", "stratonovich", "diagonal"), ("milstein", "ito", "scalar"), ("euler", "ito", "general"),
     ("srk", "ito", "diagonal"), ("midpoint", "stratonovich", "general")],
)  # fmt: skip
def test_rejected_steps_revisit_the_same_path(solver, calculus, noise):
    """The adaptive solution equals a fixed-grid solve through its accepted steps and their
    midpoints (the two half steps each accepted step carries on) on the same Brownian motion:
    the rejected attempts in between changed nothing about the path."""
    bm = nde.BrownianInterval(0.0, 1.0, (16, 1), dtype=DTYPE, seed=1, levy_area=solver == "srk")
    g = (
        (lambda t, y: 0.5 * torch.cos(y))
        if noise == "diagonal"
        else (lambda t, y: 0.5 * torch.cos(y).unsqueeze(-1))
    )
    term = nde.SDETerm(
        lambda t, y: torch.sin(3 * t) * y - y**3, g, noise=noise, calculus=calculus, brownian=bm
    )
    y0 = torch.linspace(-1, 1, 16, dtype=DTYPE).reshape(16, 1)
    sol = nde.solve(term, y0, TS, solver=solver, rtol=1e-3, atol=1e-3, save_steps=True)
    assert sol.stats.rejected > 0
    ends = [0.0, *sol.step_ts.tolist()]
    grid = [t for a, b in itertools.pairwise(ends) for t in (0.5 * (a + b), b)]
    fixed = nde.solve(
        term,
        y0,
        TS,
        solver=solver,
        controller=nde.ConstantStep(2.0, step_ts=torch.tensor(grid[:-1], dtype=torch.float64)),
    )
    assert fixed.stats.steps == 2 * sol.stats.accepted
    assert torch.allclose(sol.ys[-1], fixed.ys[-1], rtol=0, atol=1e-12)


def test_a_stiff_transient_takes_fewer_steps_than_a_fixed_grid_of_the_same_error():
    """dy = (sin 2t - y^3) dt + 0.05 dW from y = 6: the drift's rate 3y^2 starts at 108 and
    falls below 3, so fixed steps must be small everywhere (Heun's method is unstable at y = 6
    for h > 2/108) where adaptive steps are small only at first."""
    bm = nde.BrownianInterval(0.0, 4.0, (4, 1), dtype=DTYPE, seed=2, tol=4.0 * 2**-11)
    term = nde.SDETerm(lambda t, y: torch.sin(2 * t) - y**3, lambda t, y: 0.05 * torch.ones(*y.shape, 1, dtype=DTYPE),
                       noise="additive", calculus="stratonovich", brownian=bm)  # fmt: skip
    y0 = torch.full((4, 1), 6.0, dtype=DTYPE)
    ts = torch.tensor([0.0, 4.0], dtype=DTYPE)
    reference = nde.solve(term, y0, ts, solver="heun", dt=4.0 * 2**-11).ys[-1]
    adaptive = nde.solve(term, y0, ts, solver="heun", rtol=1e-2, atol=1e-2)
    error = (adaptive.ys[-1] - reference).abs().max().item()
    for k in range(3, 11):  # the coarsest power-of-two grid at least as accurate
        fixed = nde.solve(term, y0, ts, solver="heun", dt=4.0 * 2**-k, throw=False)
        if (fixed.ys[-1] - reference).abs().max().item() <= error:  # NaN (unstable) compares false
            break
    assert adaptive.stats.steps < fixed.stats.steps / 2, (adaptive.stats, fixed.stats)
    assert adaptive.stats.nfe < fixed.stats.nfe


def test_the_error_order_is_the_inner_strong_order_plus_a_half_for_the_noise():
    assert nde.StepDoubling(nde.EulerMaruyama()).for_noise("diagonal").error_order == 1.0
    assert nde.StepDoubling(nde.EulerMaruyama()).for_noise("additive").error_order == 1.5
    assert nde.StepDoubling(nde.SRK()).for_noise("scalar").error_order == 2.0
    assert nde.StepDoubling(nde.Milstein(), error_order=3.0).for_noise("diagonal").error_order == 3.0
    assert repr(nde.StepDoubling(nde.StochasticHeun())) == "StepDoubling(StochasticHeun())"


def test_a_solve_without_a_brownian_motion_makes_a_brownian_interval_from_torchs_seed():
    term = nde.SDETerm(lambda t, y: -y, lambda t, y: 0.5 * y)
    y0 = torch.ones(8, 2, dtype=DTYPE)
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        runs.append(nde.solve(term, y0, TS, solver="milstein", rtol=1e-3, atol=1e-3))
    assert torch.equal(runs[0].ys, runs[1].ys)
    assert runs[0].stats.rejected > 0


def test_steps_at_dtmin_are_accepted_counted_and_warned_once():
    bm = nde.BrownianInterval(0.0, 1.0, (8, 1), dtype=DTYPE, seed=3)
    y0 = torch.ones(8, 1, dtype=DTYPE)
    ctrl = nde.PIDController(rtol=1e-9, atol=1e-9, dtmin=0.05, on_dtmin="accept")
    with pytest.warns(
        RuntimeWarning, match=r"step\(s\) were accepted at the minimum step size dtmin=0.05"
    ) as seen:
        sol = nde.solve(_gbm("ito", bm), y0, TS, solver="euler", controller=ctrl, save_steps=True)
    assert len(seen) == 1
    assert sol.success and sol.stats.forced >= 19 and sol.stats.forced <= sol.stats.accepted
    steps = torch.diff(torch.cat([torch.zeros(1, dtype=torch.float64), sol.step_ts]))
    assert bool((steps[:-1] >= 0.05 * (1 - 1e-12)).all())  # none below dtmin but the last, landing on t1
    with pytest.raises(nde.SolveError, match="step size"):  # the default: stop there
        nde.solve(
            _gbm("ito", bm), y0, TS, solver="euler", controller=nde.PIDController(1e-9, 1e-9, dtmin=0.05)
        )


def test_what_adaptive_sde_steps_cannot_do_is_refused_with_the_fix():
    y0 = torch.ones(4, 1, dtype=DTYPE)
    path = nde.BrownianPath(0.0, (4, 1), dtype=DTYPE, seed=0)
    term = nde.SDETerm(lambda t, y: -y, lambda t, y: 0.3 * y, calculus="stratonovich", brownian=path)
    with pytest.raises(
        ValueError, match=r"build a BrownianInterval\(t0, t1, \(4, 1\), seed=...\) instead of a BrownianPath"
    ):
        nde.solve(term, y0, TS, solver="heun", rtol=1e-3, atol=1e-3)
    assert nde.solve(term, y0, TS, solver="heun", dt=0.1).success  # fixed steps take the path
    free = nde.SDETerm(lambda t, y: -y, lambda t, y: 0.3 * y, calculus="stratonovich")
    with pytest.raises(ValueError, match=r"'reversible_heun' steps on a fixed grid.*use 'heun'"):
        nde.solve(free, y0, TS, solver="reversible_heun", rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match=r"adaptive SDE steps are for the global layout"):
        nde.solve(free, y0, TS, solver="heun", rtol=1e-3, atol=1e-3, per_sample=True)
    with pytest.raises(ValueError, match=r"an adaptive forward solve has none: pass Adjoint\(dt=...\)"):
        nde.solve(free, y0, TS, solver="heun", rtol=1e-3, atol=1e-3, gradient="adjoint")
    with pytest.raises(TypeError, match="StepDoubling wraps a stochastic solver object"):
        nde.StepDoubling(nde.Tsit5())
    with pytest.raises(ValueError, match=r"on_dtmin='accept' .* pass dtmin"):
        nde.PIDController(on_dtmin="accept")
    with pytest.raises(ValueError, match=r"unknown on_dtmin 'acept'.*Did you mean 'accept'"):
        nde.PIDController(dtmin=0.1, on_dtmin="acept")


def test_adaptive_forward_steps_take_the_stochastic_adjoint_with_fixed_backward_steps():
    theta = torch.tensor(0.7, dtype=DTYPE, requires_grad=True)
    bm = nde.BrownianInterval(0.0, 1.0, (4, 1), dtype=DTYPE, seed=4)
    term = nde.SDETerm(lambda t, y: -theta * y, lambda t, y: 0.2 * torch.ones_like(y), calculus="stratonovich",
                       brownian=bm)  # fmt: skip
    y0 = torch.ones(4, 1, dtype=DTYPE)
    sol = nde.solve(term, y0, TS, solver="heun", rtol=1e-4, atol=1e-4, gradient=nde.Adjoint(dt=2**-8))
    (grad,) = torch.autograd.grad(sol.ys[-1].sum(), theta)
    # y(1) = e^-theta y0 + noise independent of y: d sum y(1) / d theta = -4 e^-theta + O(noise)
    exact = nde.solve(term, y0, TS, solver="heun", rtol=1e-4, atol=1e-4)
    (backprop,) = torch.autograd.grad(exact.ys[-1].sum(), theta)
    assert abs(grad.item() - backprop.item()) < 1e-3 * abs(backprop.item())
