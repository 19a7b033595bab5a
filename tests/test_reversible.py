"""The reversible Heun method: second order, one evaluation per step, and exactly invertible."""

from __future__ import annotations

import pytest
import torch

import torchnde as nde

from .helpers import expm_solution, fit_slope, linear_problem


def _field():
    gen = torch.Generator().manual_seed(3)
    w1 = torch.randn(3, 16, dtype=torch.float64, generator=gen) / 2
    w2 = torch.randn(16, 3, dtype=torch.float64, generator=gen) / 4

    def f(t, y):
        return torch.tanh(y @ w1) @ w2 - 0.1 * y + torch.sin(t)

    return f


def test_reconstructs_the_initial_state_after_1000_steps():
    solver = nde.ReversibleHeun()
    f = _field()
    y0 = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    h = 0.01
    t0 = torch.tensor(0.0, dtype=torch.float64)
    y, f0, state = y0, f(t0, y0), None
    for k in range(1000):
        res = solver.step(f, torch.tensor(k * h, dtype=torch.float64), y, f0, h, state=state)
        y, f0, state = res.y1, res.f1, res.state
    assert float((y - y0).abs().max()) > 0.1  # it went somewhere
    for k in range(1000, 0, -1):
        y, state = solver.reverse_step(f, torch.tensor(k * h, dtype=torch.float64), y, state, h)
    rel = float((y - y0).norm() / y0.norm())
    assert rel < 1e-10, rel
    assert float((state.z - y0).norm() / y0.norm()) < 1e-10


def test_gradient_pass_rebuilds_the_trajectory():
    """After a Reversible backward pass of 1000 steps, the gradient with respect to y0 equals
    Backprop's: it was computed from the rebuilt states."""
    f = _field()
    y0 = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ts = torch.tensor([0.0, 10.0], dtype=torch.float64)
    grads = []
    for gradient in ("backprop", "reversible"):
        x = y0.clone().requires_grad_()
        sol = nde.solve(f, x, ts, "reversible_heun", dt=0.01, gradient=gradient, max_steps=2000)
        assert sol.stats.steps == 1000
        (g,) = torch.autograd.grad(sol.ys[-1].square().sum(), x)
        grads.append(g)
    assert float((grads[1] - grads[0]).norm() / grads[0].norm()) < 1e-10


def test_converges_at_second_order():
    a, y0 = linear_problem()
    exact = expm_solution(a, y0, 2.0)
    hs = [2.0**-k for k in range(3, 8)]
    errs = []
    for h in hs:
        sol = nde.solve(
            lambda t, y: a @ y, y0, torch.tensor([0.0, 2.0], dtype=torch.float64), "reversible_heun", dt=h
        )
        errs.append(float((sol.ys[-1] - exact).abs().max()))
    assert abs(fit_slope(hs, errs) - 2.0) < 0.2


def test_outputs_are_stepped_onto():
    sol = nde.solve(lambda t, y: -y, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 0.25, 1.0]),
                    "reversible_heun", dt=0.1)  # fmt: skip
    # 0 -> 0.25 in 3 steps (0.1, 0.1, 0.05), 0.25 -> 1 in 8 steps
    assert sol.stats.steps == 11 and sol.stats.nfe == 12


def test_adaptive_control_is_rejected_with_a_fix():
    with pytest.raises(ValueError, match="ConstantStep"):
        nde.solve(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0]), "reversible_heun",
                  controller=nde.PIDController(1e-3, 1e-6))  # fmt: skip
