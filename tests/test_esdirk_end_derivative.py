"""The end derivative of an ESDIRK step: ``StepResult.f1`` is the last stage's derivative
recovered from the Newton solution, not ``f(t1, y1)``, so the solvers do not declare it exact;
it starts the next step (FSAL) and is the slope of the continuous extension at the step's end."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import torchnde as nde
from torchnde.solvers import ImplicitState

ESDIRKS = [nde.solvers.Kvaerno3, nde.solvers.Kvaerno4, nde.solvers.Kvaerno5]


def robertson(t, y):
    a, b, c = y.unbind(-1)
    return torch.stack([-0.04 * a + 1e4 * b * c, 0.04 * a - 1e4 * b * c - 3e7 * b * b, 3e7 * b * b], -1)


def robertson_np(t, y):
    a, b, c = y
    return [-0.04 * a + 1e4 * b * c, 0.04 * a - 1e4 * b * c - 3e7 * b * b, 3e7 * b * b]


def robertson_jac(t, y):
    _, b, c = y
    return [[-0.04, 1e4 * c, 1e4 * b], [0.04, -1e4 * c - 6e7 * b, -1e4 * b], [0.0, 6e7 * b, 0.0]]


@functools.cache
def reference(ts: tuple[float, ...]) -> np.ndarray:
    """Robertson at ``ts`` by scipy's Radau at rtol 1e-10."""
    return solve_ivp(robertson_np, (0.0, ts[-1]), [1.0, 0.0, 0.0], method="Radau", rtol=1e-10, atol=1e-14,
                     jac=robertson_jac, t_eval=ts).y.T  # fmt: skip


@pytest.mark.parametrize("cls", ESDIRKS, ids=lambda c: c.name)
def test_esdirk_f1_solves_the_last_stage_equation_where_f_at_the_end_leaves_the_newton_residual(cls):
    # one step of 0.1 from Robertson's state at t = 1 (rtol 1e-6 Newton tolerance, as in a solve)
    y0 = torch.tensor([0.96646, 3.0746e-05, 0.033510], dtype=torch.float64)
    solver = cls()
    tab = solver.tableau
    h = 0.1
    res = solver.step(robertson, 1.0, y0, robertson(1.0, y0), h, True, ImplicitState(1e-6, 1e-10))
    assert res.converged is True
    assert solver.fsal and not solver.f1_exact
    assert torch.equal(res.f1, res.ks[-1])
    base = y0 + sum(h * a * k for a, k in zip(tab.a_matrix[-1][:-1], res.ks[:-1]))
    recovered = float((base + h * tab.gamma * res.f1 - res.y1).abs().max())
    exact = float((base + h * tab.gamma * robertson(1.1, res.y1) - res.y1).abs().max())
    assert recovered < 1e-15  # the last stage's equation, to rounding
    assert exact > 1e-13  # f(t1, y1) in its place leaves the Newton residual (~1e-11 here)


@pytest.mark.parametrize("cls", [nde.solvers.Kvaerno3, nde.solvers.Kvaerno5], ids=lambda c: c.name)
def test_esdirk_dense_output_costs_no_end_evaluations_and_leaves_the_steps_unchanged(cls):
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    ts = torch.cat([torch.zeros(1, dtype=torch.float64), torch.logspace(-4, 2, 25, dtype=torch.float64)])
    with torch.no_grad():
        many = nde.solve(robertson, y0, ts, cls(), rtol=1e-6, atol=1e-10)
        ends = nde.solve(robertson, y0, ts[[0, -1]], cls(), rtol=1e-6, atol=1e-10)
    assert many.stats.steps == ends.stats.steps
    assert many.stats.nfe == ends.stats.nfe  # the end slope is the step's own: no f(t1, y1)
    assert torch.equal(many.ys[-1], ends.ys[-1])
    ref = reference(tuple(ts.tolist()))
    scale = np.abs(ref).max(0)  # each component against its own size (y2 peaks at 3.6e-5)
    err = np.abs(many.ys.numpy() - ref) / scale
    assert err.max() < 2e-4, err.max(0)
