r"""Gradients with respect to the output times, for every strategy.

For the exact flow :math:`y(t_i) = \Phi(t_i, t_0) y_0`,
:math:`\partial y(t_i)/\partial t_i = f(t_i, y(t_i))` and
:math:`\partial y(t_i)/\partial t_0 = -\partial_{y_0}\Phi(t_i, t_0)\, f(t_0, y_0)`. The second is
what shifting the initial value by :math:`-\delta f(t_0, y_0)` does, so the start time enters as
an identity on ``y0`` whose backward pass returns :math:`-\langle \bar y_0, f(t_0, y_0)\rangle`
(with :math:`\bar y_0` the full gradient reaching the initial value, whatever strategy produced
it), and each output as an identity whose backward pass returns
:math:`\langle \bar y_i, f(t_i, y_i)\rangle`. Both evaluate ``f`` only when ``backward`` runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .._loop import Problem

__all__ = ["attach_output_times", "attach_start_time", "output_times", "start_time"]


class _StartTime(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, t0: torch.Tensor, y0: torch.Tensor, derivative: Callable, reduce: Callable) -> Any:
        ctx.derivative, ctx.reduce = derivative, reduce
        return y0.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        with torch.no_grad():
            grad_t0 = -ctx.reduce(grad * ctx.derivative())
        return grad_t0, grad, None, None


class _OutputTimes(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, t_eval: torch.Tensor, ys: torch.Tensor, derivatives: Callable) -> Any:
        ctx.derivatives = derivatives
        ctx.save_for_backward(ys)
        return ys.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        (ys,) = ctx.saved_tensors
        with torch.no_grad():
            grad_t = ctx.derivatives(ys, grad)
        return grad_t, grad, None


def start_time(t0: torch.Tensor, y0: torch.Tensor, derivative: Callable[[], torch.Tensor],
               reduce: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:  # fmt: skip
    """``y0`` (a copy) made to depend on the start time ``t0``. ``derivative()`` returns
    :math:`f(t_0, y_0)` in ``y0``'s layout; ``reduce`` sums a product shaped like ``y0`` down to
    ``t0``'s shape."""
    return _StartTime.apply(t0, y0, derivative, reduce)


def output_times(
    t_eval: torch.Tensor, ys: torch.Tensor, derivatives: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``ys`` (a copy) made to depend on the output times. ``derivatives(ys, grad)`` returns the
    gradient with respect to ``t_eval``: :math:`\\langle \\bar y_i, f(t_i, y_i)\\rangle` per time."""
    return _OutputTimes.apply(t_eval, ys, derivatives)


def attach_start_time(problem: Problem) -> None:
    """Make the loop's initial state depend on ``t_eval``'s first time (see the module docstring)."""
    func = problem.func(count=False)
    y0 = problem.y0
    direction = problem.direction
    if problem.per_sample:
        s0: Any = problem.s_eval[:, 0]
        t0 = problem.t_eval[..., 0]
        batch = problem.batch
        reduce = (lambda x: x.reshape(batch, -1).sum(-1)) if t0.ndim == 1 else (lambda x: x.sum())
    else:
        s0, t0 = problem.s_host[0], problem.t_eval[0]  # type: ignore[index]
        reduce = lambda x: x.sum()  # noqa: E731

    def derivative() -> torch.Tensor:
        return func(s0, y0.detach()) * direction

    problem.y0 = start_time(t0, y0, derivative, reduce)


def attach_output_times(problem: Problem, ys: torch.Tensor) -> torch.Tensor:
    """Make the outputs ``ys`` (loop layout) depend on ``t_eval`` (see the module docstring)."""
    func = problem.func(count=False)
    direction = problem.direction
    per_sample = problem.per_sample
    t_eval = problem.t_eval

    def derivatives(ys: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        if not per_sample:
            s_host = problem.s_host
            dots = [(grad[i] * func(s_host[i], ys[i])).sum() for i in range(ys.shape[0])]  # type: ignore[index]
            return (torch.stack(dots) * direction).to(t_eval.dtype)
        batch, n = ys.shape[0], ys.shape[1]
        shape = (batch, *problem.shapes[0]) if not problem.is_tuple else (batch, -1)
        cols = []
        for i in range(n):
            deriv = func(problem.s_eval[:, i], ys[:, i].reshape(shape)).reshape(batch, -1)
            cols.append((grad[:, i] * deriv).sum(-1))
        out = torch.stack(cols, 1) * direction
        return (out if t_eval.ndim == 2 else out.sum(0)).to(t_eval.dtype)

    return output_times(t_eval, ys, derivatives)
