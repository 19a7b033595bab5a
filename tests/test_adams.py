"""The fixed-step Adams methods: coefficients, orders, the history as explicit state (restarted
when the step size changes), outputs between steps, and gradients through a solve."""

from __future__ import annotations

import math

import pytest
import torch

import torchnde as nde
from torchnde.solvers import AdamsBashforth, AdamsBashforthMoulton, AdamsState
from torchnde.solvers.adams import adams_coefficients

from .helpers import central_difference, fit_slope

NAMES = ["adams_bashforth", "adams_moulton"]


def _logistic(t, y):
    return y * (1 - y)


def _logistic_exact(y0: torch.Tensor, t: float) -> torch.Tensor:
    return 1 / (1 + (1 / y0 - 1) * math.exp(-t))


def test_coefficients_are_the_classical_ones():
    ab4 = torch.tensor(adams_coefficients(4, False), dtype=torch.float64)
    am4 = torch.tensor(adams_coefficients(4, True), dtype=torch.float64)
    torch.testing.assert_close(ab4, torch.tensor([55.0, -59.0, 37.0, -9.0], dtype=torch.float64) / 24)
    torch.testing.assert_close(am4, torch.tensor([9.0, 19.0, -5.0, 1.0], dtype=torch.float64) / 24)
    for k in range(1, 13):  # consistency: the weights of a k-step formula sum to one
        assert abs(sum(adams_coefficients(k, False)) - 1) < 1e-12
        assert abs(sum(adams_coefficients(k, True)) - 1) < 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_global_error_converges_at_the_declared_order_on_a_nonlinear_problem(name):
    solver = nde.solvers.resolve_solver(name)
    y0 = torch.tensor([0.2, 0.7], dtype=torch.float64)
    t1, first = {"adams_bashforth": (4.0, 6), "adams_moulton": (3.0, 5)}[name]  # asymptotic range
    exact = _logistic_exact(y0, t1)
    hs = [t1 * 2.0**-k for k in range(first, first + 4)]
    errs = []
    for h in hs:
        sol = nde.solve(_logistic, y0, torch.tensor([0.0, t1], dtype=torch.float64), solver, dt=h)
        errs.append(float((sol.ys[-1] - exact).abs().max()))
    assert min(errs) > 1e-13, errs  # above round-off
    slope = fit_slope(hs, errs)
    assert abs(slope - solver.order) <= 0.2, f"{name}: slope {slope:.3f}, expected {solver.order}"


@pytest.mark.parametrize("name", NAMES)
def test_the_history_is_explicit_state_and_the_step_leaves_it_unchanged(name):
    solver = nde.solvers.resolve_solver(name)
    f = lambda t, y: -y  # noqa: E731
    y = torch.tensor([1.0, 2.0], dtype=torch.float64)
    state = solver.init_state(nde.ConstantStep(0.1))
    assert state == AdamsState()
    s = 0.0
    for n in range(8):
        res = solver.step(f, s, y, f(s, y), 0.1, False, state)
        assert state.history is not res.state.history or n == 0
        assert len(res.state.history) == min(n + 1, solver.max_order - 1)
        assert res.state.dt == 0.1
        again = solver.step(f, s, y, f(s, y), 0.1, False, state)
        assert torch.equal(again.y1, res.y1)  # the same inputs: the same step
        state, s, y = res.state, s + 0.1, res.y1


@pytest.mark.parametrize("name", NAMES)
def test_a_change_of_step_size_restarts_with_the_starting_method(name):
    solver = nde.solvers.resolve_solver(name)
    f = lambda t, y: -y  # noqa: E731
    y = torch.tensor([1.0, 2.0], dtype=torch.float64)
    history = tuple(f(0.0, y) * (1 + 0.1 * i) for i in range(3))
    rk38 = nde.solvers.resolve_solver("rk38").step(f, 0.0, y, f(0.0, y), 0.05, False).y1
    restarted = solver.step(f, 0.0, y, f(0.0, y), 0.05, False, AdamsState(history, 0.1))
    torch.testing.assert_close(restarted.y1, rk38, rtol=1e-15, atol=0)
    assert len(restarted.state.history) == 1 and restarted.state.dt == 0.05
    kept = type(solver)(restart=False).step(f, 0.0, y, f(0.0, y), 0.05, False, AdamsState(history, 0.1))
    assert len(kept.state.history) == 4  # torchdiffeq 0.2.5's behaviour: the history is kept


@pytest.mark.parametrize("name", NAMES)
def test_a_shortened_last_step_restarts_and_stays_accurate(name):
    """t1 is no multiple of dt: the last step restarts instead of applying equal-step formulas to
    unequal steps (which torchdiffeq 0.2.5 does: ``restart=False``)."""
    y0 = torch.tensor([0.2, 0.7], dtype=torch.float64)
    ts = torch.tensor([0.0, 1.005], dtype=torch.float64)
    cls = type(nde.solvers.resolve_solver(name))
    errors = [
        float(
            (nde.solve(_logistic, y0, ts, cls(restart=r), dt=0.01).ys[-1] - _logistic_exact(y0, 1.005))
            .abs()
            .max()
        )
        for r in (True, False)
    ]
    assert errors[0] < 1e-9 and errors[1] > 100 * errors[0], errors


@pytest.mark.parametrize("name", NAMES)
def test_outputs_between_steps_use_the_hermite_interpolant(name):
    y0 = torch.tensor([0.2, 0.7], dtype=torch.float64)
    ts = torch.linspace(0.0, 1.0, 8, dtype=torch.float64)  # not on the grid of dt = 0.01
    sol = nde.solve(_logistic, y0, ts, name, dt=0.01)
    exact = torch.stack([_logistic_exact(y0, float(t)) for t in ts])
    torch.testing.assert_close(sol.ys, exact, rtol=1e-8, atol=0)


def test_per_sample_is_rejected_and_orders_are_validated():
    with pytest.raises(ValueError):
        nde.solve(
            lambda t, y: -y,
            torch.ones(2, 1),
            torch.tensor([0.0, 1.0]),
            "adams_bashforth",
            dt=0.1,
            per_sample=True,
        )
    with pytest.raises(ValueError):
        AdamsBashforth(max_order=13)
    with pytest.warns(UserWarning):
        AdamsBashforthMoulton(max_order=2)


@pytest.mark.parametrize("gradient", ["backprop", "checkpoint", "adjoint"])
@pytest.mark.parametrize("name", NAMES)
def test_gradients_through_a_solve_match_finite_differences(name, gradient):
    torch.manual_seed(0)
    a = (0.5 * torch.randn(3, 3, dtype=torch.float64)).requires_grad_()
    y0 = torch.tensor([1.0, -0.5, 0.3], dtype=torch.float64)
    ts = torch.linspace(0.0, 1.0, 4, dtype=torch.float64)

    def loss() -> torch.Tensor:
        sol = nde.solve(lambda t, y: torch.tanh(a @ y), y0, ts, name, dt=0.02, gradient=gradient)
        return (sol.ys**2).sum()

    loss().backward()
    for index in [(0, 0), (1, 2), (2, 1)]:
        fd = central_difference(loss, a, index)
        assert abs(float(a.grad[index]) - fd) <= 1e-5 * max(1.0, abs(fd)), (index, float(a.grad[index]), fd)
