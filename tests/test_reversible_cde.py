"""Reversible Heun on a CDE over a piecewise linear control, whose slope jumps at every knot:
stepped with the control's increments, it converges at second order (with several steps per
piece or one), reads the right piece on either side of a knot, costs one evaluation per step,
and stays algebraically reversible across knots (float64)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import torchnde as nde

from .helpers import fit_slope

F64 = torch.float64


def _data(batch: int = 2, knots: int = 9, seed: int = 0) -> torch.Tensor:
    """``[batch, knots, 2]``: time in channel 0, a random walk in channel 1 (slopes jump)."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(knots, dtype=F64).view(1, -1, 1).expand(batch, -1, 1)
    walk = torch.randn(batch, knots, 1, dtype=F64, generator=gen).cumsum(1) * 0.5
    return torch.cat([t, walk], -1)


def _field(grad: bool = False):
    gen = torch.Generator().manual_seed(1)
    w = (torch.randn(3, 6, dtype=F64, generator=gen) / 4).requires_grad_(grad)
    b = (torch.randn(6, dtype=F64, generator=gen) / 4).requires_grad_(grad)

    def f(t, z):  # [..., 3] -> [..., 3, 2]: nonlinear, time-dependent, non-commuting columns
        return torch.tanh(z @ w + b + 0.1 * t).view(*z.shape, 2)

    return f, (w, b)


def _z0(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, dtype=F64, generator=torch.Generator().manual_seed(2))


def _reference(term: nde.CDETerm, z0: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    return nde.solve(term, z0, ts, solver="dopri5", rtol=1e-11, atol=1e-11).ys


@pytest.mark.parametrize("backwards", [False, True])
def test_converges_at_second_order_as_the_step_shrinks_across_the_knots(backwards):
    f, _ = _field()
    term = nde.CDETerm(f, nde.LinearPath(_data()))
    ts = torch.tensor([8.0, 0.0] if backwards else [0.0, 8.0], dtype=F64)
    exact = _reference(term, _z0(), ts)[-1]
    hs = [2.0**-k for k in range(3, 7)]
    errs = []
    for h in hs:
        y = nde.solve(term, _z0(), ts, solver="reversible_heun", dt=h).ys[-1]
        errs.append(float((y - exact).abs().max()))
    assert abs(fit_slope(hs, errs) - 2.0) < 0.2, errs
    assert errs[-1] < 1e-3


def test_converges_at_second_order_with_one_step_per_piece():
    # the same smooth curve sampled ever more finely: every step crosses one piece exactly, and
    # each step's end is a knot where the slope changes
    f, _ = _field()
    z0 = _z0()
    hs, errs = [], []
    for n in (16, 32, 64, 128):
        t = torch.linspace(0, 4, n + 1, dtype=F64)
        x = torch.stack([torch.stack([t, torch.sin(2 * t)], -1), torch.stack([t, torch.cos(3 * t)], -1)])
        term = nde.CDETerm(f, nde.LinearPath(x, t))
        ts = t[[0, -1]]
        sol = nde.solve(term, z0, ts, solver="reversible_heun", dt=4 / n)
        assert sol.stats.steps == n
        errs.append(float((sol.ys[-1] - _reference(term, z0, ts)[-1]).abs().max()))
        hs.append(4 / n)
    assert abs(fit_slope(hs, errs) - 2.0) < 0.2, errs


def test_one_evaluation_per_step():
    f, _ = _field()
    term = nde.CDETerm(f, nde.LinearPath(_data()))
    sol = nde.solve(term, _z0(), torch.tensor([0.0, 8.0], dtype=F64), solver="reversible_heun", dt=0.5)
    assert sol.stats.steps == 16 and sol.stats.nfe == 17  # the method's start, then one a step


@pytest.mark.parametrize("per_sample", [False, True])
def test_an_output_at_a_knot_equals_the_solve_on_the_path_cut_there(per_sample):
    # the step landing on the knot at t = 3 must read the piece before it, the next the piece after
    f, _ = _field()
    x = _data()
    whole = nde.solve(nde.CDETerm(f, nde.LinearPath(x)), _z0(), torch.tensor([0.0, 3.0, 8.0], dtype=F64),
                      solver="reversible_heun", dt=1.0, per_sample=per_sample)  # fmt: skip
    cut = nde.solve(nde.CDETerm(f, nde.LinearPath(x[:, :4])), _z0(), torch.tensor([0.0, 3.0], dtype=F64),
                    solver="reversible_heun", dt=1.0, per_sample=per_sample)  # fmt: skip
    assert float((whole.ys[1] - cut.ys[-1]).abs().max()) < 1e-14
    assert float((whole.ys[1] - _z0()).abs().max()) > 0.1  # it went somewhere


@pytest.mark.parametrize("per_sample", [False, True])
def test_reversible_gradients_equal_backprop_across_knots(per_sample):
    f, (w, b) = _field(grad=True)
    x0, z00 = _data(), _z0()
    ts = torch.tensor([0.0, 2.5, 5.0, 8.0], dtype=F64)  # outputs between knots and on one
    grads = []
    for gradient in ("backprop", "reversible"):
        x, z0 = x0.clone().requires_grad_(), z00.clone().requires_grad_()
        term = nde.CDETerm(f, nde.LinearPath(x))
        sol = nde.solve(
            term, z0, ts, solver="reversible_heun", dt=0.5, gradient=gradient, per_sample=per_sample
        )
        loss = (sol.ys.square() * torch.arange(1, 4, dtype=F64)).sum()
        grads.append(torch.autograd.grad(loss, (z0, x, w, b)))
    for bp, rev in zip(*grads):
        assert float(bp.abs().max()) > 1e-3  # each input matters
        assert float((rev - bp).abs().max() / bp.abs().max()) < 1e-10


def test_reconstructs_the_initial_state_after_1000_steps_over_200_knots():
    solver = nde.ReversibleHeun()
    f, _ = _field()
    knots = torch.linspace(0, 50, 201, dtype=F64)  # a knot every 0.25, five steps of 0.05 apart
    walk = torch.randn(2, 201, 1, dtype=F64, generator=torch.Generator().manual_seed(4)).cumsum(1) * 0.3
    path = nde.LinearPath(torch.cat([knots.view(1, -1, 1).expand(2, -1, 1), walk], -1), knots)
    field, increment, product = nde.CDETerm(f, path).lower_controlled()

    def func(s, z):
        raise AssertionError("the controlled form never evaluates the lowered field")

    # the controlled form's protocol (func.control), in the user's time
    func.control = SimpleNamespace(
        field=lambda s, z: field(torch.tensor(s, dtype=F64), z), increment=increment, product=product
    )
    y0 = _z0()
    y, state, h = y0, None, 0.05
    for k in range(1000):
        res = solver.step(func, k * h, y, None, h, state=state)
        y, state = res.y1, res.state
    assert float((y - y0).abs().max()) > 0.1  # it went somewhere
    for k in range(1000, 0, -1):
        y, state = solver.reverse_step(func, k * h, y, state, h)
    assert float((y - y0).norm() / y0.norm()) < 1e-10
    assert float((state.z - y0).norm() / y0.norm()) < 1e-10
