"""The continuous adjoint: a custom autograd function around the forward loop, whose backward
pass solves the augmented system interval by interval (see :class:`torchnde.Adjoint`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .._solution import Stats

__all__ = ["run_adjoint"]


class _Context:
    """Everything the backward pass needs, shared between forward and backward."""

    def __init__(self, problem: Any, solver: Any, ctrl: Any, strategy: Any, params: tuple,
                 run: Callable[[torch.Tensor], Any], max_steps: int):  # fmt: skip
        self.problem, self.solver, self.ctrl, self.strategy = problem, solver, ctrl, strategy
        self.params, self.run, self.max_steps = params, run, max_steps
        self.raw: Any = None
        self.backward_stats = Stats()


class _AdjointFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, context: _Context, y0: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        raw = context.run(y0.detach())
        context.raw = raw
        ctx.context = context
        ctx.save_for_backward(raw.ys)
        return raw.ys

    @staticmethod
    def backward(ctx: Any, grad_ys: torch.Tensor) -> Any:
        context: _Context = ctx.context
        (ys,) = ctx.saved_tensors
        grad_y0, grad_params = _backward(context, ys, grad_ys)
        return (None, grad_y0, *grad_params)


def run_adjoint(problem: Any, solver: Any, ctrl: Any, strategy: Any, params: tuple,
                run: Callable[[torch.Tensor], Any], max_steps: int) -> tuple[Any, Stats]:  # fmt: skip
    """Run the forward loop without a graph and attach the adjoint backward pass to its outputs.

    ``run(y0)`` runs the forward loop from ``y0`` (in the loop's layout) and returns its raw
    result; the returned raw result's ``ys`` is differentiable with respect to ``problem.y0``
    and ``params``. The :class:`Stats` is filled in by the backward pass.
    """
    context = _Context(problem, solver, ctrl, strategy, params, run, max_steps)
    ys = _AdjointFunction.apply(context, problem.y0, *params)
    raw = context.raw
    raw.ys = ys
    return raw, context.backward_stats


def _backward(context: _Context, ys: torch.Tensor, grad_ys: torch.Tensor) -> tuple[Any, list[Any]]:
    from .._solve import solve  # the adjoint solves are ordinary solves
    from ..controllers import ConstantStep, PIDController

    problem, params = context.problem, context.params
    strategy, ctrl = context.strategy, context.ctrl
    f, direction, shape = problem.f, problem.direction, problem.y0.shape
    dtype = problem.dtype
    n_state = problem.numel
    sizes = [n_state, n_state] + [p.numel() for p in params]

    def field(s: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """``(dy/ds, da/ds, dg/ds)`` at forward time ``s`` (``s = direction * t``)."""
        y, a = state[0], state[1]
        with torch.enable_grad():
            y_ = y.detach().requires_grad_(True)
            out = f(s * direction, problem.unflatten(y_, ()))
            fy = problem._flatten_out(out, ())  # dy/ds in the loop's layout (sign included)
            vjps = torch.autograd.grad(fy, (y_, *params), -a, allow_unused=True)
        derivs = [fy.detach(), _or_zeros(vjps[0], y)]
        derivs += [_or_zeros(v, p).to(dtype) for v, p in zip(vjps[1:], params)]
        return tuple(derivs)

    norm = _adjoint_norm(sizes, seminorm=strategy.seminorm)
    adj_solver = strategy.solver or context.solver
    if strategy.dt is not None:
        controller: Any = ConstantStep(strategy.dt)
    elif ctrl.adaptive:
        rtol = strategy.rtol if strategy.rtol is not None else _scalar(ctrl.rtol)
        atol = strategy.atol if strategy.atol is not None else _scalar(ctrl.atol)
        controller = PIDController(rtol, atol, norm=norm)
    elif strategy.rtol is not None or strategy.atol is not None:
        controller = PIDController(strategy.rtol or 1e-6, strategy.atol or 1e-8, norm=norm)
    else:
        controller = ConstantStep(ctrl.dt)
    if controller.adaptive and not adj_solver.adaptive:
        raise ValueError(
            f"Adjoint: the adjoint solver {adj_solver.name!r} has no error estimate; pass "
            "Adjoint(solver=...) with an adaptive solver, or leave rtol/atol unset to reuse dt"
        )
    s_eval = problem.s_eval
    n = ys.shape[0]
    y = ys[-1]
    a = grad_ys[-1].clone()
    g = [torch.zeros(p.shape, dtype=dtype, device=p.device) for p in params]
    stats = context.backward_stats
    max_steps = strategy.max_steps or context.max_steps
    for i in range(n - 1, 0, -1):
        times = torch.stack([s_eval[i], s_eval[i - 1]])
        sol = solve(field, (y, a, *g), times, adj_solver, controller=controller, max_steps=max_steps)
        for key in ("nfe", "steps", "accepted", "rejected"):
            setattr(stats, key, getattr(stats, key) + getattr(sol.stats, key))
        state = [x[-1] for x in sol.ys]
        a, g = state[1], state[2:]
        y = ys[i - 1]  # restart the state from the forward pass
        a = a + grad_ys[i - 1]
    grad_params = [gi.to(p.dtype) for gi, p in zip(g, params)]
    return a.view(shape), grad_params


def _or_zeros(v: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if v is None else v


def _scalar(tol: Any) -> float:
    if isinstance(tol, (int, float)):
        return float(tol)
    if isinstance(tol, (tuple, list)):
        return min(_scalar(t) for t in tol)
    return float(torch.as_tensor(tol).min())


def _adjoint_norm(sizes: list[int], seminorm: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """The largest RMS norm over the channels ``y``, ``a`` (and each parameter's gradient unless
    ``seminorm``), of the flattened scaled error ``[y | a | g_1 | ... ]``."""
    bounds = list(_offsets(sizes if not seminorm else sizes[:2]))

    def norm(x: torch.Tensor) -> torch.Tensor:
        parts = [torch.linalg.vector_norm(x[lo:hi]) / math.sqrt(hi - lo) for lo, hi in bounds if hi > lo]
        return torch.stack(parts).max()

    return norm


def _offsets(sizes: list[int]) -> Any:
    lo = 0
    for size in sizes:
        yield lo, lo + size
        lo += size
