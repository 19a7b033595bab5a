"""Convergence orders are asserted: the log-log slope of error against dt is the declared order."""

from __future__ import annotations

import pytest
import torch

import torchnde as nde

from .helpers import GENERAL_SOLVERS, expm_solution, fit_slope, linear_problem

_A = torch.tensor([[-0.1, 2.0, 0.0], [-2.0, -0.1, 0.5], [0.0, -0.5, -0.2]], dtype=torch.float64)
_Y0 = torch.tensor([1.0, 0.5, -0.3], dtype=torch.float64)


def _slope_near_roundoff(run, hs, floor):
    """Slope over the four finest step sizes whose error is still above round-off (``floor``):
    the most asymptotic part of the curve. Refinement stops earlier once four step sizes in a
    row give local slopes within 0.1 of each other (the asymptotic regime: a low-order method
    would otherwise halve the step until 2^14 steps without reaching round-off)."""
    kept_h, kept_e = [], []
    for h in hs:
        err = run(h)
        if err <= floor:
            break
        kept_h.append(h)
        kept_e.append(err)
        if len(kept_h) >= 4:
            n = len(kept_h)
            local = [fit_slope(kept_h[i - 1 : i + 1], kept_e[i - 1 : i + 1]) for i in range(n - 3, n)]
            if max(local) - min(local) < 0.1:
                break
    assert len(kept_h) >= 4, f"too few usable step sizes: {list(zip(kept_h, kept_e))}"
    return fit_slope(kept_h[-4:], kept_e[-4:])


@pytest.mark.parametrize("name", GENERAL_SOLVERS)
def test_global_error_converges_at_declared_order(name):
    """``y' = A y`` on [0, 4] against ``expm(4 A) y0`` with dt = 4 / 2^k."""
    solver = nde.solvers.resolve_solver(name)
    t1 = 4.0
    exact = expm_solution(_A, _Y0, t1)

    def run(h):
        sol = nde.solve(lambda t, y: _A @ y, _Y0, torch.tensor([0.0, t1]), solver, dt=h, max_steps=10**6)
        return float((sol.ys[-1] - exact).abs().max())

    slope = _slope_near_roundoff(run, [t1 * 2.0**-k for k in range(2, 15)], floor=1e-12)
    want = _LINEAR_ORDER.get(name, solver.order)
    assert abs(slope - want) <= 0.2, f"{name}: slope {slope:.3f}, expected {want}"


# On a linear constant-coefficient problem a Rosenbrock method is its stability function, which
# Rodas5P's coefficients make a sixth-order approximation of exp; its fifth (nonlinear) order
# is asserted on a nonlinear problem in tests/test_stiff.py. Prince–Dormand 8(7)'s stability
# polynomial misses exp's z^9 coefficient by only 0.13%, so on this problem its ninth-order term
# dominates down to round-off; its eighth order is asserted on a nonlinear problem in
# tests/test_prince_dormand.py.
_LINEAR_ORDER = {"rodas5p": 6, "rk87pd": 9}


@pytest.mark.parametrize("name", GENERAL_SOLVERS)
def test_dense_output_converges_at_its_own_order(name):
    """One step from the exact state; the interpolant inside the step has local error
    O(dt^(q+1)) for a continuous extension of order q."""
    solver = nde.solvers.resolve_solver(name)
    a, y0 = linear_problem(seed=1)
    theta = 0.37

    def run(h):
        ts = torch.tensor([0.0, theta * h, h], dtype=torch.float64)
        sol = nde.solve(lambda t, y: a @ y, y0, ts, solver, dt=h)
        return float((sol.ys[1] - expm_solution(a, y0, theta * h)).abs().max())

    slope = _slope_near_roundoff(run, [2.0**-k for k in range(-1, 14)], floor=_DENSE_FLOOR.get(name, 1e-14))
    want = solver.dense_order + 1
    assert abs(slope - want) <= 0.2, f"{name}: local dense slope {slope:.3f}, expected {want}"


# Prince–Dormand 8(7)'s sixth-degree extension reaches its asymptotic ratio (64 per halving) only
# below 1e-12 here (45, 56, 60, 66 from dt = 1/2 on): its slope is read down to 1e-15.
_DENSE_FLOOR = {"rk87pd": 1e-15}


def test_dense_orders_are_the_published_ones():
    orders = {n: nde.solvers.resolve_solver(n).dense_order for n in ("dopri5", "tsit5", "dopri8", "rk4")}
    assert orders == {"dopri5": 4, "tsit5": 4, "dopri8": 7, "rk4": 3}
