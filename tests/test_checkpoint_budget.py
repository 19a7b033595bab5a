"""``Checkpoint(checkpoints=k)`` on real solves: memory held after the forward pass bounded by
the budget, not the number of steps; gradients equal to Backprop's; recomputation within the
schedule's bound and reported in ``sol.backward_stats``."""

from __future__ import annotations

import pytest
import torch

import torchnde as nde
from torchnde.gradients.schedule import recompute_bound

DTYPE = torch.float64


def _net(width: int = 64) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(2, width), torch.nn.Tanh(), torch.nn.Linear(width, width), torch.nn.Tanh(),
        torch.nn.Linear(width, 2),
    ).to(DTYPE)  # fmt: skip


def _y0(batch: int) -> torch.Tensor:
    return torch.randn(batch, 2, dtype=DTYPE, generator=torch.Generator().manual_seed(1)).requires_grad_(True)


def _solve(net, y0, steps, gradient, solver="rk4", **kw):
    ts = torch.linspace(0, 1, 5, dtype=DTYPE)
    return nde.solve(lambda t, y: net(y), y0, ts, solver, dt=1.0 / steps, gradient=gradient, **kw)


def _retained(net, y0, steps, gradient) -> int:
    run = lambda: _solve(net, y0, steps, gradient).ys  # noqa: E731
    run()  # one-off caches are not counted
    return nde.graph_memory(run).retained_bytes


def test_memory_held_after_the_forward_pass_is_bounded_by_the_budget():
    net, y0 = _net(), _y0(1024)
    for budget in (nde.Checkpoint(checkpoints=8), nde.Checkpoint(checkpoints=8, params=net)):
        few, many = _retained(net, y0, 8, budget), _retained(net, y0, 128, budget)
        assert many <= 1.2 * few, (budget, few, many)
    every_step = _retained(net, y0, 128, nde.Checkpoint())
    assert many < every_step / 8  # store-every-step grows with the steps


@pytest.mark.parametrize("steps", [8, 128])
def test_budgeted_gradients_equal_backprop_and_recompute_within_the_bound(steps):
    net, y0 = _net(), _y0(1024)
    wrt = [y0, *net.parameters()]
    sol = _solve(net, y0, steps, nde.Checkpoint(checkpoints=8, params=net))
    got = torch.autograd.grad(sol.ys.square().sum(), wrt)
    want = torch.autograd.grad(_solve(net, y0, steps, "backprop").ys.square().sum(), wrt)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-10, atol=1e-10 * float(w.abs().max()))
    assert 0 < sol.backward_stats.steps <= recompute_bound(steps, 8)
    assert sol.backward_stats.nfe >= 4 * steps  # every step replayed at least once (4 stages)


@pytest.mark.parametrize("solver", ["dopri5", "tsit5", "bosh3", "kvaerno5", "rodas5p"])
def test_budgeted_adaptive_solves_replay_the_accepted_steps_exactly(solver):
    """Adaptive steps (with rejections) and outputs inside steps: the replay needs no controller."""
    net, y0 = _net(16), _y0(8)
    wrt = [y0, *net.parameters()]
    ts = torch.linspace(0, 2, 7, dtype=DTYPE)
    f = lambda t, y: net(y) * torch.cos(t)  # noqa: E731
    kw = dict(rtol=1e-7, atol=1e-9)
    sol = nde.solve(f, y0, ts, solver, **kw, gradient=nde.Checkpoint(checkpoints=3, params=net))
    got = torch.autograd.grad(sol.ys.square().sum(), wrt)
    ref = nde.solve(f, y0, ts, solver, **kw)
    want = torch.autograd.grad(ref.ys.square().sum(), wrt)
    # While recording, implicit solvers add one exact Newton step per stage (the implicit
    # function theorem's), which moves the recorded trajectory within the Newton tolerance; the
    # budgeted forward pass runs without a graph, so the two agree to that tolerance, not bitwise.
    exact = not nde.solvers.resolve_solver(solver).implicit
    assert (
        torch.equal(sol.ys.detach(), ref.ys.detach()) if exact else torch.allclose(sol.ys, ref.ys, rtol=1e-8)
    )
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-10 if exact else 1e-6, atol=1e-12)
    assert sol.stats.accepted > 3 and sol.backward_stats.steps <= recompute_bound(sol.stats.accepted, 3)


def test_budgeted_gradients_reach_the_times_and_jumps_are_replayed():
    net, y0 = _net(8), _y0(4)
    ts = torch.linspace(0, 1, 4, dtype=DTYPE).requires_grad_(True)
    ctrl = nde.PIDController(1e-8, 1e-10, jump_ts=[0.4])
    f = lambda t, y: net(y) * torch.where(t < 0.4, 1.0, -0.5)  # noqa: E731
    sol = nde.solve(f, y0, ts, controller=ctrl, gradient=nde.Checkpoint(checkpoints=2, params=net))
    got = torch.autograd.grad(sol.ys.sum(), [y0, ts, *net.parameters()])
    ref = nde.solve(f, y0, ts, controller=ctrl)
    want = torch.autograd.grad(ref.ys.sum(), [y0, ts, *net.parameters()])
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-10, atol=1e-12)


def test_budgeted_checkpointing_rejects_what_it_does_not_support():
    net, y0 = _net(8), _y0(4)
    with pytest.raises(ValueError, match="per_sample"):
        _solve(net, y0, 8, nde.Checkpoint(checkpoints=2), per_sample=True)
    with pytest.raises(ValueError, match="dense"):
        _solve(net, y0, 8, nde.Checkpoint(checkpoints=2), dense=True)
    with pytest.raises(ValueError, match="positive int"):
        nde.Checkpoint(checkpoints=0)
