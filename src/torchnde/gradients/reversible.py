"""The ``Reversible`` gradient: the backward pass undoes the
forward steps one by one and differentiates each (see :class:`torchnde.Reversible`).

Both sides use the solver's own steps only: the loop calls ``solver.step`` with the state it
returns (``StepResult.state``), and the backward pass rebuilds the step's start with
``solver.reverse_step`` and differentiates ``solver.step`` recorded again from there, treating
the solution and every tensor of the state as independent inputs; the first step, which starts
the method from ``state=None``, is recorded as a function of ``y0`` alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .._loop.reversible import grid_func
from .._solution import Stats

__all__ = ["run_reversible"]


class _ReversibleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, context: Any, y0: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        raw = context.run(y0.detach())
        context.raw = raw
        ctx.context = context
        plan, y, state = raw.reversible
        ctx.save_for_backward(y, *state)  # the only tensors the backward pass starts from
        context.state_type = type(state)
        raw.reversible = plan
        return raw.ys

    @staticmethod
    def backward(ctx: Any, grad_ys: torch.Tensor) -> Any:
        grad_y0, grad_params = _backward(ctx.context, ctx.saved_tensors, grad_ys)
        return (None, grad_y0, *grad_params)


class _Context:
    def __init__(self, problem: Any, solver: Any, params: tuple, run: Callable):
        self.problem, self.solver, self.params, self.run = problem, solver, params, run
        self.raw: Any = None
        self.plan: Any = None  # the steps (_loop.reversible.Plan), for the backward pass
        self.state_type: Any = None  # the solver state's tuple type, to rebuild it from tensors
        self.backward_stats = Stats()


def run_reversible(
    problem: Any, solver: Any, params: tuple, run: Callable[[torch.Tensor], Any]
) -> tuple[Any, Stats]:
    """Run the reversible loop without a graph; its outputs' backward pass undoes the steps."""
    context = _Context(problem, solver, params, run)
    ys = _ReversibleFunction.apply(context, problem.y0, *params)
    raw, context.raw = context.raw, None  # the backward pass holds the context: no cycle via ys
    context.plan = raw.reversible
    raw.ys = ys
    return raw, context.backward_stats


def _backward(context: _Context, saved: Any, grad_ys: torch.Tensor) -> tuple[torch.Tensor, list[Any]]:
    """Vector-Jacobian products of the whole solve, last step first. Step ``k`` maps ``(y_k,
    state_k)`` to ``(y_k+1, state_k+1)``; its start is rebuilt from its end by
    ``solver.reverse_step`` and the step recorded again from there with ``solver.step``
    (followed by ``solver.restart`` where it lands on a jump, undone first by a restart on the
    jump's near side). The
    adjoints ``a_y``, ``a_state`` (one per state tensor) are pulled back through it; the first
    step is recorded from ``state=None``, so that its state's dependence on ``y0`` is included."""
    problem, params, solver = context.problem, context.params, context.solver
    plan = context.plan
    grid = plan.grid
    counter = [0]
    base = grid_func(problem, problem.func(count=False))

    def func(s: Any, y: torch.Tensor) -> torch.Tensor:
        counter[0] += 1
        return base(s, y)

    if problem.sde is not None:  # an SDE's diffusion and noise, counted with the drift
        func.sde = problem.sde.counted(counter)  # type: ignore[attr-defined]
    if problem.control is not None:  # a CDE's field and increments (the solver starts from them)
        func.control = problem.control.counted(counter)  # type: ignore[attr-defined]

    s_out = problem.s_host
    out_index = {s: i for i, s in enumerate(s_out)}
    if problem.per_sample:  # [B, n, N] -> the loop's layout at output i
        shape = problem.y0.shape
        grad_ys = grad_ys.transpose(0, 1).reshape(len(s_out), *shape)
    y1, *rest = (x.detach() for x in saved)
    state = context.state_type(*rest)
    a_y = grad_ys[-1].clone()
    a_state: list[Any] = [torch.zeros_like(x) for x in state]
    g = [torch.zeros_like(p) for p in params]
    for k in range(len(grid) - 2, -1, -1):
        s0, h, again = plan.starts[k], plan.sizes[k], plan.restarts[k]
        s1 = s0 + h  # the step's end, as the solver computed it
        with torch.no_grad():
            if again is not None:  # it landed on a jump: the carried derivative on its near side
                state = solver.restart(func, s1, state)
            y0, state0 = solver.reverse_step(func, s1, y1, state, h, t0=s0)
        with torch.enable_grad():
            y_ = y0.detach().requires_grad_(True)
            if k > 0:
                leaves = [x.detach().requires_grad_(True) for x in state0]
                res = solver.step(func, s0, y_, None, h, False, context.state_type(*leaves))
            else:  # the method's start: its state is made from y0 (and f(t0, y0))
                leaves = []
                f0 = None if problem.control is not None else func(s0, y_)
                res = solver.step(func, s0, y_, f0, h, False, None)
            end_state = res.state if again is None else solver.restart(func, again, res.state)
            outputs = [res.y1, *end_state]
            adjoints = [a_y, *a_state]
            kept = [(o, a) for o, a in zip(outputs, adjoints) if o.requires_grad]
            grads = torch.autograd.grad(
                [o for o, _ in kept], (y_, *leaves, *params), [a for _, a in kept], allow_unused=True
            )
        a_y = grads[0] if grads[0] is not None else torch.zeros_like(a_y)
        a_state = [
            v if v is not None else torch.zeros_like(x) for v, x in zip(grads[1 : 1 + len(leaves)], state0)
        ]
        for j, v in enumerate(grads[1 + len(leaves) :]):
            if v is not None:
                g[j] = g[j] + v
        i = out_index.get(grid[k])
        if i is not None and i > 0:
            a_y = a_y + grad_ys[i]
        y1, state = y0, state0
    stats = context.backward_stats
    stats.nfe += counter[0]
    stats.steps += len(grid) - 1
    stats.accepted += len(grid) - 1
    grad_y0 = a_y + grad_ys[0]
    return grad_y0, g
