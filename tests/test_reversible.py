"""The reversible Heun method: second order, one evaluation per step, and exactly invertible."""

from __future__ import annotations

import pytest
import torch

import torchnde as nde

from .helpers import expm_solution, fit_slope, linear_problem, piecewise_jump_exact


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


def _jumping(t_jump: float, a: torch.Tensor | float = 1.0):
    def f(t, y):  # +a before t_jump, -a from it on, plus 0.1 y (helpers.piecewise_jump_exact)
        return torch.where(t < t_jump, a, -a) + 0.1 * y

    return f


@pytest.mark.parametrize("backwards", [False, True])
def test_converges_at_second_order_across_a_jump_of_f(backwards):
    # the step landing on the jump ends just short of it, and the next reads f on its far side
    t_jump = 0.37
    ts = torch.tensor([1.0, 0.0] if backwards else [0.0, 1.0], dtype=torch.float64)
    exact = piecewise_jump_exact(t_jump, backwards)
    hs = [2.0**-k for k in range(3, 7)]
    errs = []
    for h in hs:
        ctrl = nde.ConstantStep(h, jump_ts=torch.tensor([t_jump], dtype=torch.float64))
        sol = nde.solve(
            _jumping(t_jump), torch.ones(1, dtype=torch.float64), ts, "reversible_heun", controller=ctrl
        )
        errs.append(abs(float(sol.ys[-1, 0]) - exact))
    assert abs(fit_slope(hs, errs) - 2.0) < 0.2, errs


def test_a_jump_costs_one_more_evaluation():
    ctrl = nde.ConstantStep(0.1, jump_ts=torch.tensor([0.35, 0.75], dtype=torch.float64))
    sol = nde.solve(_jumping(0.35), torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 1.0]), "reversible_heun",
                    controller=ctrl)  # fmt: skip
    assert sol.stats.steps == 11 and sol.stats.nfe == 11 + 1 + 2  # the start, one a step, one a jump


@pytest.mark.parametrize("per_sample", [False, True])
def test_reversible_gradients_equal_backprop_across_jumps(per_sample):
    y0 = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)  # an output on the second jump
    ctrl = nde.ConstantStep(0.05, jump_ts=torch.tensor([0.33, 0.5], dtype=torch.float64))
    grads = []
    for gradient in ("backprop", "reversible"):
        x = y0.clone().requires_grad_()
        a = torch.tensor([0.7, -1.3], dtype=torch.float64, requires_grad=True)
        f = _jumping(0.33, a)

        def g(t, y, f=f, a=a):  # a second jump, at t = 0.5, of a term in y
            return f(t, y) + torch.where(t < 0.5, 0.0, 1.0) * a * torch.sin(y)

        sol = nde.solve(
            g, x, ts, "reversible_heun", controller=ctrl, gradient=gradient, per_sample=per_sample
        )
        loss = (sol.ys.square() * torch.arange(1, 4, dtype=torch.float64).view(3, 1, 1)).sum()
        grads.append(torch.autograd.grad(loss, (x, a)))
    for bp, rev in zip(*grads):
        assert float(bp.abs().max()) > 1e-2
        assert float((rev - bp).abs().max() / bp.abs().max()) < 1e-10
