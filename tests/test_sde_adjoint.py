"""The stochastic adjoint (``gradient=Adjoint(...)`` on an SDE term): the backward Stratonovich
solve on the same Brownian path gives the gradient of the forward solve to 1e-3 at small steps,
for every noise type (Itô SDEs through the Stratonovich correction), and refuses what it does
not support before solving."""

from __future__ import annotations

import pytest
import torch

import torchnde as nde

from .sde_helpers import DTYPE, SmallSDE, brownian, relative_error, small_y0

TS = torch.tensor([0.0, 0.25, 1.0], dtype=DTYPE)  # an intermediate output: its gradient joins on the way


def _gradients(sde: SmallSDE, bm, solver: str, gradient, dt: float):
    y0 = small_y0().requires_grad_(True)
    sol = nde.solve(sde.term(bm), y0, TS, solver=solver, dt=dt, gradient=gradient)
    loss = (sol.ys[1:] ** 2).sum() + sol.ys[-1].sin().sum()
    params = [y0, sde.a, sde.b]
    return torch.autograd.grad(loss, params), sol


@pytest.mark.parametrize(
    ("noise", "calculus", "solver"),
    [
        ("diagonal", "stratonovich", "midpoint"),
        ("diagonal", "ito", "srk"),
        ("scalar", "stratonovich", "heun"),
        ("scalar", "ito", "srk"),
        ("additive", "ito", "euler"),
        ("general", "stratonovich", "midpoint"),
    ],
)
def test_adjoint_gradients_agree_with_backprop_on_the_same_path(noise, calculus, solver):
    sde = SmallSDE(noise, calculus)
    bm = brownian(noise, seed=11)
    dt = 2.0**-9
    want, _ = _gradients(sde, bm, solver, "backprop", dt)
    got, sol = _gradients(sde, bm, solver, nde.Adjoint(), dt)
    assert relative_error(got, want) < 1e-3
    assert sol.backward_stats.steps == 2**9  # the forward steps, backwards


def test_the_adjoint_error_shrinks_with_the_step():
    sde = SmallSDE("diagonal", "stratonovich")
    bm = brownian("diagonal", seed=12)
    errors = []
    for dt in (2.0**-4, 2.0**-7):
        want, _ = _gradients(sde, bm, "midpoint", "backprop", dt)
        got, _ = _gradients(sde, bm, "midpoint", "adjoint", dt)
        errors.append(relative_error(got, want))
    assert errors[1] < errors[0] / 4


def test_the_backward_solver_and_step_can_be_chosen():
    sde = SmallSDE("diagonal", "stratonovich")
    bm = brownian("diagonal", seed=13)
    want, _ = _gradients(sde, bm, "midpoint", "backprop", 2.0**-9)
    for strategy in (nde.Adjoint(solver="heun"), nde.Adjoint(solver=nde.StochasticMidpoint(), dt=2.0**-10)):
        got, sol = _gradients(sde, bm, "midpoint", strategy, 2.0**-9)
        assert relative_error(got, want) < 2e-3
    assert sol.backward_stats.steps == 2**10  # Adjoint(dt=...): its own steps
    assert sol.backward_stats.nfe == 4 * sol.backward_stats.steps  # two stages of drift + diffusion


def test_parameters_are_discovered_from_the_drift_and_the_diffusion():
    w = torch.tensor([[-0.5, 0.2], [0.1, -0.3]], dtype=DTYPE, requires_grad=True)
    s = torch.tensor([0.2, 0.4], dtype=DTYPE, requires_grad=True)
    bm = brownian("diagonal", seed=14)
    term = nde.SDETerm(lambda t, y: y @ w.T, lambda t, y: s * torch.cos(y), calculus="stratonovich",
                       brownian=bm)  # fmt: skip
    grads = {}
    for gradient in ("backprop", "adjoint"):
        sol = nde.solve(term, small_y0(), TS, solver="midpoint", dt=2.0**-9, gradient=gradient)
        grads[gradient] = torch.autograd.grad(sol.ys[-1].square().sum(), [w, s])
    assert relative_error(grads["adjoint"], grads["backprop"]) < 1e-3


def test_unsupported_adjoint_options_are_refused_before_solving():
    sde = SmallSDE("general", "ito")
    with pytest.raises(ValueError, match=r"Itô SDEs with general noise.*Stratonovich form"):
        nde.solve(sde.term(None), small_y0(), TS, solver="euler", dt=0.1, gradient="adjoint")
    strat = SmallSDE("diagonal", "stratonovich").term(None)
    with pytest.raises(ValueError, match=r"fixed steps: Adjoint\(rtol, atol=...\)"):
        nde.solve(
            strat, small_y0(), TS, solver="midpoint", dt=0.1, gradient=nde.Adjoint(rtol=1e-3, atol=1e-3)
        )
    with pytest.raises(ValueError, match=r"Adjoint\(solver='rk4'\).*supports 'heun', 'midpoint'"):
        nde.solve(strat, small_y0(), TS, solver="midpoint", dt=0.1, gradient=nde.Adjoint(solver="rk4"))


def test_without_grad_the_adjoint_solve_is_the_plain_solve():
    sde = SmallSDE("diagonal", "stratonovich")
    bm = brownian("diagonal", seed=15)
    with torch.no_grad():
        plain = nde.solve(sde.term(bm), small_y0(), TS, solver="heun", dt=0.01)
        adjoint = nde.solve(sde.term(bm), small_y0(), TS, solver="heun", dt=0.01, gradient="adjoint")
    assert torch.equal(plain.ys, adjoint.ys)
