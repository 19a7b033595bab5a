"""The loop of reversible solvers, and the ``Reversible`` gradient: the backward pass undoes the
forward steps one by one and differentiates each (see :class:`torchnde.Reversible`).

Both sides use the solver's own steps only: the loop calls ``solver.step`` with the state it
returns (``StepResult.state``), and the backward pass rebuilds the step's start with
``solver.reverse_step`` and differentiates ``solver.step`` recorded again from there, treating
the solution and every tensor of the state as independent inputs; the first step, which starts
the method from ``state=None``, is recorded as a function of ``y0`` alone."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch

from .._solution import Stats, Status

__all__ = ["loop_reversible", "run_reversible"]

_STRETCH = 1.0 + 1e-8  # as in the main loop: a step ending this close to a stop lands on it


def step_grid(s_out: list[float], dt: float, extra: list[float]) -> list[float]:
    """Step boundaries from ``s_out[0]`` to ``s_out[-1]``: steps of ``dt``, each shortened to
    land on the next output time or grid time (``extra``), as ``ConstantStep`` does."""
    stops = sorted({*s_out[1:], *(x for x in extra if s_out[0] < x < s_out[-1])})
    grid = [s_out[0]]
    s = s_out[0]
    for stop in stops:
        while s < stop:
            s = stop if s + dt * _STRETCH >= stop else s + dt
            grid.append(s)
    return grid


def loop_reversible(problem: Any, solver: Any, ctrl: Any, opts: Any) -> Any:
    """Step a reversible solver over its grid (global layout), saving at the output times.

    Returns the loop's raw result with ``reversible`` set to ``(grid, final y, final solver
    state)``.
    """
    from .._solve import _Raw  # the raw result type of every loop

    if ctrl.adaptive:
        raise ValueError(f"solver {solver.name!r} takes fixed steps: pass dt=... (ConstantStep)")
    if opts.dense or opts.save_steps:
        raise ValueError(f"solver {solver.name!r} supports neither dense= nor save_steps=")
    if problem.s_host is None:
        raise ValueError(
            f"solver {solver.name!r} steps every sample on one grid: per-sample time spans "
            "(t_eval of shape [batch, n]) need an adaptive solver such as 'tsit5'"
        )
    s_out = problem.s_host
    extra = []
    for times in (ctrl.step_ts, ctrl.jump_ts):
        if times is not None:
            extra += [x * problem.direction for x in times.tolist()]
    grid = step_grid(s_out, ctrl.dt, extra)
    if len(grid) - 1 > opts.max_steps:
        raise ValueError(
            f"reversible solve needs {len(grid) - 1} steps but max_steps={opts.max_steps}: "
            "raise max_steps or dt"
        )
    func = _grid_func(problem, problem.func())
    y = problem.y0
    f0 = func(grid[0], y)
    state = solver.init_state(ctrl)
    outputs = [y]
    wanted = set(s_out[1:])
    for s, s_next in itertools.pairwise(grid):
        res = solver.step(func, s, y, f0, s_next - s, False, state)
        y, f0, state = res.y1, res.f1, res.state  # f1: the next step's f0 where the method reads one
        if s_next in wanted:
            outputs.append(y)
    steps = len(grid) - 1
    if problem.per_sample:  # every sample took the same steps; results in the per-sample layout
        batch = problem.batch
        ys = torch.stack(outputs, 1).reshape(batch, len(outputs), -1)
        finite = torch.isfinite(ys.reshape(batch, -1)).all(1)
        status: Any = torch.where(finite, int(Status.SUCCESS), int(Status.NONFINITE))
        counts = [
            torch.full((batch,), c, dtype=torch.int64) for c in (problem.nfe_counter[0], steps, steps, 0)
        ]
        stats = Stats(*counts)
        end: Any = torch.full((batch,), grid[-1] * problem.direction, dtype=torch.float64)
    else:
        ys = torch.stack(outputs)
        status = Status.SUCCESS if bool(torch.isfinite(y).all()) else Status.NONFINITE
        stats, end = Stats(problem.nfe_counter[0], steps, steps, 0), grid[-1] * problem.direction
    raw = _Raw(ys, stats, status, end)
    raw.reversible = (grid, y, state)
    return raw


def _grid_func(problem: Any, func: Callable) -> Callable:
    """``func`` called with a host time: per sample, every sample at that time."""
    if not problem.per_sample:
        return func
    batch, device = problem.batch, problem.device

    def call(s: float, y: torch.Tensor) -> torch.Tensor:
        return func(torch.full((batch,), s, dtype=torch.float64, device=device), y)

    return call


class _ReversibleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, context: Any, y0: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        raw = context.run(y0.detach())
        context.raw = raw
        ctx.context = context
        grid, y, state = raw.reversible
        ctx.save_for_backward(y, *state)  # the only tensors the backward pass starts from
        context.state_type = type(state)
        raw.reversible = grid
        return raw.ys

    @staticmethod
    def backward(ctx: Any, grad_ys: torch.Tensor) -> Any:
        grad_y0, grad_params = _backward(ctx.context, ctx.saved_tensors, grad_ys)
        return (None, grad_y0, *grad_params)


class _Context:
    def __init__(self, problem: Any, solver: Any, params: tuple, run: Callable):
        self.problem, self.solver, self.params, self.run = problem, solver, params, run
        self.raw: Any = None
        self.state_type: Any = None  # the solver state's tuple type, to rebuild it from tensors
        self.backward_stats = Stats()


def run_reversible(
    problem: Any, solver: Any, params: tuple, run: Callable[[torch.Tensor], Any]
) -> tuple[Any, Stats]:
    """Run the reversible loop without a graph; its outputs' backward pass undoes the steps."""
    context = _Context(problem, solver, params, run)
    ys = _ReversibleFunction.apply(context, problem.y0, *params)
    raw = context.raw
    raw.ys = ys
    return raw, context.backward_stats


def _backward(context: _Context, saved: Any, grad_ys: torch.Tensor) -> tuple[torch.Tensor, list[Any]]:
    """Vector-Jacobian products of the whole solve, last step first. Step ``k`` maps ``(y_k,
    state_k)`` to ``(y_k+1, state_k+1)``; its start is rebuilt from its end by
    ``solver.reverse_step`` and the step recorded again from there with ``solver.step``. The
    adjoints ``a_y``, ``a_state`` (one per state tensor) are pulled back through it; the first
    step is recorded from ``state=None``, so that its state's dependence on ``y0`` is included."""
    problem, params, solver = context.problem, context.params, context.solver
    grid = context.raw.reversible
    counter = [0]
    base = _grid_func(problem, problem.func(count=False))

    def func(s: Any, y: torch.Tensor) -> torch.Tensor:
        counter[0] += 1
        return base(s, y)

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
        s0, s1 = grid[k], grid[k + 1]
        h = s1 - s0
        with torch.no_grad():
            y0, state0 = solver.reverse_step(func, s1, y1, state, h)
        with torch.enable_grad():
            y_ = y0.detach().requires_grad_(True)
            if k > 0:
                leaves = [x.detach().requires_grad_(True) for x in state0]
                res = solver.step(func, s0, y_, None, h, False, context.state_type(*leaves))
            else:  # the method's start: its state is made from y0 (and f(t0, y0))
                leaves = []
                res = solver.step(func, s0, y_, func(s0, y_), h, False, None)
            outputs = [res.y1, *res.state]
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
        i = out_index.get(s0)
        if i is not None and i > 0:
            a_y = a_y + grad_ys[i]
        y1, state = y0, state0
    stats = context.backward_stats
    stats.nfe += counter[0]
    stats.steps += len(grid) - 1
    stats.accepted += len(grid) - 1
    grad_y0 = a_y + grad_ys[0]
    return grad_y0, g
