"""The continuous adjoint: a custom autograd function around the forward loop, whose backward
pass solves the augmented system interval by interval (see :class:`torchnde.Adjoint`)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

from .._loop import solve_plain
from .._solution import Stats
from ..controllers import ConstantStep, PIDController, channel_rms_norm
from ..solvers.jacobian import autograd_engine

__all__ = ["run_adjoint"]


class _Context:
    """Everything the backward pass needs, shared between forward and backward."""

    def __init__(self, problem: Any, solver: Any, ctrl: Any, strategy: Any, params: tuple,
                 run: Callable[[torch.Tensor], Any], max_steps: int, backward: Callable | None):  # fmt: skip
        self.problem, self.solver, self.ctrl, self.strategy = problem, solver, ctrl, strategy
        self.params, self.run, self.max_steps = params, run, max_steps
        if backward is None:
            backward = _backward_per_sample if problem.per_sample else _backward
        self.backward = backward
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
        grad_y0, grad_params = context.backward(context, ys, grad_ys)
        return (None, grad_y0, *grad_params)


def run_adjoint(problem: Any, solver: Any, ctrl: Any, strategy: Any, params: tuple,
                run: Callable[[torch.Tensor], Any], max_steps: int,
                backward: Callable | None = None) -> tuple[Any, Stats]:  # fmt: skip
    """Run the forward loop without a graph and attach the adjoint backward pass to its outputs.

    ``run(y0)`` runs the forward loop from ``y0`` (in the loop's layout) and returns its raw
    result; the returned raw result's ``ys`` is differentiable with respect to ``problem.y0``
    and ``params``. The :class:`Stats` is filled in by the backward pass, which is
    ``backward(context, ys, grad_ys) -> (grad_y0, grad_params)`` (default: the continuous
    adjoint of an ODE, in the problem's layout; the stochastic adjoint passes its own).
    """
    context = _Context(problem, solver, ctrl, strategy, params, run, max_steps, backward)
    ys = _AdjointFunction.apply(context, problem.y0, *params)
    raw, context.raw = context.raw, None  # the backward pass holds the context: no cycle via ys
    raw.ys = ys
    return raw, context.backward_stats


def _backward(context: _Context, ys: torch.Tensor, grad_ys: torch.Tensor) -> tuple[Any, list[Any]]:
    """Solve the augmented system backwards over each output interval in turn. The state is one
    flat vector ``[y | a | g_1 | ... | g_k]`` (``| tau`` with ``time_channel``); the step size
    carries over from one interval to the next (only the state's jump at an output time restarts
    the method), so an interval shorter than the steps the adjoint needs costs one step, not a
    fresh start.

    Each interval is solved forwards in ``r = -s`` (``s = direction * t``, the forward loop's
    time): the loop steps in ``r`` either way, and a field written in ``r`` spares the
    negations of solving in decreasing ``s`` (the cotangent ``-a`` and the whole derivative).
    Negation is exact, so the steps and values are those of the field in ``s``."""
    problem, params = context.problem, context.params
    strategy, ctrl = context.strategy, context.ctrl
    f, direction, shape = problem.f, problem.direction, problem.y0.shape
    dtype, is_tuple = problem.dtype, problem.is_tuple
    n_state = problem.numel
    timed = strategy.time_channel
    sizes = [n_state, n_state] + [p.numel() for p in params] + ([1] if timed else [])
    n_params = len(params)
    no_rate = torch.zeros(1, dtype=dtype, device=problem.device)  # tau' for an f blind to t
    forward = direction > 0

    def field(r: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``d[y | a | g (| tau)]/dr`` at ``r = -s``: ``[-dy/ds | a.d(dy/ds)/dy | ...]``. With
        ``f`` the user's field at ``t = -direction * r``, ``dy/ds = direction * f``, so the
        cotangent of ``f`` is ``c = direction * a`` and ``a.d(dy/ds)/dt`` is ``direction`` times
        ``c.df/dt``."""
        y, a = v[:n_state].view(shape), v[n_state : 2 * n_state].view(shape)
        graph = torch.is_grad_enabled()
        nested = graph and v.requires_grad  # an implicit solver's Jacobian
        with torch.enable_grad():
            y_ = y if nested else y.detach().requires_grad_(True)
            t = -r if forward else r
            t_ = t.detach().requires_grad_(True) if timed else t
            if is_tuple:
                out = torch.cat([o.reshape(-1) for o in f(t_, problem.unflatten(y_, ()))])
            else:
                out = f(t_, y_)
            vjps = _vjp(out, (y_, *params, t_) if timed else (y_, *params), a if forward else -a, nested)
        if graph and not nested:  # outside a graph-free backward pass: keep out's graph away
            out = out.detach()
        parts = [-out if forward else out, _or_zeros(vjps[0], y)]
        for g, p in zip(vjps[1 : 1 + n_params], params):
            g = _or_zeros(g, p)
            parts.append(g if g.dtype == dtype else g.to(dtype))
        if timed:
            rate = vjps[-1]
            parts.append(no_rate if rate is None else (rate if forward else -rate))
        return _flat_cat(parts)

    norm = strategy.norm or _adjoint_norm(sizes, seminorm=strategy.seminorm, timed=timed)
    adj_solver = _adjoint_solver(strategy.solver or context.solver)
    rtol, atol, fixed = _adjoint_controls(strategy, ctrl, adj_solver)
    rtol, atol = (_per_element(name, x, sum(sizes), ys) for name, x in (("rtol", rtol), ("atol", atol)))
    s_eval = problem.s_eval
    s_host = problem.s_host
    n = ys.shape[0]
    a = grad_ys[-1].reshape(-1)
    g = torch.zeros(sum(sizes[2:]), dtype=dtype, device=ys.device)
    stats = context.backward_stats
    max_steps = strategy.max_steps or context.max_steps
    carry = None
    stops = _stops(strategy, -direction)  # in r = -s
    jumps = timed and problem.t_eval.requires_grad  # tau takes -dL/ds_i at each output time
    for i in range(n - 1, 0, -1):
        times = [-s_host[i], -s_host[i - 1]]  # r rises from -s_i to -s_{i-1}
        controller = _controller(strategy, fixed, (rtol, atol, norm), carry, stops)
        if jumps:
            with torch.no_grad():
                rate = problem.flatten_out(
                    f(s_eval[i].to(dtype) * direction, problem.unflatten(ys[i], ())), ()
                )
                g[-1:] -= (grad_ys[i].reshape(-1) * rate.reshape(-1)).sum()  # rate: dy/ds
        v = torch.cat([ys[i].reshape(-1), a, g])  # y restarts from the forward pass's value
        sol, raw = solve_plain(field, v, times, solver=adj_solver, controller=controller, max_steps=max_steps)
        _accumulate(stats, sol.stats)
        carry = raw.next_dt
        end = sol.ys[-1]
        a = end[n_state : 2 * n_state] + grad_ys[i - 1].reshape(-1)
        g = end[2 * n_state :]
    grad_params = [x.view(p.shape).to(p.dtype) for x, p in zip(torch.split(g, sizes[2:]), params)]
    return a.view(shape), grad_params  # (zip drops tau)


def _backward_per_sample(context: _Context, ys: torch.Tensor, grad_ys: torch.Tensor) -> tuple[Any, list[Any]]:
    """Per sample, each output interval ``[t_{b,i-1}, t_{b,i}]`` has its own length: the
    adjoint is solved for the whole batch at once in a normalised time ``tau`` in ``[i-1, i]``,
    ``t_b = t_{b,i-1} + (tau - i + 1) (t_{b,i} - t_{b,i-1})``, under which every channel's
    derivative is scaled by its sample's interval length. This is the same continuous adjoint;
    the backward pass shares its step sizes across the batch."""
    problem, params = context.problem, context.params
    strategy, ctrl = context.strategy, context.ctrl
    if strategy.time_channel:
        raise ValueError("Adjoint(time_channel=True) needs the global layout: pass per_sample=False")
    func = problem.func(count=False)  # dy/ds per sample: func(s [B], y [B, ...])
    shape, dtype = problem.y0.shape, problem.dtype
    batch = shape[0]
    total = batch * problem.numel
    sizes = [total, total] + [p.numel() for p in params]
    norm = _adjoint_norm(sizes, seminorm=strategy.seminorm)
    adj_solver = _adjoint_solver(strategy.solver or context.solver)
    rtol, atol, fixed = _adjoint_controls(strategy, ctrl, adj_solver)
    if isinstance(strategy.rtol, torch.Tensor) or isinstance(strategy.atol, torch.Tensor):
        raise ValueError(
            "Adjoint: tensor rtol/atol (per element of the augmented state) need the global layout; "
            "with per_sample=True pass floats"
        )
    s_eval = problem.s_eval  # [B, n] float64
    n = ys.shape[1]
    column = (batch,) + (1,) * (len(shape) - 1)
    a = grad_ys[:, -1].reshape(-1)
    g = torch.zeros(sum(sizes[2:]), dtype=dtype, device=ys.device)
    stats = context.backward_stats
    max_steps = strategy.max_steps or context.max_steps
    carry = None
    for i in range(n - 1, 0, -1):
        start, span = s_eval[:, i - 1], s_eval[:, i] - s_eval[:, i - 1]
        scale = span.to(dtype).view(column)

        def field(
            tau: torch.Tensor, v: torch.Tensor, start=start, span=span, scale=scale, i=i
        ) -> torch.Tensor:
            s = start + (tau.to(torch.float64) - (i - 1)) * span
            y, a = v[:total].view(shape), v[total : 2 * total].view(shape)
            nested = torch.is_grad_enabled() and v.requires_grad  # an implicit solver's Jacobian
            with torch.enable_grad():
                y_ = y if nested else y.detach().requires_grad_(True)
                fy = func(s, y_)
                vjps = _vjp(fy, (y_, *params), -(a * scale), nested)
            parts = [((fy if nested else fy.detach()) * scale).reshape(-1), _or_zeros(vjps[0], y).reshape(-1)]
            parts += [_or_zeros(x, p).reshape(-1).to(dtype) for x, p in zip(vjps[1:], params)]
            return torch.cat(parts)

        times = torch.tensor([float(i), float(i - 1)], dtype=torch.float64, device=ys.device)
        if fixed is not None:  # fixed steps of dt in t are about dt / (mean span) in tau
            controller: Any = _controller(strategy, ConstantStep(fixed.dt / float(span.mean())), (), None, {})
        else:  # dt0 from t into tau, as for fixed steps
            first = strategy.controller_options.get("dt0")
            first = carry if carry is not None or first is None else first / float(span.mean())
            controller = _controller(strategy, None, (rtol, atol, norm), first, {})
        v = torch.cat([ys[:, i].reshape(-1), a, g])  # y restarts from the forward pass's value
        sol, raw = solve_plain(field, v, times, solver=adj_solver, controller=controller, max_steps=max_steps)
        _accumulate(stats, sol.stats)
        carry = raw.next_dt
        if carry is not None and i > 1:  # from this interval's tau-units into the next one's
            carry *= float(span.mean() / (s_eval[:, i - 1] - s_eval[:, i - 2]).mean())
        end = sol.ys[-1]
        a = end[total : 2 * total] + grad_ys[:, i - 1].reshape(-1)
        g = end[2 * total :]
    grad_params = [x.view(p.shape).to(p.dtype) for x, p in zip(torch.split(g, sizes[2:]), params)]
    return a.view(shape), grad_params


def _adjoint_solver(solver: Any) -> Any:
    """The solver for the augmented adjoint system: an implicit solver's user ``jacobian`` is of
    the forward field only, so the adjoint's Jacobians come from autograd."""
    if solver.jacobian is None:
        return solver
    plain = copy.copy(solver)
    plain.jacobian = None
    return plain


def _adjoint_controls(strategy: Any, ctrl: Any, solver: Any) -> tuple[Any, Any, Any]:
    """``(rtol, atol, None)`` for an adaptive adjoint solve, ``(None, None, ConstantStep)`` for
    a fixed-step one."""
    explicit = strategy.rtol is not None or strategy.atol is not None
    if strategy.dt is not None or not (ctrl.adaptive or explicit):
        return None, None, ConstantStep(strategy.dt if strategy.dt is not None else ctrl.dt)
    if not solver.adaptive:
        raise ValueError(
            f"Adjoint: the adjoint solver {solver.name!r} has no error estimate; pass "
            "Adjoint(solver=...) with an adaptive solver, or Adjoint(dt=...) for fixed steps"
        )
    rtol = strategy.rtol if strategy.rtol is not None else _tightest(1e-6 if ctrl.rtol is None else ctrl.rtol)
    atol = strategy.atol if strategy.atol is not None else _tightest(1e-8 if ctrl.atol is None else ctrl.atol)
    return rtol, atol, None


def _per_element(name: str, value: Any, size: int, like: torch.Tensor) -> Any:
    """A tensor tolerance checked against the augmented state's size and moved to its dtype."""
    if not isinstance(value, torch.Tensor):
        return value
    if value.numel() != size:
        raise ValueError(
            f"Adjoint({name}=...) has {value.numel()} tolerances, but the augmented state [y | a | "
            f"g_1 | ... | g_k] has {size} elements: give one per element, or a float"
        )
    return value.to(like.dtype).to(like.device)


def _stops(strategy: Any, sign: float) -> dict[str, Any]:
    """The adjoint's ``step_ts``/``jump_ts`` (forward times ``t``) times ``sign``: in the time the
    backward intervals are solved in."""
    times = {"step_ts": strategy.step_ts, "jump_ts": strategy.jump_ts}
    return {
        k: torch.as_tensor(v, dtype=torch.float64).reshape(-1) * sign
        for k, v in times.items()
        if v is not None
    }


def _controller(strategy: Any, fixed: Any, tolerances: tuple, carry: Any, stops: dict[str, Any]) -> Any:
    """The controller of one backward interval: fixed steps, or the adjoint's PID controller
    starting from ``carry`` (the step the previous interval ended with) when there is one;
    passed through ``strategy.controller_hook`` when set."""
    if fixed is not None:
        ctrl: Any = ConstantStep(fixed.dt, **stops) if stops else fixed
    else:
        rtol, atol, norm = tolerances
        options = dict(strategy.controller_options)
        if carry is not None or "dt0" not in options:
            options["dt0"] = carry
        ctrl = PIDController(rtol, atol, norm=norm, **options, **stops)
    return ctrl if strategy.controller_hook is None else strategy.controller_hook(ctrl)


def _vjp(out: torch.Tensor, inputs: tuple, cotangent: torch.Tensor, create_graph: bool) -> tuple:
    """``cotangent^T d out / d inputs``, ``None`` for an input ``out`` does not depend on (also
    when it depends on none of them, such as ``f = lambda t, y: torch.cos(t)``).

    On plain tensors of matching shape and dtype it calls the autograd engine as
    ``torch.autograd.grad`` does, without that function's argument handling, which costs a third
    of the engine's own time on a small network (the adjoint calls it once per evaluation)."""
    if not out.requires_grad:
        return (None,) * len(inputs)
    plain = type(out) is torch.Tensor and type(cotangent) is torch.Tensor
    run = autograd_engine() if plain and not create_graph else None
    if run is None or cotangent.shape != out.shape or cotangent.dtype != out.dtype:
        return torch.autograd.grad(out, inputs, cotangent, allow_unused=True, create_graph=create_graph)
    return run((out,), (cotangent,), False, False, inputs, True, accumulate_grad=False)


def _accumulate(total: Stats, part: Stats) -> None:
    """Add one backward interval's counters to the backward pass's."""
    for key in ("nfe", "steps", "accepted", "rejected"):
        setattr(total, key, getattr(total, key) + getattr(part, key))


def _flat_cat(parts: list[torch.Tensor]) -> torch.Tensor:
    """The tensors flattened and concatenated into one vector, in one call (not a ``reshape``
    each and a ``cat``); differentiable, as ``torch.cat`` is."""
    return torch._C._nn.flatten_dense_tensors(parts)


def _or_zeros(v: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if v is None else v


def _tightest(tol: Any) -> float:
    if isinstance(tol, (int, float)):
        return float(tol)
    if isinstance(tol, (tuple, list)):
        return min(_tightest(t) for t in tol)
    return float(torch.as_tensor(tol).min())


def _adjoint_norm(
    sizes: list[int], seminorm: bool, timed: bool = False
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The largest RMS norm over the channels ``y``, ``a`` (and each parameter's gradient unless
    ``seminorm``; and the time channel, last, when ``timed``), of the flattened scaled error
    ``[y | a | g_1 | ... (| tau)]``."""
    keep = [i < 2 or not seminorm or (timed and i == len(sizes) - 1) for i in range(len(sizes))]
    return channel_rms_norm(sizes, keep)
