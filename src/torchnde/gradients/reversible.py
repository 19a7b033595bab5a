"""The loop of reversible solvers, and the ``Reversible`` gradient: the backward pass undoes the
forward steps one by one and differentiates each (see :class:`torchnde.Reversible`)."""

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
    base = grid_func(problem, problem.func(count=False))

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
