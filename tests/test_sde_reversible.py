"""``gradient="reversible"`` with the stochastic reversible Heun method: the backward pass
rebuilds every step's start from its end on the same Brownian increments, so the gradient is
Backprop's on the same steps to round-off, and the memory held between the passes does not grow
with the number of steps."""

from __future__ import annotations

import itertools

import pytest
import torch

import torchnde as nde

from .sde_helpers import DTYPE, SmallSDE, brownian, small_y0

TS = torch.tensor([0.0, 0.3, 1.0], dtype=DTYPE)  # 0.3 joins the step grid: outputs are stepped onto


@pytest.mark.parametrize("noise", ["diagonal", "scalar", "additive", "general"])
def test_reversible_gradients_equal_backprop_on_the_same_steps(noise):
    sde = SmallSDE(noise, "stratonovich")
    bm = brownian(noise, seed=21)
    grads = {}
    for gradient in ("backprop", "reversible"):
        y0 = small_y0().requires_grad_(True)
        sol = nde.solve(sde.term(bm), y0, TS, solver="reversible_heun", dt=2.0**-6, gradient=gradient)
        loss = (sol.ys[1:] ** 2).sum() + sol.ys[-1].sin().sum()
        grads[gradient] = torch.autograd.grad(loss, [y0, sde.a, sde.b])
    for got, want in zip(grads["reversible"], grads["backprop"]):
        assert float((got - want).norm() / want.norm()) < 1e-10
    assert sol.stats.steps == 65 and sol.backward_stats.steps == 65  # 64 steps of 2^-6, one split at 0.3


def test_the_initial_state_is_reconstructed_after_1000_steps():
    sde = SmallSDE("general", "stratonovich")
    bm = nde.BrownianInterval(0.0, 10.0, (8, 3), dtype=DTYPE, seed=22, tol=1e-6)
    solver = nde.StochasticReversibleHeun()
    ts = torch.tensor([0.0, 10.0], dtype=DTYPE)
    problem = nde._loop.Problem.build(sde.f, small_y0(), ts, per_sample=False)
    problem.sde = nde._loop.sde.bind_sde(sde.term(bm), problem, solver, None)
    func = problem.func()
    grid = nde._loop.reversible.step_grid([0.0, 10.0], 0.01, [])  # the same float times both ways
    y, state = small_y0(), None
    with torch.no_grad():
        for s0, s1 in itertools.pairwise(grid):
            res = solver.step(func, s0, y, func(s0, y), s1 - s0, False, state)
            y, state = res.y1, res.state
        assert len(grid) == 1001 and float((y - small_y0()).abs().max()) > 0.1  # it went somewhere
        for s1, s0 in itertools.pairwise(reversed(grid)):
            y, state = solver.reverse_step(func, s1, y, state, s1 - s0)
    scale = small_y0().norm()
    assert float((y - small_y0()).norm() / scale) < 1e-10
    assert float((state.z - small_y0()).norm() / scale) < 1e-10


def test_the_gradient_pass_over_1000_steps_matches_backprop():
    sde = SmallSDE("diagonal", "stratonovich")
    bm = nde.BrownianInterval(0.0, 10.0, (8, 2), dtype=DTYPE, seed=23, tol=1e-6)
    ts = torch.tensor([0.0, 10.0], dtype=DTYPE)
    grads = []
    for gradient in ("backprop", "reversible"):
        y0 = small_y0().requires_grad_(True)
        sol = nde.solve(sde.term(bm), y0, ts, "reversible_heun", dt=0.01, gradient=gradient, max_steps=2000)
        (g,) = torch.autograd.grad(sol.ys[-1].square().sum(), y0)
        grads.append(g)
    assert sol.backward_stats.steps == 1000
    assert float((grads[1] - grads[0]).norm() / grads[0].norm()) < 1e-10


def _memory(gradient: str, steps: int) -> nde.GraphMemory:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4)).double()
    sigma = torch.nn.Parameter(torch.full((4,), 0.2, dtype=DTYPE))
    bm = nde.BrownianInterval(0.0, 1.0, (16, 4), dtype=DTYPE, seed=24)
    term = nde.SDETerm(
        lambda t, y: net(y), lambda t, y: sigma * torch.tanh(y), calculus="stratonovich", brownian=bm
    )
    y0 = torch.randn(16, 4, dtype=DTYPE, generator=torch.Generator().manual_seed(1))
    ts = torch.tensor([0.0, 1.0], dtype=DTYPE)

    def forward():
        return nde.solve(term, y0, ts, "reversible_heun", dt=1.0 / steps, gradient=gradient).ys

    forward()  # the Brownian interval's cache is filled once, outside the measurement
    return nde.graph_memory(forward, lambda ys: ys.square().sum().backward())


def test_memory_held_for_the_backward_pass_does_not_grow_with_the_steps():
    few, many = _memory("reversible", 8), _memory("reversible", 128)
    assert many.retained_bytes <= 1.2 * few.retained_bytes
    assert many.saved_bytes == few.saved_bytes  # the final y and solver state, whatever the steps
    backprop_few, backprop_many = _memory("backprop", 8), _memory("backprop", 128)
    assert backprop_many.retained_bytes >= 10 * backprop_few.retained_bytes
    assert many.retained_bytes < backprop_many.retained_bytes / 20


def test_reversible_needs_the_reversible_solver_and_checkpoint_equals_backprop():
    sde = SmallSDE("diagonal", "stratonovich")
    with pytest.raises(ValueError, match=r"needs an algebraically reversible solver.*'reversible_heun'"):
        nde.solve(sde.term(None), small_y0(), TS, solver="midpoint", dt=0.1, gradient="reversible")
    with pytest.raises(ValueError, match=r"not Checkpoint\(checkpoints=...\)"):
        nde.solve(
            sde.term(None), small_y0(), TS, "reversible_heun", dt=0.1, gradient=nde.Checkpoint(checkpoints=2)
        )
    bm = brownian("diagonal", seed=25)
    grads = []
    for gradient in ("backprop", "checkpoint"):
        sol = nde.solve(sde.term(bm), small_y0(), TS, "reversible_heun", dt=2.0**-5, gradient=gradient)
        grads.append(torch.autograd.grad(sol.ys.square().sum(), [sde.a, sde.b]))
    for c, b in zip(*grads):
        assert torch.allclose(c, b, rtol=1e-12, atol=0)
