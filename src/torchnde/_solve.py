"""``solve``: one loop over terms x solver x step-size controller x saving.

The loop has two layouts that share the solvers, controllers and interpolants:

- **global** (default): the whole state is one problem. It is flattened to ``[N]``; time and
  the step size live on the host as Python floats. The loop synchronises with the device once
  per step, to read the error norm (``float(err_norm)`` in :func:`_loop_global`); a fixed-step
  solve never synchronises inside the loop.
- **per-sample** (``per_sample=True``): the leading axis indexes independent problems, each
  with its own step size, accept/reject decision, status, statistics and (optionally) time
  span. The state is ``[B, N]``, times are float64 ``[B]`` tensors, and every decision is a
  masked tensor operation. The loop synchronises once per step, to read
  ``(max outputs passed, any sample running)`` in :func:`_loop_per_sample`.

Integration backwards in time is integration forwards in ``s = -t`` of ``-f(-s, y)``.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import math
import operator
import sys
import time as _time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ._solution import ERRORS, Solution, Stats, Status
from .controllers import ConstantStep, PIDController, initial_step_size, rms_norm
from .events import Event
from .gradients import AbstractGradient, Adjoint, Checkpoint, Reversible, resolve_gradient
from .gradients.times import output_times, start_time
from .solvers import AbstractSolver, resolve_solver

__all__ = ["solve"]

# A step that would end within a relative 1e-8 of a stop is stretched onto it, so that float
# rounding in ``s + dt`` never leaves a sliver of a step before an output or grid time.
_STRETCH = 1.0 + 1e-8

_OPTIONS = (
    "solver",
    "rtol",
    "atol",
    "dt",
    "controller",
    "per_sample",
    "dense",
    "save_steps",
    "max_steps",
    "throw",
    "progress",
    "compile",
    "gradient",
    "event",
)


def solve(
    f: Callable[[torch.Tensor, Any], Any],
    y0: torch.Tensor | tuple[torch.Tensor, ...],
    t_eval: Any,
    solver: str | AbstractSolver = "tsit5",
    *,
    rtol: Any = None,
    atol: Any = None,
    dt: float | None = None,
    controller: ConstantStep | PIDController | None = None,
    per_sample: bool = False,
    dense: bool = False,
    save_steps: bool = False,
    max_steps: int = 10_000,
    throw: bool = True,
    progress: bool = False,
    compile: bool = False,
    gradient: str | AbstractGradient = "backprop",
    event: Event | None = None,
    **unknown: Any,
) -> Solution:
    r"""Solve :math:`\dot y = f(t, y)` from ``y(t_eval[0]) = y0`` and return ``y`` at ``t_eval``.

    **Arguments:**

    - ``f``: the vector field ``f(t, y)`` (torchdiffeq's convention). ``t`` is a 0-d tensor of
      the state's dtype (per sample: shape ``[B, 1, ..., 1]``, broadcasting against ``y``); ``y``
      has the structure of ``y0``. It must return the same structure, shapes and dtype.
    - ``y0``: a floating tensor of any shape, or a tuple of them (same dtype and device).
    - ``t_eval``: strictly monotonic 1-D times (increasing or decreasing); the first is the
      initial time. Per sample it may be ``[B, n]``: one time span per sample.
    - ``solver``: a name (``nde.solvers.names()``) or a solver object.
    - ``rtol``, ``atol``: shortcut for ``controller=PIDController(rtol, atol)`` (defaults
      ``1e-6``, ``1e-8``); ``dt``: shortcut for ``controller=ConstantStep(dt)``.
    - ``controller``: a :class:`ConstantStep` or :class:`PIDController` with every option.
    - ``per_sample``: treat the leading axis of ``y0`` as a batch of independent problems.
    - ``dense``: keep the continuous extension; ``sol.evaluate(t)`` then works anywhere.
    - ``save_steps``: also return every accepted step in ``sol.step_ts``/``sol.step_ys``.
    - ``max_steps``: maximum number of steps (attempted, per sample) before failing.
    - ``throw``: raise a :class:`SolveError` on failure; otherwise return the partial solution
      (NaN after the failure) with ``sol.status`` set.
    - ``progress``: print a progress bar over the time interval to stderr.
    - ``compile``: run the solver's step function under ``torch.compile`` (compiled once per
      solver, vector field and state layout, then reused by later solves).
    - ``gradient``: how the solve is differentiated: ``"backprop"`` (default), ``"checkpoint"``,
      ``"adjoint"``, ``"reversible"``, or a strategy object with its options
      (:class:`Backprop`, :class:`Checkpoint`, :class:`Adjoint`, :class:`Reversible`).
      Gradients reach ``y0``, what ``f`` uses (``Adjoint``: its ``params``) and ``t_eval``.
    - ``event``: an :class:`Event`: stop at a zero crossing of its condition (outputs after it
      are NaN), or apply its ``jump`` there and continue; ``sol.event_ts``/``sol.event_ys`` hold
      the (differentiable) event times and states.

    Outputs between steps come from the solver's continuous extension; steps are never
    shortened to hit output times, but the last step lands exactly on the final time.

    **Returns:** a :class:`Solution` with ``ts``, ``ys`` (time first), ``stats``, ``status``.

    ```python
    import torch, torchnde as nde
    sol = nde.solve(lambda t, y: -y, torch.tensor([1.0, 2.0]), torch.linspace(0, 1, 3))
    sol.ys[-1]  # tensor([0.3679, 0.7358])
    ```
    """
    if unknown:
        raise TypeError(
            f"solve() got unknown option(s) {sorted(unknown)}; valid options: {', '.join(_OPTIONS)}"
        )
    return _solve(f, y0, t_eval, solver, rtol, atol, dt, controller, per_sample, dense, save_steps,
                  max_steps, throw, progress, compile, gradient, event)[0]  # fmt: skip


def _solve(
    f: Callable, y0: Any, t_eval: Any, solver: Any, rtol: Any, atol: Any, dt: Any, controller: Any,
    per_sample: bool, dense: bool, save_steps: bool, max_steps: int, throw: bool, progress: bool,
    compile: bool, gradient: Any, event: Event | None = None,
) -> tuple[Solution, _Raw | None]:  # fmt: skip
    """:func:`solve`, also returning the loop's raw result (``None`` for a single time)."""
    method = resolve_solver(solver)
    ctrl = _controller(method, controller, rtol, atol, dt)
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
    strategy = resolve_gradient(gradient)
    _check_strategy(strategy, method, per_sample, compile)
    problem = _Problem.build(f, y0, t_eval, per_sample)
    problem.jacobian = getattr(method, "jacobian", None)  # a user Jacobian of an implicit solver
    if method.separable_pair and not (
        problem.is_tuple and len(problem.sizes) == 2 and problem.sizes[0] == problem.sizes[1]
    ):
        raise ValueError(
            f"solver {method.name!r} integrates a separable pair: pass y0 as a tuple (q, p) of two "
            "equally shaped tensors, with f(t, (q, p)) returning (dq/dt, dp/dt)"
        )
    if problem.n_out == 1:
        return problem.trivial_solution(dense), None
    _check_event(event, method, strategy, per_sample, dense, compile)
    opts = _LoopOptions(
        max_steps, dense, save_steps, progress, compile, isinstance(strategy, Checkpoint), event
    )
    loop = _loop_per_sample if per_sample else _loop_global
    if method.reversible:
        from .gradients.reversible import loop_reversible

        loop = loop_reversible
    recording = torch.is_grad_enabled()
    time_grad = recording and problem.t_eval.requires_grad
    if time_grad:
        _attach_start_time(problem)
    backward_stats = None
    if recording and isinstance(strategy, (Adjoint, Reversible)):
        from .gradients.adjoint import run_adjoint
        from .gradients.reversible import run_reversible

        params = strategy.parameters(f)

        def run(y: torch.Tensor) -> _Raw:
            with torch.no_grad():
                return loop(dataclasses.replace(problem, y0=y), method, ctrl, opts)

        if isinstance(strategy, Reversible):
            raw, backward_stats = run_reversible(problem, method, params, run)
        elif problem.y0.requires_grad or params:
            raw, backward_stats = run_adjoint(problem, method, ctrl, strategy, params, run, max_steps)
        else:
            raw = run(problem.y0)
    else:
        raw = loop(problem, method, ctrl, opts)
    if time_grad:
        raw.ys = _attach_output_times(problem, raw.ys)
    sol = problem.solution(raw)
    sol.backward_stats = backward_stats
    if not per_sample and sol.status == Status.SUCCESS:
        sol.advice = _stiffness_advice(problem, method, ctrl, raw)
    if throw and not sol.success:
        raw.precision_hint = _precision_hint(ctrl, problem.dtype)
        raise _error(sol, raw, method)
    return sol, raw


def _check_strategy(
    strategy: AbstractGradient, method: AbstractSolver, per_sample: bool, compile: bool
) -> None:
    """Reject combinations a strategy does not support, before any work is done."""
    reversible = method.reversible
    if isinstance(strategy, Reversible) and not reversible:
        raise ValueError(
            f"gradient='reversible' needs an algebraically reversible solver, got {method.name!r}: "
            "use solver='reversible_heun'"
        )
    if reversible and isinstance(strategy, (Adjoint, Checkpoint)):
        raise ValueError(
            f"solver {method.name!r} supports gradient='reversible' and 'backprop', not {strategy.name!r}"
        )
    if method.separable_pair and isinstance(strategy, Adjoint) and strategy.solver is None:
        raise ValueError(
            f"the adjoint system is not a separable pair, so {method.name!r} cannot solve it: "
            "pass Adjoint(solver='rk4') (with dt=...) or another general solver"
        )
    if per_sample and not method.supports_per_sample:
        raise ValueError(f"solver {method.name!r} does not support per_sample=True yet: use 'rodas5p'")
    if method.implicit and compile:
        raise ValueError(f"compile=True is not supported with the implicit solver {method.name!r}")
    if compile and isinstance(strategy, (Checkpoint, Reversible)):
        raise ValueError(f"compile=True is not supported with gradient={strategy.name!r} yet")


def _check_event(event: Any, method: AbstractSolver, strategy: AbstractGradient, per_sample: bool,
                 dense: bool, compile: bool) -> None:  # fmt: skip
    if event is None:
        return
    if not isinstance(event, Event):
        raise TypeError(f"event must be a torchnde.Event, got {type(event).__name__}")
    unsupported = [
        (dense, "dense=True"),
        (compile, "compile=True"),
        (isinstance(strategy, (Adjoint, Reversible)), f"gradient={strategy.name!r}"),
        (method.reversible, f"solver={method.name!r}"),
    ]
    for bad, what in unsupported:
        if bad:
            raise ValueError(
                f"events do not support {what} yet: use a global solve with 'backprop' or 'checkpoint'"
            )


def _attach_start_time(problem: _Problem) -> None:
    """Make the loop's initial state depend on ``t_eval``'s first time (see gradients.times)."""
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


def _attach_output_times(problem: _Problem, ys: torch.Tensor) -> torch.Tensor:
    """Make the outputs ``ys`` (loop layout) depend on ``t_eval`` (see gradients.times)."""
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


@functools.lru_cache(maxsize=64)
def _scalar(value: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A 0-d tensor of ``value``, shared between solves (never written to; created outside
    inference mode, so that a solve under ``torch.inference_mode`` cannot poison the cache)."""
    with torch.inference_mode(False):
        return torch.tensor(value, dtype=dtype, device=device)


@functools.lru_cache(maxsize=64)
def _default_pid(rtol: float, atol: float) -> PIDController:
    return PIDController(rtol, atol)


def _controller(
    method: AbstractSolver, controller: Any, rtol: Any, atol: Any, dt: float | None
) -> ConstantStep | PIDController:
    if controller is not None:
        if rtol is not None or atol is not None or dt is not None:
            raise ValueError(
                "pass tolerances or dt either as solve(rtol=, atol=, dt=) or on the controller "
                "object, not both"
            )
        if not isinstance(controller, (ConstantStep, PIDController)):
            raise TypeError(
                f"controller must be ConstantStep or PIDController, got {type(controller).__name__}"
            )
        ctrl = controller
    elif dt is not None:
        if rtol is not None or atol is not None:
            raise ValueError("dt= selects constant steps, which ignore rtol/atol: pass one or the other")
        ctrl = ConstantStep(dt)
    elif method.adaptive:
        rtol = 1e-6 if rtol is None else rtol
        atol = 1e-8 if atol is None else atol
        if isinstance(rtol, float) and isinstance(atol, float):
            ctrl = _default_pid(rtol, atol)  # frozen, so one object serves every solve
        else:
            ctrl = PIDController(rtol, atol)
    else:
        raise ValueError(
            f"solver {method.name!r} has no error estimate: pass dt=... (or "
            "controller=ConstantStep(dt)), or choose an adaptive solver such as 'tsit5'"
        )
    if ctrl.adaptive and not method.adaptive:
        raise ValueError(
            f"solver {method.name!r} has no error estimate, so it cannot use PIDController: "
            "use ConstantStep(dt), or an adaptive solver such as 'tsit5' or 'dopri5'"
        )
    return ctrl


# --------------------------------------------------------------------------------------------
# The problem: flattening, time reversal, the user's vector field and the output shape.


def _is_tuple(y: Any) -> bool:
    return isinstance(y, (tuple, list))


@dataclass
class _Problem:
    f: Callable
    is_tuple: bool
    shapes: list[torch.Size]  # per-component shapes (per sample: without the batch axis)
    sizes: list[int]
    dtype: torch.dtype
    device: torch.device
    per_sample: bool
    batch: int
    direction: float  # +1 forwards, -1 backwards
    t_eval: torch.Tensor  # as given by the user
    s_eval_: torch.Tensor | None  # float64 forward times, [n] or [B, n]; see ``s_eval``
    s_host: list[float] | None  # the same on the host, for 1-D t_eval
    y0: torch.Tensor  # the loop's state: y0 itself, or a tuple flattened to [N] or [B, N]
    n_out: int
    nfe_counter: list[int]
    jacobian: Callable | None = None  # the user's df/dy(t, y) (an implicit solver's option)

    @staticmethod
    def build(f: Callable, y0: Any, t_eval: Any, per_sample: bool) -> _Problem:
        if not callable(f):
            raise TypeError(f"f must be callable as f(t, y), got {type(f).__name__}")
        is_tuple = _is_tuple(y0)
        parts = list(y0) if is_tuple else [y0]
        if not parts or not all(isinstance(p, torch.Tensor) for p in parts):
            raise TypeError("y0 must be a tensor or a non-empty tuple of tensors")
        dtype, device = parts[0].dtype, parts[0].device
        for p in parts:
            if not p.is_floating_point():
                raise TypeError(
                    f"y0 has dtype {p.dtype}: states must be floating point, e.g. y0.to(torch.float32)"
                )
            if p.dtype != dtype:
                raise TypeError(
                    f"all parts of a tuple state must share one dtype, got {dtype} and {p.dtype}: "
                    "cast them, e.g. tuple(y.to(torch.float64) for y in y0)"
                )
            if p.device != device:
                raise ValueError(
                    f"all parts of a tuple state must be on one device, got {device} and {p.device}"
                )
        if per_sample:
            if any(p.ndim == 0 for p in parts):
                raise ValueError("per_sample=True needs a leading batch axis on y0, got a 0-d tensor")
            batch = parts[0].shape[0]
            if any(p.shape[0] != batch for p in parts):
                raise ValueError("per_sample=True needs every part of y0 to share the leading batch size")
            shapes = [p.shape[1:] for p in parts]
        else:
            batch = 1
            shapes = [p.shape for p in parts]
        sizes = [math.prod(s) for s in shapes]
        t, s_eval, direction, s_host = _check_times(t_eval, per_sample, batch, device)
        # The loop's state: a single tensor keeps its own shape (so f is called on it directly);
        # a tuple is concatenated into one flat vector per sample.
        if not is_tuple:
            state = y0
        elif per_sample:
            state = torch.cat([p.reshape(batch, -1) for p in parts], 1)
        else:
            state = torch.cat([p.reshape(-1) for p in parts])
        return _Problem(f, is_tuple, shapes, sizes, dtype, device, per_sample, batch, direction,
                        t, s_eval, s_host, state, t.shape[-1], [0])  # fmt: skip

    @property
    def s_eval(self) -> torch.Tensor:
        """The forward times as float64 on the state's device, ``[n]`` or ``[B, n]``; for 1-D
        ``t_eval`` in the global layout built on first use (the loop itself reads ``s_host``)."""
        if self.s_eval_ is None:
            self.s_eval_ = torch.tensor(self.s_host, dtype=torch.float64, device=self.device)
        return self.s_eval_

    # -- the vector field in the loop's layout -----------------------------------------------

    def unflatten(self, y: torch.Tensor, lead: tuple[int, ...]) -> Any:
        if not self.is_tuple:
            return y.view((*lead, *self.shapes[0]))
        pieces = torch.split(y, self.sizes, dim=-1)
        return tuple(p.reshape((*lead, *s)) for p, s in zip(pieces, self.shapes))

    def _user_time(self, s: Any) -> torch.Tensor:
        if self.per_sample:
            t = (s if self.direction > 0 else -s).to(self.dtype)
            return t.view(-1, *([1] * len(self.shapes[0])))  # -1: compaction may shrink the batch
        if isinstance(s, torch.Tensor):  # e.g. a time being differentiated (Rosenbrock's df/dt)
            return (s * self.direction).to(self.dtype)
        return torch.scalar_tensor(s * self.direction, dtype=self.dtype, device=self.device)

    def checked_f0(self) -> torch.Tensor:
        """Evaluate ``f`` once at the initial point, checking what it returns."""
        lead = (self.batch,) if self.per_sample else ()
        s0 = self.s_eval[:, 0] if self.per_sample else self.s_host[0]
        out = self.f(self._user_time(s0), self.unflatten(self.y0, lead))
        self.nfe_counter[0] += 1
        if type(out) is torch.Tensor and out.shape == self.y0.shape and out.dtype == self.dtype:
            return out if self.direction > 0 else -out  # a single tensor, as it should be
        outs = list(out) if _is_tuple(out) else [out]
        if _is_tuple(out) != self.is_tuple or len(outs) != len(self.shapes):
            raise TypeError(
                f"f must return the same structure as y0 ({'a tuple of ' + str(len(self.shapes)) if self.is_tuple else 'a tensor'}), "
                f"got {type(out).__name__}"
            )
        for i, (o, shape) in enumerate(zip(outs, self.shapes)):
            want = torch.Size(lead) + shape
            where = f"part {i} of " if self.is_tuple else ""
            if not isinstance(o, torch.Tensor):
                raise TypeError(f"f returned {type(o).__name__} for {where}dy/dt: return a tensor")
            if o.shape != want:
                raise ValueError(
                    f"f returned shape {tuple(o.shape)} for {where}dy/dt but y has shape {tuple(want)}: "
                    "f(t, y) must return a tensor shaped like y"
                )
            if o.dtype != self.dtype:
                raise TypeError(
                    f"f returned dtype {o.dtype} for {where}dy/dt but y is {self.dtype}: cast inside f, "
                    f"e.g. return out.to(y.dtype)"
                )
        return self._flatten_out(out, lead)

    @property
    def numel(self) -> int:
        """Elements per sample (global: of the whole state)."""
        return sum(self.sizes)

    def _flatten_out(self, out: Any, lead: tuple[int, ...]) -> torch.Tensor:
        flat = torch.cat([o.reshape((*lead, -1)) for o in out], -1) if self.is_tuple else out
        return flat if self.direction > 0 else -flat

    def func(self, count: bool = True) -> Callable[[Any, torch.Tensor], torch.Tensor]:
        """``func(s, y) -> dy/ds`` in the loop's layout, counting evaluations unless
        ``count=False`` (a compiled step counts them itself)."""
        f, lead = self.f, ((self.batch,) if self.per_sample else ())
        counter = self.nfe_counter if count else [0]
        user_time, flatten = self._user_time, self._flatten_out
        if not self.is_tuple and self.direction > 0:
            if self.per_sample:

                def fast(s: Any, y: torch.Tensor) -> torch.Tensor:
                    counter[0] += 1
                    return f(user_time(s), y)

                return self._with_jacobian(fast)
            scalar, dtype, device = torch.scalar_tensor, self.dtype, self.device

            def fastest(s: float, y: torch.Tensor) -> torch.Tensor:  # the hot path
                counter[0] += 1
                if isinstance(s, torch.Tensor):
                    return f(s.to(dtype), y)
                return f(scalar(s, dtype=dtype, device=device), y)

            return self._with_jacobian(fastest)
        unflatten, per_sample = self.unflatten, self.per_sample

        def general(s: Any, y: torch.Tensor) -> torch.Tensor:
            counter[0] += 1
            rows = (y.shape[0],) if per_sample else lead
            return flatten(f(user_time(s), unflatten(y, rows)), rows)

        return self._with_jacobian(general)

    def _with_jacobian(self, func: Callable) -> Callable:
        """Tag the loop's ``func`` with the user's Jacobian in the loop's layout (``func.jacobian(s,
        y)``: ``[N, N]``, per sample ``[B, N, N]``), which :func:`solvers.jacobian.jacobians` uses
        instead of autograd. Only this problem's own field carries it: a field that wraps ``func``
        (a reversible grid) falls back to autograd, and the adjoint solves its augmented system
        with a copy of the solver without the option (``gradients.adjoint._adjoint_solver``)."""
        user = self.jacobian
        if user is None:
            return func
        per_sample, n, sign = self.per_sample, self.numel, self.direction
        user_time, unflatten = self._user_time, self.unflatten

        def jacobian(s: Any, y: torch.Tensor) -> torch.Tensor:
            lead = (y.shape[0],) if per_sample else ()
            out = user(user_time(s), unflatten(y, lead))
            want = (*lead, n, n)
            if not isinstance(out, torch.Tensor) or out.shape != want or out.dtype != y.dtype:
                got = (
                    f"{tuple(out.shape)} {out.dtype}" if isinstance(out, torch.Tensor) else type(out).__name__
                )
                raise ValueError(
                    f"the solver's jacobian(t, y) must return df/dy over the flattened state as a "
                    f"{y.dtype} tensor of shape {want}{' (one matrix per sample)' if per_sample else ''}, "
                    f"got {got}; for a tuple state, order rows and columns as the parts concatenated"
                )
            return out if sign > 0 else -out

        func.jacobian = jacobian  # type: ignore[attr-defined]
        return func

    # -- results ------------------------------------------------------------------------------

    def trivial_solution(self, dense: bool) -> Solution:
        ys = self.y0.unsqueeze(0)
        lead = (1, self.batch) if self.per_sample else (1,)
        status: Any = torch.zeros(self.batch, dtype=torch.int64) if self.per_sample else Status.SUCCESS
        return Solution(self.t_eval, self.unflatten(ys, lead), Stats(), status)

    def solution(self, raw: _Raw) -> Solution:
        if self.per_sample:
            ys = raw.ys.permute(1, 0, 2)  # [n, B, N]
            lead: tuple[int, ...] = (self.n_out, self.batch)
        else:
            ys, lead = raw.ys, (self.n_out,)
        step_ts = step_ys = None
        if raw.step_s is not None:
            step_ts = raw.step_s * self.direction
            step_ys = self.unflatten(raw.step_y, tuple(raw.step_s.shape))
        evaluate = None
        if raw.dense is not None:
            evaluate = self._evaluator(raw.dense)
        sol = Solution(
            self.t_eval, self.unflatten(ys, lead), raw.stats, raw.status, step_ts, step_ys, evaluate
        )
        if raw.events is not None and self.per_sample:  # [B, K] and [B, K, N], NaN padded
            times, states = raw.events
            sol.event_ts = times
            sol.event_ys = self.unflatten(states, tuple(times.shape))
        elif raw.events is not None:
            times, states = raw.events
            sol.event_ts = torch.stack(times) if times else torch.empty(0, dtype=torch.float64)
            stacked = torch.stack(states) if states else self.y0.new_empty((0, *self.y0.shape))
            sol.event_ys = self.unflatten(stacked, (len(states),))
        return sol

    def _evaluator(self, dense: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Any], Any]:
        def evaluate(t: Any) -> Any:
            t = torch.as_tensor(t, dtype=torch.float64, device=self.device)
            flat = dense(t * self.direction)  # [*lead, numel]
            return self.unflatten(flat, tuple(flat.shape[:-1]))

        return evaluate


def _check_times(
    t_eval: Any, per_sample: bool, batch: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None, float, list[float] | None]:
    """The user's times, forward times ``s = direction * t`` as float64 on the state's device
    (``None`` for 1-D ``t_eval`` in the global layout: see ``_Problem.s_eval``), the direction,
    and (for 1-D ``t_eval``) ``s`` as a host list."""
    if not isinstance(t_eval, torch.Tensor):
        try:
            t_eval = torch.as_tensor(t_eval, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"t_eval must be a 1-D tensor of times, got {type(t_eval).__name__}") from err
    if t_eval.is_complex() or t_eval.dtype == torch.bool:
        raise TypeError(f"t_eval must be real, got dtype {t_eval.dtype}")
    allowed = (1, 2) if per_sample else (1,)
    if t_eval.ndim not in allowed:
        shape = "[n] or [batch, n]" if per_sample else "[n] (1-D)"
        raise ValueError(f"t_eval must have shape {shape}, got {tuple(t_eval.shape)}")
    if t_eval.shape[-1] < 1:
        raise ValueError("t_eval must contain at least the initial time")
    if per_sample and t_eval.ndim == 2 and t_eval.shape[0] != batch:
        raise ValueError(f"per-sample t_eval has {t_eval.shape[0]} rows but y0 has batch {batch}")
    if t_eval.ndim == 1:  # the common case: check on the host, one transfer
        host = list(map(float, t_eval.detach().tolist()))
        if not all(map(math.isfinite, host)):
            raise ValueError("t_eval must be finite")
        later = host[1:]
        rising = all(map(operator.lt, host, later))
        if not rising and not all(map(operator.gt, host, later)):
            raise ValueError(_NOT_MONOTONIC)
        direction = 1.0 if rising else -1.0
        host = [v * direction for v in host]
        if not per_sample:  # the loop reads ``host``; the tensor is built on first use
            return t_eval, None, direction, host
        s = torch.tensor(host, dtype=torch.float64, device=device).expand(batch, -1).contiguous()
        return t_eval, s, direction, host
    s = t_eval.detach().to(device=device, dtype=torch.float64)
    if not bool(torch.isfinite(s).all()):
        raise ValueError("t_eval must be finite")
    diffs = s.diff(dim=-1)
    direction = 1.0
    if diffs.numel():
        if bool((diffs > 0).all()):
            direction = 1.0
        elif bool((diffs < 0).all()):
            direction = -1.0
        else:
            raise ValueError(_NOT_MONOTONIC)
    return t_eval, (s * direction).contiguous(), direction, None


_NOT_MONOTONIC = (
    "t_eval must be strictly monotonic (all increasing or all decreasing, no repeats): "
    "sort it, e.g. torch.sort(t_eval).values"
)


@dataclass(frozen=True)
class _LoopOptions:
    max_steps: int
    dense: bool
    save_steps: bool
    progress: bool
    compile: bool
    checkpoint: bool = False  # recompute each step in the backward pass (gradient="checkpoint")
    event: Any = None  # an Event to watch (global layout)


def _checkpointed(fn: Callable, enabled: bool) -> Callable:
    """``fn`` under non-reentrant activation checkpointing when ``enabled`` and autograd is
    recording: its saved tensors are dropped after the call and recomputed by the backward pass,
    so the graph keeps only ``fn``'s inputs (a step's state and derivative). A solver's state
    (an implicit method's Jacobian cache and Newton rate) is one of a step's arguments, never
    mutated, so the replay with the same arguments is exact."""
    if not enabled or not torch.is_grad_enabled():
        return fn
    from torch.utils.checkpoint import checkpoint

    def call(*args: Any) -> Any:
        # f is assumed deterministic (the RNG state would cost ~5 kB per step to keep)
        return checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=False)

    return call


_COMPILED: dict[tuple, Callable] = {}
_COMPILED_MAX = 16


def _compiled_step(problem: _Problem, solver: AbstractSolver) -> Callable:
    """``solver.step`` under ``torch.compile``, cached by everything the trace depends on.

    The cache holds at most ``_COMPILED_MAX`` entries (oldest evicted), since an entry keeps its
    vector field alive.
    """
    key = (type(solver), id(problem.f), problem.per_sample, problem.direction, problem.is_tuple,
           tuple(problem.shapes), problem.batch, problem.dtype, problem.device)  # fmt: skip
    compiled = _COMPILED.get(key)
    if compiled is None:
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.pop(next(iter(_COMPILED)))
        uncounted = problem.func(count=False)

        def step(s: Any, y: torch.Tensor, f0: torch.Tensor, h: Any, need_error: bool, state: Any) -> Any:
            return solver.step(uncounted, s, y, f0, h, need_error, state)

        compiled = _COMPILED[key] = torch.compile(step, dynamic=True)
    evals = solver.evaluations_per_step or 0
    counter = problem.nfe_counter

    def call(
        _func: Callable, s: Any, y: torch.Tensor, f0: torch.Tensor, h: Any, need_error: bool, state: Any
    ) -> Any:
        counter[0] += evals
        return compiled(s, y, f0, h, need_error, state)

    return call


@dataclass
class _Raw:
    ys: torch.Tensor  # [n, N] or [B, n, N]
    stats: Stats
    status: Any
    fail_time: Any = None
    fail_dt: Any = None
    step_s: torch.Tensor | None = None
    step_y: torch.Tensor | None = None
    dense: Callable[[torch.Tensor], torch.Tensor] | None = None
    stiff_check: Callable[[], Any] | None = None  # lazily: does the failure look like stiffness?
    precision_hint: str | None = None  # set when rtol is below what the state's dtype resolves
    reversible: Any = None  # reversible solvers: (step grid, final y, final solver state)
    next_dt: float | None = None  # global adaptive: the step size the controller would take next
    events: Any = None  # (event times, event states) when an Event was watched


def _layout_tolerance(problem: _Problem, tol: Any, name: str) -> Any:
    """A float, or the tolerance broadcast to the state in the loop's layout."""
    if isinstance(tol, (int, float)):
        return float(tol)
    parts = list(tol) if _is_tuple(tol) else [tol]
    if len(parts) != len(problem.shapes):
        raise ValueError(f"{name} has {len(parts)} parts for a state of {len(problem.shapes)}")
    lead = (problem.batch,) if problem.per_sample else ()
    flat = []
    for p, shape in zip(parts, problem.shapes):
        p = torch.as_tensor(p, dtype=problem.dtype, device=problem.device)
        try:
            p = p.broadcast_to((*lead, *shape))
        except RuntimeError as err:
            raise ValueError(
                f"{name} of shape {tuple(p.shape)} does not broadcast to the state {(*lead, *shape)}"
            ) from err
        flat.append(p if not problem.is_tuple else p.reshape(*lead, -1))
    return torch.cat(flat, -1) if problem.is_tuple else flat[0]


class _Progress:
    """A dependency-free progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, s0: float, s1: float, enabled: bool):
        self.s0, self.span, self.enabled, self.last = s0, max(s1 - s0, 1e-300), enabled, 0.0

    def update(self, s: float, steps: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = _time.perf_counter()
        if not force and now - self.last < 0.1:
            return
        self.last = now
        frac = min(max((s - self.s0) / self.span, 0.0), 1.0)
        bar = "#" * int(30 * frac)
        sys.stderr.write(f"\rsolve [{bar:<30}] {100 * frac:5.1f}%  steps={steps}")
        if force:
            sys.stderr.write("\n")
        sys.stderr.flush()


class _ErrorNorm:
    """``|dt| * combine(norm(e / (atol + rtol * max(|y0|, |y1|))))`` for one solve.

    In the global layout it returns a Python float (the step's one synchronisation, also for
    solvers with two estimates); per sample a float64 ``[B]`` tensor. The default RMS norm is
    split into a device-side 2-norm and a host-side division by ``sqrt(N)``.
    """

    def __init__(self, problem: _Problem, solver: AbstractSolver, ctrl: PIDController):
        self.solver = solver
        self.rtol = _layout_tolerance(problem, ctrl.rtol, "rtol")
        atol = _layout_tolerance(problem, ctrl.atol, "atol")
        self.atol = (
            _scalar(atol, problem.dtype, problem.device)
            if isinstance(atol, float)
            else torch.as_tensor(atol, dtype=problem.dtype, device=problem.device)
        )
        self.per_sample = problem.per_sample
        self._abs: tuple[Any, Any] = (None, None)
        user = ctrl.norm
        if problem.per_sample:
            norm = user or rms_norm
            self.norm = lambda x: norm(x.reshape(x.shape[0], -1))
        else:
            if user is None:  # RMS: a device-side 2-norm, divided by sqrt(N) on the host
                self._tensor_norm, self._factor = torch.linalg.vector_norm, 1.0 / math.sqrt(problem.numel)
            else:
                self._tensor_norm, self._factor = (lambda x: user(x.reshape(-1))), 1.0
            self.norm = lambda x: float(self._tensor_norm(x)) * self._factor

    def select(self, keep: torch.Tensor) -> None:
        """Follow a compacted per-sample batch: per-sample tolerances keep only ``keep``."""
        if isinstance(self.rtol, torch.Tensor) and self.rtol.ndim > 0:
            self.rtol = self.rtol[keep]
        if self.atol.ndim > 0:
            self.atol = self.atol[keep]
        self._abs = (None, None)

    def scale(self, y: torch.Tensor, y1: torch.Tensor | None = None) -> torch.Tensor:
        if y1 is None:
            big = y.abs()
        else:  # |y0| is the previous step's |y1| when that step was accepted
            a0 = self._abs[1] if self._abs[0] is y else y.abs()
            a1 = y1.abs()
            self._abs = (y1, a1)
            big = torch.maximum(a0, a1)
        if isinstance(self.rtol, float):
            return torch.add(self.atol, big, alpha=self.rtol)
        return torch.addcmul(self.atol, self.rtol, big)

    def __call__(self, y0: torch.Tensor, y1: torch.Tensor, errors: tuple[torch.Tensor, ...], h: Any) -> Any:
        grad = torch.is_grad_enabled()
        if grad:  # step-size decisions are not differentiated (cheaper than a no_grad context)
            torch.set_grad_enabled(False)
        try:
            scale = self.scale(y0, y1)
            if self.per_sample:
                norms = tuple(self.norm(e / scale).to(torch.float64) for e in errors)
                return self.solver.combine_error_norms(norms) * h
            if len(errors) == 1:
                norms = (self.norm(errors[0] / scale),)
            else:  # several estimates (DOP853): still one transfer to the host
                both = torch.stack([self._tensor_norm(e / scale) for e in errors]).tolist()
                norms = tuple(n * self._factor for n in both)
            return self.solver.combine_error_norms(norms) * abs(h)
        finally:
            if grad:
                torch.set_grad_enabled(True)


# --------------------------------------------------------------------------------------------
# Global layout: host-side control, one sync per adaptive step.


def _stops(ctrl: Any, direction: float, s0: float, s1: float) -> tuple[list[float], set[float]]:
    stops: set[float] = set()
    jumps: set[float] = set()
    for name in ("step_ts", "jump_ts"):
        times = getattr(ctrl, name)
        if times is None:
            continue
        for t in (times * direction).tolist():
            if s0 < t < s1:
                stops.add(t)
                if name == "jump_ts":
                    jumps.add(t)
    return sorted(stops), jumps


def _loop_global(
    problem: _Problem, solver: AbstractSolver, ctrl: ConstantStep | PIDController, opts: _LoopOptions
) -> _Raw:
    max_steps, dense, save_steps, progress = opts.max_steps, opts.dense, opts.save_steps, opts.progress
    func = problem.func()
    step = _compiled_step(problem, solver) if opts.compile else solver.step
    step = _checkpointed(step, opts.checkpoint)
    dense_stages = _checkpointed(solver.dense_stages, opts.checkpoint)
    derivative = _checkpointed(func, opts.checkpoint)
    s_out = problem.s_host
    s0, s1 = s_out[0], s_out[-1]
    stops, jumps = _stops(ctrl, problem.direction, s0, s1)
    stops.append(s1)
    y = problem.y0
    f0: torch.Tensor | None = problem.checked_f0()
    solver_state = solver.init_state(ctrl)  # threaded through every step (StepResult.state)
    adaptive = ctrl.adaptive
    if adaptive:
        error_norm = _ErrorNorm(problem, solver, ctrl)
        beta1, beta2, beta3 = ctrl.exponents(solver.error_order)
        dtmin = ctrl.dtmin or 0.0
        dtmax = ctrl.dtmax or math.inf
        if ctrl.dt0 is not None:
            dt = ctrl.dt0
        else:
            with torch.no_grad():
                dt = initial_step_size(
                    func, s0, y, f0, solver.error_order, error_norm.scale(y), error_norm.norm
                )
        dt = min(dt, dtmax)
        inv1 = inv2 = 1.0
        after_reject = False
    else:
        dt = ctrl.dt
    outputs: list[torch.Tensor] = [y.unsqueeze(0)]  # chunks of [m, *state], concatenated at the end
    next_out = 1
    steps = accepted = rejected = 0
    status = Status.SUCCESS
    s = s0
    stop_idx = 0
    step_s: list[float] = []
    step_y: list[torch.Tensor] = []
    dense_pieces: list[tuple[float, float, torch.Tensor, torch.Tensor]] = []
    bar = _Progress(s0, s1, progress)
    fail_dt = None
    watch = _EventWatch(problem, func, opts.event, s0, y) if opts.event is not None else None
    while s < s1:
        if steps >= max_steps:
            status = Status.MAX_STEPS
            break
        while stops[stop_idx] <= s:
            stop_idx += 1
        s_stop = stops[stop_idx]
        land = s + dt * _STRETCH >= s_stop
        h = unclipped = dt
        if land:  # just short of a jump, so no stage sees f on the far side of it
            h = (math.nextafter(s_stop, -math.inf) if s_stop in jumps else s_stop) - s
        if f0 is None:
            f0 = derivative(_after(s) if s in jumps else s, y)
        res = step(func, s, y, f0, h, adaptive, solver_state)
        solver_state = res.state  # also after a rejected step
        steps += 1
        if res.converged is not True and not bool(res.converged):  # an implicit solve failed
            if not adaptive:
                status, fail_dt = Status.NO_CONVERGENCE, h
                break
            rejected += 1
            dt, after_reject = h * 0.25, True
            if dt < dtmin or s + dt == s:
                status, fail_dt = Status.DT_MIN, dt
                break
            continue
        if adaptive:
            err = error_norm(y, res.y1, res.errors, h)  # the one host synchronisation of a step
            if not math.isfinite(err):
                status, fail_dt = Status.NONFINITE, h
                break
            accept = err <= 1.0
            inv = 1.0 / err if err > 0 else math.inf
            factor = ctrl.safety * inv**beta1
            if beta2:
                factor *= inv1**beta2
            if beta3:
                factor *= inv2**beta3
            factor = min(max(factor, ctrl.factor_min), ctrl.factor_max)
        else:
            accept = True
        if accept:
            accepted += 1
            s_new = s_stop if land else s + h
            f1 = res.f1
            interior = next_out < len(s_out) and s_out[next_out] < s_new
            crossed = False
            if watch is not None:  # an event's condition at the step's end (one more host read)
                g_new = watch.value(s_new, res.y1)
                crossed = watch.event.crossed(watch.g_prev, g_new)
            if (
                (interior or dense or crossed)
                and solver.needs_end_derivative
                and (f1 is None or not solver.f1_exact)
            ):
                f1 = derivative(s_new, res.y1)
            stages = None
            if interior or dense or crossed:  # outputs at the step's end need no continuous extension
                stages = dense_stages(func, s, y, h, res, f1)
                if dense:
                    dense_pieces.append((s, h, y, stages))
            s_end, y_end = s_new, res.y1
            if crossed:
                assert watch is not None and stages is not None
                s_end, y_end = watch.locate(solver, s, h, y, stages, g_new, res.y1)
            while next_out < len(s_out) and s_out[next_out] <= s_end:
                hi = next_out
                while hi < len(s_out) and s_out[hi] < s_end:
                    hi += 1
                if hi > next_out:  # strictly inside the step: interpolate
                    outputs.append(_interpolate_host(solver, s, h, y, stages, s_out[next_out:hi]))
                    next_out = hi
                if next_out < len(s_out) and s_out[next_out] == s_end:
                    outputs.append(y_end.unsqueeze(0))
                    next_out += 1
            if save_steps:
                step_s.append(s_end)
                step_y.append(y_end)
            if crossed:
                assert watch is not None
                s, y = s_end, watch.fire(s_end, y_end)
                if watch.event.terminal:
                    break
                if len(watch.times) > watch.event.max_events:
                    status, fail_dt = Status.MAX_STEPS, h
                    break
                f0 = None  # the state jumped: no first-same-as-last
                bar.update(s, steps)
                continue
            if watch is not None:
                watch.g_prev = g_new
            s, y = s_new, res.y1
            f0 = None if land and s_stop in jumps else f1  # f1: FSAL, or computed for outputs
            if adaptive:
                inv2, inv1 = inv1, inv
                dt = min(h * (min(factor, 1.0) if after_reject else factor), dtmax)
                after_reject = False
            bar.update(s, steps)
        else:
            rejected += 1
            dt = h * min(factor, 1.0)
            after_reject = True
        if adaptive and s < s1 and (dt < dtmin or s + dt == s):
            status, fail_dt = Status.DT_MIN, dt
            break
    if status == Status.SUCCESS and not adaptive and not bool(torch.isfinite(y).all()):
        status = Status.NONFINITE
    bar.update(s, steps, force=True)
    if next_out < len(s_out):  # after a failure: NaN from there on
        outputs.append(problem.y0.new_full((len(s_out) - next_out, *problem.y0.shape), math.nan))
    ys = torch.cat(outputs)
    nfe = problem.nfe_counter[0]
    raw = _Raw(ys, Stats(nfe, steps, accepted, rejected), status, s * problem.direction, fail_dt)
    if adaptive and steps:  # a step size to continue with; a final step shortened to land on
        raw.next_dt = max(dt, unclipped) if s == s1 else dt  # t1 says little about the scale
    if status in (Status.MAX_STEPS, Status.DT_MIN):
        mean_dt = (s - s0) / max(accepted, 1)
        raw.stiff_check = lambda: bool(_stiffness_ratio(func, s, y, False) * mean_dt > 1.0)
    if save_steps:
        raw.step_s = torch.tensor(step_s, dtype=torch.float64, device=problem.device)
        raw.step_y = torch.stack(step_y) if step_y else problem.y0.new_empty((0, *problem.y0.shape))
    if dense:
        raw.dense = _global_dense(solver, dense_pieces, s0, s)
    if watch is not None:
        raw.events = (watch.times, watch.states)
    return raw


class _EventWatch:
    """The event of a global solve: its condition's last value, crossing location and the
    (differentiable) event times and states so far; see :mod:`torchnde.events`."""

    def __init__(self, problem: _Problem, func: Callable, event: Event, s0: float, y0: torch.Tensor):
        self.problem, self.func, self.event = problem, func, event
        self.times: list[torch.Tensor] = []
        self.states: list[torch.Tensor] = []
        self.g_prev = self.value(s0, y0)

    def _g(self, s: Any, y: torch.Tensor) -> torch.Tensor:
        out = self.event.cond_fn(self.problem._user_time(s), self.problem.unflatten(y, ()))
        if not isinstance(out, torch.Tensor) or out.numel() != 1:
            raise ValueError("Event cond_fn must return a scalar tensor (one value per solve)")
        return out.reshape(())

    def value(self, s: float, y: torch.Tensor) -> float:
        with torch.no_grad():
            return float(self._g(s, y))

    def locate(self, solver: AbstractSolver, s: float, h: float, y: torch.Tensor, stages: torch.Tensor,
               g_new: float, y1: torch.Tensor) -> tuple[float, torch.Tensor]:  # fmt: skip
        """The crossing inside the step ``[s, s + h]`` on its continuous extension."""
        from .events import locate

        def phi(theta: float) -> float:
            with torch.no_grad():
                y_theta = _interpolate_host(solver, s, h, y, stages, [s + theta * h])[0]
                return self.value(s + theta * h, y_theta)

        tol = 4 * sys.float_info.epsilon * max(1.0, abs(s) + abs(h)) / abs(h)
        theta = locate(phi, self.g_prev, g_new, tol)
        if theta >= 1.0:
            return s + h, y1
        s_e = s + theta * h
        return s_e, _interpolate_host(solver, s, h, y, stages, [s_e])[0]

    def fire(self, s_e: float, y_e: torch.Tensor) -> torch.Tensor:
        """Record the event at ``s_e``; return the state to continue from (after ``jump``)."""
        problem, direction = self.problem, self.problem.direction
        t_e = torch.tensor(s_e * direction, dtype=torch.float64, device=problem.device)
        if torch.is_grad_enabled() and (y_e.requires_grad or self._depends_on_parameters(s_e, y_e)):
            t_e, y_e = self._differentiable(s_e, y_e)
        self.times.append(t_e)
        self.states.append(y_e)
        if self.event.terminal:
            return y_e
        if self.event.jump is None:
            self.g_prev = self._leaving_sign(s_e, y_e)
            return y_e
        out = self.event.jump(t_e.to(problem.dtype), problem.unflatten(y_e, ()))
        y_new = problem._flatten_out(out, ()) * direction  # flatten only (undo its time sign)
        if t_e.requires_grad:  # later states depend on the restart time: dy/dt_e = -Phi f
            shift = (t_e - t_e.detach()).to(problem.dtype)
            with torch.no_grad():
                f_new = self.func(s_e, y_new) * direction
            y_new = y_new - shift * f_new
        self.g_prev = self._leaving_sign(s_e, y_new)
        return y_new

    def _rate(self, s_e: float, y: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(dg/dt along the solution, f)`` at ``(s_e, y)``; ``(None, None)`` when ``g`` does not
        depend on ``t`` or ``y``."""
        problem, direction = self.problem, self.problem.direction
        with torch.enable_grad():
            t_ = torch.tensor(s_e * direction, dtype=problem.dtype, device=problem.device, requires_grad=True)
            y_ = y.detach().requires_grad_(True)
            g = self.event.cond_fn(t_, problem.unflatten(y_, ())).reshape(())
            if not g.requires_grad:
                return None, None
            dg_dt, dg_dy = torch.autograd.grad(g, (t_, y_), allow_unused=True)
        with torch.no_grad():
            f_e = self.func(s_e, y.detach()) * direction  # dy/dt
            rate = (dg_dy * f_e).sum() if dg_dy is not None else torch.zeros((), dtype=problem.dtype)
            if dg_dt is not None:
                rate = rate + dg_dt
        return rate, f_e

    def _leaving_sign(self, s_e: float, y: torch.Tensor) -> float:
        """Where ``g`` heads from the zero it sits on, as a tiny signed value: a step that comes
        back through zero is then seen crossing (in time direction, as the solve runs)."""
        rate, _ = self._rate(s_e, y)
        if rate is None or float(rate) == 0.0:
            return 0.0
        return math.copysign(sys.float_info.min, float(rate) * self.problem.direction)

    def _depends_on_parameters(self, s_e: float, y_e: torch.Tensor) -> bool:
        with torch.enable_grad():
            return bool(self._g(s_e, y_e).requires_grad)

    def _differentiable(self, s_e: float, y_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Event time and state carrying the implicit function theorem's derivatives."""
        problem, direction = self.problem, self.problem.direction
        t_const = s_e * direction
        rate, f_e = self._rate(s_e, y_e)
        if rate is None or float(rate) == 0.0:
            raise ValueError("the event condition is tangent to the solution (dg/dt = 0 at the event)")
        g_val = self.event.cond_fn(torch.tensor(t_const, dtype=problem.dtype, device=problem.device),
                                   problem.unflatten(y_e, ())).reshape(())  # fmt: skip
        t_e = t_const - (g_val / rate).to(torch.float64)
        y_out = y_e + f_e * (t_e - t_const).to(problem.dtype)
        return t_e, y_out


def _interpolate_host(
    solver: AbstractSolver, s: float, h: float, y: torch.Tensor, stages: torch.Tensor, s_out: list[float]
) -> torch.Tensor:
    """States ``[m, *state]`` at the times ``s_out`` inside the step ``[s, s + h]``, from its
    continuous extension."""
    poly = solver.dense_polynomial
    matrix_t = poly.matrix_t(y.dtype, y.device)  # [degree, S]
    degree = matrix_t.shape[0]
    powers = [[((si - s) / h) ** k for k in range(1, degree + 1)] for si in s_out]
    weights = torch.tensor(powers, dtype=y.dtype, device=y.device) @ matrix_t  # [m, S]: tiny
    out = torch.addmm(y.reshape(1, -1), weights, stages.reshape(-1, stages.shape[-1]).T, alpha=h)
    return out.view(len(s_out), *y.shape)


def _after(s: float) -> float:
    """The next float after ``s``: ``f`` is evaluated just past a known discontinuity."""
    return math.nextafter(s, math.inf)


def _global_dense(
    solver: AbstractSolver,
    pieces: list[tuple[float, float, torch.Tensor, torch.Tensor]],
    s0: float,
    s_end: float,
) -> Callable[[torch.Tensor], torch.Tensor]:
    starts = [p[0] for p in pieces]

    def dense(s: torch.Tensor) -> torch.Tensor:
        flat = s.reshape(-1).tolist()
        out = []
        for si in flat:
            if not (s0 - 1e-12 * abs(s0) <= si <= s_end + 1e-12 * abs(s_end)) or not pieces:
                raise ValueError(f"evaluate() time {si * 1:.6g} is outside the solved interval")
            k = min(max(bisect.bisect_right(starts, si) - 1, 0), len(pieces) - 1)
            start, h, y, stages = pieces[k]
            out.append(_interpolate_host(solver, start, h, y, stages, [si])[0])
        return torch.stack(out).reshape(*s.shape, -1)  # flat per time: the evaluator unflattens

    return dense


# --------------------------------------------------------------------------------------------
# Per-sample layout: every decision is a masked tensor operation, one sync per step.


def _loop_per_sample(
    problem: _Problem, solver: AbstractSolver, ctrl: ConstantStep | PIDController, opts: _LoopOptions
) -> _Raw:
    max_steps, dense, save_steps, progress = opts.max_steps, opts.dense, opts.save_steps, opts.progress
    func = problem.func()
    step = _compiled_step(problem, solver) if opts.compile else solver.step
    step = _checkpointed(step, opts.checkpoint)
    dense_stages = _checkpointed(solver.dense_stages, opts.checkpoint)
    derivative = _checkpointed(func, opts.checkpoint)
    dev = problem.device
    s_eval = problem.s_eval  # [B, n]
    B, n = s_eval.shape
    N = problem.numel  # per sample
    s = s_eval[:, 0].clone()
    s1 = s_eval[:, -1]
    y = problem.y0
    f0 = problem.checked_f0()
    solver_state = solver.init_state(ctrl)  # threaded through every step (StepResult.state)
    adaptive = ctrl.adaptive
    stop_t = None
    jump_t = None
    times = [ctrl.step_ts, ctrl.jump_ts]
    times = [None if x is None else torch.sort(x.to(dev) * problem.direction).values for x in times]
    if times[0] is not None or times[1] is not None:
        stop_t = torch.cat([x for x in times if x is not None]).sort().values
    jump_t = times[1]
    fsal = solver.fsal and jump_t is None
    ones = torch.ones(B, dtype=torch.float64, device=dev)
    if adaptive:
        error_norm = _ErrorNorm(problem, solver, ctrl)
        beta1, beta2, beta3 = ctrl.exponents(solver.error_order)
        dtmin = ctrl.dtmin or 0.0
        dtmax = ctrl.dtmax or math.inf
        if ctrl.dt0 is not None:
            dt = ones * ctrl.dt0
        else:
            norm = error_norm.norm
            with torch.no_grad():
                dt = initial_step_size(
                    func, s, y, f0, solver.error_order, error_norm.scale(y), lambda x: norm(x).double()
                )
        dt = dt.clamp(max=dtmax)
        inv1 = inv2 = ones
        after_reject = torch.zeros(B, dtype=torch.bool, device=dev)
    else:
        dt = ones * ctrl.dt
    ys = y.new_full((B, n + 1, N), math.nan)  # slot n is a dump slot for masked scatters
    ys[:, 0] = y.reshape(B, N)
    ones_tail = [1] * (y.ndim - 1)

    def col(v: torch.Tensor) -> torch.Tensor:  # a [B] mask or value against the state
        return v.view(-1, *ones_tail)

    ptr = torch.ones(B, dtype=torch.int64, device=dev)
    status = torch.zeros(B, dtype=torch.int64, device=dev)
    running = s < s1
    z = torch.zeros(B, dtype=torch.int64, device=dev)
    nfe, steps, acc = z + problem.nfe_counter[0], z.clone(), z.clone()
    fail_t = torch.full((B,), math.nan, dtype=torch.float64, device=dev)
    fail_dt = fail_t.clone()
    step_s: list[torch.Tensor] = []
    step_y: list[torch.Tensor] = []
    dense_pieces: list[tuple[torch.Tensor, ...]] = []
    arange_cache: dict[int, torch.Tensor] = {}
    bar = _Progress(0.0, 1.0, progress)
    span = (s1 - s).clamp(min=1e-300)
    # Compaction: `rows` maps the working batch onto the samples; `full` holds every sample's
    # results once its rows leave the working batch.
    compact = not dense and not save_steps and opts.event is None
    watch = _SampleEventWatch(problem, func, opts.event, s, y) if opts.event is not None else None
    rows = torch.arange(B, device=dev)
    full = _FullRows()
    any_running = bool(running.any())
    it = 0
    while any_running:
        it += 1
        counted = problem.nfe_counter[0]
        # step end: the next stop (t1, or a step_ts/jump_ts point) strictly after s
        s_stop = s1
        if stop_t is not None:
            idx = torch.searchsorted(stop_t, s, right=True)
            nxt = stop_t[idx.clamp(max=stop_t.numel() - 1)]
            s_stop = torch.where((idx < stop_t.numel()) & (nxt < s1), nxt, s1)
        land = s + dt * _STRETCH >= s_stop
        end = s_stop
        if jump_t is not None:  # stop just short of a jump, so no stage sees its far side
            end = torch.where(torch.isin(s_stop, jump_t), torch.nextafter(s_stop, s_stop - 1), s_stop)
        h = torch.where(land, end - s, dt).mul_(running)  # finished samples stand still
        if not fsal:
            s_f = s
            if jump_t is not None:
                s_f = torch.where(torch.isin(s, jump_t), torch.nextafter(s, s + 1), s)
            f0 = derivative(s_f, y)
        res = step(func, s, y, f0, h, adaptive, solver_state)
        solver_state = res.state  # also after a rejected step
        steps.add_(running)
        if adaptive:
            err = error_norm(y, res.y1, res.errors, h)
            accept = (err <= 1.0) & running  # NaN compares False: a non-finite step is never accepted
            factor = (err.clamp(min=1e-300) ** -beta1).mul_(ctrl.safety)
            if beta2 or beta3:
                inv = 1.0 / err.clamp(min=1e-300)
                factor = factor * inv1**beta2 * inv2**beta3
                inv2 = torch.where(accept, inv1, inv2)
                inv1 = torch.where(accept, inv, inv1)
            factor = factor.clamp_(ctrl.factor_min, ctrl.factor_max)
            converged = res.converged
            if converged is not True:  # an implicit solve failed for some samples: retry at h/4
                accept = accept & converged
                factor = torch.where(converged, factor, 0.25)
            # no growth on a retry, nor on the step that follows a rejection
            factor = torch.where(accept & ~after_reject, factor, factor.clamp(max=1.0))
            after_reject = ~accept
            dt = (h * factor).clamp_(max=dtmax)  # finished samples' dt no longer matters
            nonfinite = running & ~torch.isfinite(err)
            if converged is not True:
                nonfinite = nonfinite & converged
        else:
            finite = torch.isfinite(res.y1.reshape(-1, N)).all(-1)
            if res.converged is not True:
                finite = finite & res.converged  # constant steps: a failed Newton solve ends the sample
            accept = running & finite
            nonfinite = running & ~finite
        acc.add_(accept)
        s_new = torch.where(accept, torch.where(land, s_stop, s + h), s)
        y_end, crossed, n_crossed = res.y1, None, 0
        if watch is not None:  # an event's condition at the step's end
            g_new = watch.values(s_new, res.y1)
            crossed = accept & watch.crossed(g_new)
            n_crossed = int(crossed.sum())  # a second host read per step while events are watched
            if n_crossed:
                f1 = res.f1
                if solver.needs_end_derivative and (f1 is None or not solver.f1_exact):
                    f1 = derivative(s_new, torch.where(col(accept), res.y1, y))
                event_stages = dense_stages(func, s, y, h, res, f1)
                s_e, y_e = watch.locate(solver, s, h, y, event_stages, g_new, crossed)
                s_new = torch.where(crossed, s_e, s_new)
                y_end = torch.where(col(crossed), y_e, res.y1)
            watch.g_prev = torch.where(accept, g_new, watch.g_prev)
        # outputs passed by this step, per sample
        new_ptr = torch.searchsorted(s_eval, s_new.unsqueeze(-1), right=True).squeeze(-1)
        counts = new_ptr - ptr
        interior = torch.searchsorted(s_eval, s_new.unsqueeze(-1)).squeeze(-1) - ptr  # strictly inside
        unfinished = running & (s_new < s1)
        limit = steps >= max_steps
        if adaptive:
            limit = limit | (dt < dtmin) | (s_new + dt == s_new)
        flagged = nonfinite | (unfinished & limit)
        still = unfinished & ~flagged
        if n_crossed and watch is not None and watch.event.terminal:
            still = still & ~crossed  # each sample stops at its own event
        sync = torch.stack([counts.max(), interior.max(), still.sum(), flagged.any()])
        m_out, m_interior, n_still, any_flagged = sync.tolist()  # the one sync of a step
        any_running = n_still > 0
        if any_flagged:  # rare: record why those samples stopped
            small = (flagged & ~nonfinite & (steps < max_steps)) if adaptive else torch.zeros_like(flagged)
            status = torch.where(nonfinite, Status.NONFINITE, status)
            status = torch.where(small & ~nonfinite, Status.DT_MIN, status)
            status = torch.where(flagged & ~nonfinite & ~small, Status.MAX_STEPS, status)
            fail_t = torch.where(flagged, s_new, fail_t)
            fail_dt = torch.where(flagged, h, fail_dt)
        nfe.add_(running, alpha=problem.nfe_counter[0] - counted)  # batched calls while running
        stages = None
        if m_interior > 0 or dense:
            counted = problem.nfe_counter[0]
            f1 = res.f1
            if solver.needs_end_derivative and (f1 is None or not solver.f1_exact):
                f1 = derivative(s_new, torch.where(col(accept), res.y1, y))
            stages = dense_stages(func, s, y, h, res, f1)
            # charged to the samples that needed the continuous extension, as if solved alone
            nfe.add_(running if dense else interior > 0, alpha=problem.nfe_counter[0] - counted)
            if dense:
                dense_pieces.append((s, h, y.reshape(B, N), stages.reshape(B, N, -1), accept))
        if m_out > 0:
            ar = arange_cache.get(m_out)
            if ar is None:
                ar = arange_cache[m_out] = torch.arange(m_out, device=dev)
            valid = ar < counts.unsqueeze(-1)  # [B, m]
            idx = torch.where(valid, ptr.unsqueeze(-1) + ar, n)
            s_out = s_eval.gather(1, idx.clamp(max=n - 1))
            y1_flat = y_end.reshape(-1, 1, N)
            if stages is None:  # every output lies on a step's end
                vals = y1_flat.expand(-1, m_out, N)
            else:
                h_safe = torch.where(h > 0, h, 1.0).unsqueeze(-1)
                theta = ((s_out - s.unsqueeze(-1)) / h_safe).clamp_(0.0, 1.0)
                vals = _interpolate(
                    solver, y.reshape(-1, N), stages.reshape(-1, N, stages.shape[-1]), h_safe, theta
                )
                vals = torch.where((s_out == s_new.unsqueeze(-1)).unsqueeze(-1), y1_flat, vals)
            ys.scatter_(1, idx.unsqueeze(-1).expand(-1, m_out, N), vals)
            ptr = torch.where(accept, new_ptr, ptr)
        if save_steps:
            step_s.append(torch.where(accept, s_new, math.nan))
            step_y.append(torch.where(col(accept), res.y1, math.nan))
        y = torch.where(col(accept), y_end, y)
        if fsal:
            f0 = torch.where(col(accept), res.f1, f0)
        if n_crossed and watch is not None:  # record; after a jump, restart those samples
            y = watch.fire(s_new, y, crossed)
            if fsal and not watch.event.terminal:
                f0 = torch.where(col(crossed), derivative(s_new, y), f0)
            over = watch.count > watch.event.max_events
            if bool(over.any()):
                status = torch.where(over, Status.MAX_STEPS, status)
                still = still & ~over
                n_still = int(still.sum())
                any_running = n_still > 0
        s = s_new
        running = still
        if compact and 0 < n_still <= _COMPACT * len(rows):
            # Finished samples leave the batch: gather the running ones, once f is seen to
            # give them the same derivatives on their own (otherwise never compact again).
            keep = torch.nonzero_static(running, size=n_still).squeeze(1)  # no sync: size known
            s_k, y_k = s[keep], y[keep]
            f0_k = _verified_rows(func, s_k, y_k, f0[keep] if fsal else None, problem)
            if f0_k is None:
                compact = False
            else:
                full.store(rows, ys=ys, status=status, nfe=nfe, steps=steps, acc=acc,
                           fail_t=fail_t, fail_dt=fail_dt, s=s, y=y)  # fmt: skip
                rows, s, y, f0 = rows[keep], s_k, y_k, f0_k
                s1, s_eval, span, dt, ptr = s1[keep], s_eval[keep], span[keep], dt[keep], ptr[keep]
                ys, status, nfe, steps, acc = ys[keep], status[keep], nfe[keep], steps[keep], acc[keep]
                fail_t, fail_dt, running = fail_t[keep], fail_dt[keep], running[keep]
                if adaptive:
                    inv1, inv2, after_reject = inv1[keep], inv2[keep], after_reject[keep]
                    error_norm.select(keep)
                # the verifying evaluation is bookkeeping, like the initial checks: the stats
                # keep counting what each sample's own solve needs
        if progress:
            bar.update(float(((s - s_eval[:, 0]) / span).min()), it)
    if progress:
        bar.update(1.0, it, force=True)
    full.store(
        rows, ys=ys, status=status, nfe=nfe, steps=steps, acc=acc, fail_t=fail_t, fail_dt=fail_dt, s=s, y=y
    )
    r = full  # every sample's results, in the original order
    stats = Stats(r.nfe, r.steps, r.acc, r.steps - r.acc)
    raw = _Raw(r.ys[:, :n], stats, r.status, r.fail_t * problem.direction, r.fail_dt)
    mean_dt = (r.s - problem.s_eval[:, 0]) / r.acc.clamp(min=1)
    raw.stiff_check = lambda: _stiffness_ratio(func, r.s, r.y, True) * mean_dt > 1.0
    if save_steps:
        raw.step_s = torch.stack(step_s, 0) if step_s else s.new_empty((0, B))
        raw.step_y = torch.stack(step_y, 0) if step_y else y.new_empty((0, *y.shape))
    if dense:
        raw.dense = _per_sample_dense(solver, dense_pieces, s_eval)
    if watch is not None:
        raw.events = watch.padded()
    return raw


class _SampleEventWatch:
    """Per-sample events: every sample's condition, crossings located on its own step's
    continuous extension by a vectorised Illinois iteration (a fixed number of rounds, no host
    reads), and per-sample (differentiable) event times and states; see :mod:`torchnde.events`."""

    ROUNDS = 60

    def __init__(self, problem: _Problem, func: Callable, event: Event, s0: torch.Tensor, y0: torch.Tensor):
        self.problem, self.func, self.event = problem, func, event
        self.g_prev = self.values(s0, y0)
        self.count = torch.zeros(y0.shape[0], dtype=torch.int64, device=y0.device)
        self.times: list[torch.Tensor] = []  # [B] per firing round, NaN where a sample did not fire
        self.states: list[torch.Tensor] = []

    def _g(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        lead = (y.shape[0],)
        out = self.event.cond_fn(self.problem._user_time(s), self.problem.unflatten(y, lead))
        if not isinstance(out, torch.Tensor) or out.numel() != y.shape[0]:
            raise ValueError(
                "with per_sample=True, Event cond_fn must return one value per sample, shape [B]"
            )
        return out.reshape(-1)

    def values(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._g(s, y).to(torch.float64)

    def crossed(self, g_new: torch.Tensor) -> torch.Tensor:
        g0 = self.g_prev
        rising, falling = (g0 < 0) & (g_new >= 0), (g0 > 0) & (g_new <= 0)
        if self.event.direction == 1:
            return rising
        if self.event.direction == -1:
            return falling
        return rising | falling

    def locate(self, solver: AbstractSolver, s: torch.Tensor, h: torch.Tensor, y: torch.Tensor,
               stages: torch.Tensor, g_new: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        batch, n_state = y.shape[0], self.problem.numel
        y_flat = y.reshape(batch, n_state)
        st = stages.reshape(batch, n_state, stages.shape[-1])
        h_safe = torch.where(h > 0, h, 1.0).unsqueeze(-1)

        def at(theta: torch.Tensor) -> torch.Tensor:
            return _interpolate(solver, y_flat, st, h_safe, theta.unsqueeze(-1))[:, 0].reshape(y.shape)

        lo = torch.zeros_like(s)
        hi = torch.ones_like(s)
        f_lo, f_hi = self.g_prev.clone(), g_new.clone()
        side = torch.zeros_like(s)
        tol = 4 * sys.float_info.epsilon * (s.abs() + h.abs()).clamp(min=1.0) / h.abs().clamp(min=1e-300)
        with torch.no_grad():
            for _ in range(self.ROUNDS):
                x = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
                bad = ~((x > lo + tol) & (x < hi - tol))
                x = torch.where(bad, 0.5 * (lo + hi), x)
                fx = self._g(s + x * h, at(x)).to(torch.float64)
                upper = (fx > 0) == (f_hi > 0)
                active = mask & (hi - lo > tol) & (f_hi != 0)
                new_hi = active & upper
                new_lo = active & ~upper
                f_lo = torch.where(new_hi & (side == 1), 0.5 * f_lo, f_lo)
                f_hi = torch.where(new_lo & (side == -1), 0.5 * f_hi, f_hi)
                hi, f_hi = torch.where(new_hi, x, hi), torch.where(new_hi, fx, f_hi)
                lo, f_lo = torch.where(new_lo, x, lo), torch.where(new_lo, fx, f_lo)
                side = torch.where(new_hi, 1.0, torch.where(new_lo, -1.0, side))
        return s + hi * h, at(hi)  # the end where the crossing has happened

    def fire(self, s_e: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Record the events of the samples in ``mask`` at ``s_e``; return the states to continue
        from (jumped where an event fired)."""
        problem, direction = self.problem, self.problem.direction
        lead = (y.shape[0],)
        col = mask.view(-1, *([1] * (y.ndim - 1)))
        t_e = s_e * direction
        if torch.is_grad_enabled() and y.requires_grad:
            t_e, y = self._differentiable(s_e, y, mask)
        self.times.append(torch.where(mask, t_e, math.nan))
        self.states.append(torch.where(col, y, math.nan))
        self.count = self.count + mask
        if self.event.terminal:
            return y
        if self.event.jump is not None:
            out = self.event.jump(problem._user_time(s_e), problem.unflatten(y, lead))
            jumped = problem._flatten_out(out, lead) * direction
            if isinstance(t_e, torch.Tensor) and t_e.requires_grad:
                shift = (t_e - t_e.detach()).to(problem.dtype).view(-1, *([1] * (y.ndim - 1)))
                with torch.no_grad():
                    f_new = self.func(s_e, jumped) * direction
                jumped = jumped - shift * f_new
            y = torch.where(col, jumped, y)
        rate = self._rate(s_e, y)[0]
        leaving = (
            torch.sign(rate * direction) * sys.float_info.min if rate is not None else torch.zeros_like(s_e)
        )
        self.g_prev = torch.where(mask, leaving, self.g_prev)
        return y

    def _rate(self, s_e: torch.Tensor, y: torch.Tensor) -> tuple[Any, Any]:
        """Per sample ``(dg/dt along the solution [B], f [B, ...])``."""
        problem, direction = self.problem, self.problem.direction
        lead = (y.shape[0],)
        with torch.enable_grad():
            t_ = problem._user_time(s_e).detach().requires_grad_(True)
            y_ = y.detach().requires_grad_(True)
            g = self.event.cond_fn(t_, problem.unflatten(y_, lead)).reshape(-1)
            if not g.requires_grad:
                return None, None
            dg_dt, dg_dy = torch.autograd.grad(g.sum(), (t_, y_), allow_unused=True)
        with torch.no_grad():
            f_e = self.func(s_e, y.detach()) * direction
            rate = (
                (dg_dy * f_e).reshape(y.shape[0], -1).sum(-1) if dg_dy is not None else torch.zeros_like(s_e)
            )
            if dg_dt is not None:
                rate = rate + dg_dt.reshape(y.shape[0], -1).sum(-1)
        return rate.to(torch.float64), f_e

    def _differentiable(
        self, s_e: torch.Tensor, y: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        problem, direction = self.problem, self.problem.direction
        lead = (y.shape[0],)
        rate, f_e = self._rate(s_e, y)
        t_const = s_e * direction
        if rate is None:
            return t_const, y
        rate = torch.where(mask & (rate != 0), rate, 1.0)
        g_val = self.event.cond_fn(problem._user_time(s_e), problem.unflatten(y, lead)).reshape(-1)
        t_e = t_const - torch.where(mask, g_val.to(torch.float64) / rate, 0.0)
        shift = (t_e - t_const).to(problem.dtype).view(-1, *([1] * (y.ndim - 1)))
        return t_e, y + f_e * shift

    def padded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Event times ``[B, K]`` and states ``[B, K, N]``, each sample's events first, NaN padded."""
        problem = self.problem
        batch = self.count.shape[0]
        if not self.times:
            return (
                torch.empty(batch, 0, dtype=torch.float64),
                problem.y0.new_empty((batch, 0, problem.numel)),
            )
        times = torch.stack(self.times, 1)  # [B, rounds]
        states = torch.stack([x.reshape(batch, -1) for x in self.states], 1)  # [B, rounds, N]
        order = torch.argsort(torch.isnan(times).to(torch.int8), dim=1, stable=True)
        k = int(self.count.max())
        order = order[:, :k]
        return times.gather(1, order), states.gather(1, order.unsqueeze(-1).expand(-1, -1, states.shape[-1]))


# Compact the working batch when at most this fraction of it is still running.
_COMPACT = 0.5


class _FullRows:
    """Per-sample results of a per-sample solve, written back from a shrinking working batch."""

    def store(self, rows: torch.Tensor, **values: torch.Tensor) -> None:
        """Write the working batch's ``values`` into the rows ``rows`` of the full results. The
        first store comes from the uncompacted batch, whose tensors become the full results
        (the working batch is re-gathered into new tensors right after)."""
        for name, value in values.items():
            full = self.__dict__.get(name)
            if full is None:
                self.__dict__[name] = value
            else:
                full[rows] = value


def _verified_rows(
    func: Callable, s: torch.Tensor, y: torch.Tensor, f0: torch.Tensor | None, problem: _Problem
) -> torch.Tensor | None:
    """``f`` on a sub-batch, checked against what it gave those rows inside the full batch
    (``f0``; for methods without FSAL the check is only that ``f`` runs and keeps the shape).

    ``None`` when ``f`` does not treat rows independently (it closes over per-sample tensors,
    or couples the batch): the solve then keeps the full batch to the end.
    """
    try:
        out = func(s, y)
    except Exception:  # any failure of f on a sub-batch means: do not compact
        return None
    if out.shape != y.shape:
        return None
    if f0 is not None:
        scale = f0.abs().amax() if f0.numel() else f0.new_zeros(())
        tol = 1e-4 if problem.dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-10
        if not bool(((out - f0).abs() <= tol * (scale + 1.0)).all()):
            return None
    return out


def _interpolate(
    solver: AbstractSolver, y: torch.Tensor, stages: torch.Tensor, h: torch.Tensor, theta: torch.Tensor
) -> torch.Tensor:
    """Continuous extension per sample: ``y [B, N]``, ``stages [B, N, S]``, ``h`` and ``theta``
    of shape ``[B, m]`` (or ``h [B, 1]``); returns ``[B, m, N]``. The ``[B, m]``-shaped ``y`` and
    ``stages`` of :func:`_per_sample_dense` (one piece per time) broadcast the same way."""
    poly = solver.dense_polynomial
    coeffs = stages @ poly.matrix(y.dtype, y.device)  # [..., N, degree]
    powers = poly.powers(theta.to(y.dtype))  # [..., degree]
    if y.ndim == 2:  # one step per sample, m times in it
        return y.unsqueeze(1) + h.to(y.dtype).unsqueeze(-1) * (powers @ coeffs.transpose(1, 2))
    return y + h.to(y.dtype).unsqueeze(-1) * (coeffs @ powers.unsqueeze(-1)).squeeze(-1)


def _per_sample_dense(
    solver: AbstractSolver, pieces: list[tuple[torch.Tensor, ...]], s_eval: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    B = s_eval.shape[0]
    if pieces:
        starts = torch.stack([p[0] for p in pieces])  # [K, B]
        hs = torch.stack([p[1] for p in pieces])
        ok = torch.stack([p[4] for p in pieces])
        ys0 = torch.stack([p[2] for p in pieces])  # [K, B, N]
        stages = torch.stack([p[3] for p in pieces])  # [K, B, N, S]

    def dense(s: torch.Tensor) -> torch.Tensor:
        shape = s.shape
        if s.ndim == 0:
            s = s.expand(B, 1)
        elif s.ndim == 1 and s.shape[0] == B:
            s = s.unsqueeze(-1)
        elif s.ndim == 1:
            s = s.expand(B, -1)
        if s.shape[0] != B:
            raise ValueError(
                f"per-sample evaluate() needs times of shape [batch] or [batch, m], got {tuple(shape)}"
            )
        lo, hi = s_eval[:, :1], s_eval[:, -1:]
        if not pieces or bool(((s < lo - 1e-12 * lo.abs()) | (s > hi + 1e-12 * hi.abs())).any()):
            raise ValueError("evaluate() time outside the solved interval")
        # piece k covers [start_k, start_k + h_k] for accepted pieces of each sample
        inside = (
            ok.unsqueeze(-1) & (starts.unsqueeze(-1) <= s) & (s <= (starts + hs).unsqueeze(-1))
        )  # [K, B, m]
        k = inside.int().argmax(0)  # [B, m]
        bidx = torch.arange(B, device=s.device).unsqueeze(-1).expand_as(k)
        st, h = starts[k, bidx], hs[k, bidx]
        theta = ((s - st) / torch.where(h > 0, h, 1.0)).clamp(0, 1)
        out = _interpolate(solver, ys0[k, bidx], stages[k, bidx], h, theta)
        if len(shape) == 0:
            return out[:, 0]
        if len(shape) == 1 and shape[0] == B:
            return out[:, 0]
        return out

    return dense


# --------------------------------------------------------------------------------------------


@torch.no_grad()
def _stiffness_ratio(func: Callable, s: Any, y: torch.Tensor, per_sample: bool, iters: int = 10) -> Any:
    """Estimate the spectral radius of ``df/dy`` at ``(s, y)`` (per sample in that layout) by
    power iteration on finite-difference Jacobian-vector products.

    An explicit method whose steps are limited by stability rather than accuracy takes steps of
    about ``c / rho`` with ``c`` of order one (3.3 for Dopri5), so ``rho * mean_dt > 1`` at a
    failure says the problem is stiff (Hairer & Wanner, *Solving ODEs II*, IV.2) -- provided the
    solution itself changes slowly, ``|f| / |y| << rho``; a blow-up (``y' = y^2``) has
    ``|f| / |y| ~ rho`` and is not stiff. Returns ``rho`` where that holds, else 0.
    """
    lead = y.shape[:1] if per_sample else ()

    def norm(x: torch.Tensor) -> torch.Tensor:  # per sample (or overall), broadcastable to y
        n = torch.linalg.vector_norm(x.reshape(*lead, -1), dim=-1)
        return n.view(*lead, *([1] * (y.ndim - len(lead))))

    gen = torch.Generator(device=y.device).manual_seed(0)
    v = torch.randn(y.shape, generator=gen, dtype=y.dtype, device=y.device)
    v = v / norm(v)
    eps = torch.finfo(y.dtype).eps ** 0.5 * (1 + norm(y))
    f0 = func(s, y)
    rho = torch.zeros(lead, dtype=torch.float64, device=y.device)
    for _ in range(iters):
        jv = (func(s, y + eps * v) - f0) / eps
        size = norm(jv)
        rho = size.reshape(lead).to(torch.float64)
        v = jv / size.clamp(min=1e-300)
    rate = (norm(f0) / norm(y).clamp(min=torch.finfo(y.dtype).tiny)).reshape(lead).to(torch.float64)
    rho = torch.where(rate < 0.01 * rho, torch.nan_to_num(rho, nan=0.0), 0.0)
    return rho if per_sample else float(rho)


# A successful explicit solve with at least this many steps is checked for stiffness.
_ADVICE_STEPS = 1000


def _stiffness_advice(problem: _Problem, method: AbstractSolver, ctrl: Any, raw: _Raw) -> str | None:
    """For a long successful explicit solve: whether its steps were limited by stability (the
    problem is stiff), said in ``Solution.advice`` with the solver to try. Costs eleven
    evaluations of ``f``, only after ``_ADVICE_STEPS`` steps."""
    accepted = raw.stats.accepted
    if (
        method.implicit
        or not ctrl.adaptive
        or not isinstance(accepted, int)
        or raw.stats.steps < _ADVICE_STEPS
        or problem.s_host is None
    ):
        return None
    s0, s1 = problem.s_host[0], problem.s_host[-1]
    with torch.no_grad():
        y_end = raw.ys[-1].detach()
        rho = _stiffness_ratio(problem.func(count=False), s1, y_end, False)
    mean_dt = (s1 - s0) / max(accepted, 1)
    if rho * mean_dt <= 1.0:
        return None
    return (
        f"{raw.stats.steps} steps of about {mean_dt:.2g} against a stiffness of {rho:.2g}: the step size was "
        f"limited by stability, not accuracy, so the problem looks stiff. Try an implicit solver: "
        f"solver='kvaerno5' or 'rodas5p'."
    )


def _precision_hint(ctrl: ConstantStep | PIDController, dtype: torch.dtype) -> str | None:
    """A tolerance tighter than the state's dtype can resolve makes steps collapse: say so."""
    if not ctrl.adaptive or not dtype.is_floating_point:
        return None
    rtol = ctrl.rtol
    smallest = (
        float(torch.as_tensor(rtol).min())
        if not isinstance(rtol, (tuple, list))
        else min(float(torch.as_tensor(r).min()) for r in rtol)
    )
    eps = torch.finfo(dtype).eps
    if smallest >= eps:
        return None
    return (
        f"rtol={smallest:.3g} is below what {dtype} resolves (eps {eps:.2g}): solve in float64 "
        f"(y0.double()) or use rtol >= {10 ** math.ceil(math.log10(10 * eps)):.0e}."
    )


def _looks_stiff(raw: _Raw, solver: AbstractSolver, sample: int | None) -> bool:
    if raw.stiff_check is None or not solver.adaptive:
        return False
    stiff = raw.stiff_check()
    return bool(stiff[sample]) if isinstance(stiff, torch.Tensor) else bool(stiff)


def _error(sol: Solution, raw: _Raw, solver: AbstractSolver) -> Exception:
    if isinstance(sol.status, torch.Tensor):
        bad = (sol.status != Status.SUCCESS).nonzero().flatten().tolist()
        i = bad[0]
        status = Status(int(sol.status[i]))
        where = (
            f"sample {i} (and {len(bad) - 1} more)" if len(bad) > 1 else f"sample {i}"
        ) + f" at t={float(raw.fail_time[i]):.6g}, dt={float(raw.fail_dt[i]):.3g}, "
        where += f"after {int(raw.stats.steps[i])} steps"
    else:
        status = Status(sol.status)
        dt_txt = "n/a" if raw.fail_dt is None else f"{raw.fail_dt:.3g}"
        where = f"at t={raw.fail_time:.6g}, dt={dt_txt}, after {raw.stats.steps} steps"
    hint = _HINTS[status]
    if raw.precision_hint is not None and status in (Status.MAX_STEPS, Status.DT_MIN):
        hint = raw.precision_hint
    elif _looks_stiff(raw, solver, i if isinstance(sol.status, torch.Tensor) else None):
        hint = (
            "The step size is limited by stability, not accuracy: the problem looks stiff. Try "
            "an implicit solver: solver='kvaerno5' (with an explicit one, raise max_steps)"
        )
    return ERRORS[status](f"solve stopped {where}: {status.message}. {hint}", sol)


_HINTS = {
    Status.MAX_STEPS: "Raise max_steps, loosen rtol/atol, or check whether the problem is stiff.",
    Status.DT_MIN: (
        "The solution may blow up or be discontinuous here; if f has known jumps pass them as "
        "jump_ts, or lower dtmin. If the problem looks stiff use an implicit solver."
    ),
    Status.NONFINITE: "Check f for overflow or division by zero, or tighten rtol/atol.",
    Status.NO_CONVERGENCE: (
        "Use a smaller dt, or an adaptive controller (PIDController), which shrinks the step "
        "when Newton fails."
    ),
}
