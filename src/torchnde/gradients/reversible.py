"""The loop of reversible solvers, and the ``Reversible`` gradient: the backward pass undoes the
forward steps one by one and differentiates each (see :class:`torchnde.Reversible`)."""

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

    Returns the loop's raw result with ``reversible`` set to ``(grid, final solver state)``.
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
    state = solver.init(func, grid[0], problem.y0)
    outputs = [problem.y0]
    wanted = set(s_out[1:])
    for s, s_next in itertools.pairwise(grid):
        state = solver.forward(func, s, state, s_next - s)
        if s_next in wanted:
            outputs.append(state.y)
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
        status = Status.SUCCESS if bool(torch.isfinite(state.y).all()) else Status.NONFINITE
        stats, end = Stats(problem.nfe_counter[0], steps, steps, 0), grid[-1] * problem.direction
    raw = _Raw(ys, stats, status, end)
    raw.reversible = (grid, state)
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
        grid, state = raw.reversible
        ctx.save_for_backward(*state)  # the only tensors the backward pass starts from
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


def _backward(context: _Context, state: Any, grad_ys: torch.Tensor) -> tuple[torch.Tensor, list[Any]]:
    problem, params = context.problem, context.params
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
    a_y = grad_ys[-1].clone()
    a_z = torch.zeros_like(a_y)
    g = [torch.zeros_like(p) for p in params]
    y1, z1, f1 = (x.detach() for x in state)
    for k in range(len(grid) - 2, -1, -1):
        s0, h = grid[k], grid[k + 1] - grid[k]
        with torch.no_grad():
            z0 = torch.add(torch.sub(y1, z1).add_(y1), f1, alpha=-h)
        with torch.enable_grad():
            z_ = z0.requires_grad_(True)
            f0 = func(s0, z_)
            with torch.no_grad():
                y0 = torch.add(y1, f0 + f1, alpha=-0.5 * h)
            y_ = y0.requires_grad_(True)
            # the step (y0, z0) -> (y1, z1) again, recorded
            z1_ = torch.add(torch.sub(y_, z_).add_(y_), f0, alpha=h)
            f1_ = func(s0 + h, z1_)
            y1_ = torch.add(y_, f0 + f1_, alpha=0.5 * h)
            grads = torch.autograd.grad((y1_, z1_), (y_, z_, *params), (a_y, a_z), allow_unused=True)
        a_y, a_z = grads[0], grads[1]
        for j, v in enumerate(grads[2:]):
            if v is not None:
                g[j] = g[j] + v
        i = out_index.get(s0)
        if i is not None and i > 0:
            a_y = a_y + grad_ys[i]
        y1, z1, f1 = y0, z0.detach(), f0.detach()
    stats = context.backward_stats
    stats.nfe += counter[0]
    stats.steps += len(grid) - 1
    stats.accepted += len(grid) - 1
    grad_y0 = a_y + a_z + grad_ys[0]
    return grad_y0, g
