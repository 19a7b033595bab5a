"""``solve``: the one entry point. It checks the options, resolves the objects (term, solver,
controller, gradient strategy), rejects combinations they do not support, builds the problem,
hands it to the gradient strategy (which runs the loop its way, :mod:`torchnde._loop`) and
builds the :class:`Solution`.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import Any

import torch

from ._loop import LoopOptions, Problem
from ._loop.diagnostics import error, precision_hint, stiffness_advice
from ._loop.kl import split_kl, with_kl
from ._loop.reversible import bind_control
from ._loop.sde import bind_sde
from ._names import did_you_mean
from ._solution import Solution, Status
from .controllers import AbstractController, ConstantStep, PIDController, union_times, with_times
from .events import Event
from .gradients import AbstractGradient, Adjoint, Checkpoint, Reversible, check_sde_adjoint, resolve_gradient
from .gradients.times import attach_output_times, attach_start_time
from .solvers import AbstractSolver, accepting, adaptive_sde, default_solver, resolve_solver
from .terms import AbstractTerm, CDETerm, SDETerm, as_term

__all__ = ["solve"]

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
    f: Callable[[torch.Tensor, Any], Any] | AbstractTerm,
    y0: torch.Tensor | tuple[torch.Tensor, ...],
    t_eval: Any,
    solver: str | AbstractSolver | None = None,
    *,
    rtol: Any = None,
    atol: Any = None,
    dt: float | None = None,
    controller: AbstractController | None = None,
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

    - ``f``: a term (:class:`ODETerm`, :class:`SDETerm`) or the vector field ``f(t, y)``
      itself, which is the ODE term ``ODETerm(f)`` (torchdiffeq's convention). ``t`` is a 0-d tensor of
      the state's dtype (per sample: shape ``[B, 1, ..., 1]``, broadcasting against ``y``); ``y``
      has the structure of ``y0``. It must return the same structure, shapes and dtype.
    - ``y0``: a floating tensor of any shape, or a tuple of them (same dtype and device).
    - ``t_eval``: strictly monotonic 1-D times (increasing or decreasing); the first is the
      initial time. Per sample it may be ``[B, n]``: one time span per sample.
    - ``solver``: a name (``nde.solvers.names()``; for an SDE term ``nde.solvers.sde_names()``)
      or a solver object; default ``"tsit5"`` (SDE terms: ``nde.solvers.default_solver(term)``).
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
            f"solve() got unknown option(s) {sorted(unknown)}; valid options: {', '.join(_OPTIONS)}."
            f"{did_you_mean(sorted(unknown), _OPTIONS)}"
        )
    return _solve(f, y0, t_eval, solver, rtol, atol, dt, controller, per_sample, dense, save_steps,
                  max_steps, throw, progress, compile, gradient, event)  # fmt: skip


def _solve(
    f: Any, y0: Any, t_eval: Any, solver: Any, rtol: Any, atol: Any, dt: Any, controller: Any,
    per_sample: bool, dense: bool, save_steps: bool, max_steps: int, throw: bool, progress: bool,
    compile: bool, gradient: Any, event: Event | None = None,
) -> Solution:  # fmt: skip
    term = as_term(f)
    method = resolve_solver(default_solver(term) if solver is None else solver, term)
    _check_term(term, method)
    sde = isinstance(term, SDETerm)
    if sde:
        method = _sde_method(term, method, controller, rtol, atol, dt)  # type: ignore[arg-type]
    ctrl = _controller(method, controller, rtol, atol, dt)
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
    strategy = resolve_gradient(gradient)
    if sde:
        _check_sde(term, method, strategy, compile, event, ctrl, per_sample)  # type: ignore[arg-type]
    _check_strategy(strategy, method, per_sample, compile, sde)
    ctrl, strategy = _term_times(term, ctrl, strategy, per_sample)
    kl = sde and term.prior_drift is not None  # type: ignore[attr-defined]
    if kl:  # the KL path term rides along as one more state channel
        term, y0 = with_kl(term, y0)  # type: ignore[arg-type]
    problem = Problem.build(term.lower(), y0, t_eval, per_sample)
    problem.check_finite()  # one host read, before any work
    if sde:
        problem.sde = bind_sde(term, problem, method, ctrl)  # type: ignore[arg-type]
    if isinstance(term, CDETerm) and method.reversible:  # steps with the path's increments
        problem.control = bind_control(term, problem)
    problem.jacobian = method.jacobian  # a user Jacobian of an implicit solver, else None
    _check_pair(method, problem)
    if problem.n_out == 1:
        return _split_kl(problem.trivial_solution(dense)) if kl else problem.trivial_solution(dense)
    _check_event(event, method, strategy, per_sample, dense, compile)
    opts = LoopOptions(max_steps, dense, save_steps, progress, compile, False, event)
    time_grad = torch.is_grad_enabled() and problem.t_eval.requires_grad
    if time_grad:
        attach_start_time(problem)
    owner = term.owner if problem.control is None else term.controlled_owner  # type: ignore[attr-defined]
    raw, backward_stats = strategy.run(problem, method, ctrl, opts, owner)
    if time_grad:
        raw.ys = attach_output_times(problem, raw.ys)
    sol = problem.solution(raw)
    if kl:
        sol = _split_kl(sol)
    sol.backward_stats = backward_stats
    if not per_sample and sol.status == Status.SUCCESS:
        sol.advice = stiffness_advice(problem, method, ctrl, raw)
    if throw and not sol.success:
        raw.precision_hint = precision_hint(ctrl, problem.dtype)
        raise error(sol, raw, method)
    if getattr(ctrl, "on_dtmin", "fail") == "accept":
        _warn_forced(sol.stats.forced, ctrl.dtmin)  # type: ignore[attr-defined]
    return sol


def _warn_forced(forced: Any, dtmin: float) -> None:
    """One warning for the steps accepted at ``dtmin`` above tolerance (``on_dtmin="accept"``)."""
    n = int(forced.sum()) if isinstance(forced, torch.Tensor) else int(forced)
    if n:
        warnings.warn(
            f"{n} step(s) were accepted at the minimum step size dtmin={dtmin:g} with an error estimate "
            "above tolerance (counted in sol.stats.forced): loosen rtol/atol, lower dtmin, or pass "
            "on_dtmin='fail' to stop there instead",
            RuntimeWarning,
            stacklevel=3,
        )


def _sde_method(term: SDETerm, method: AbstractSolver, controller: Any, rtol: Any, atol: Any,
                dt: Any) -> AbstractSolver:  # fmt: skip
    """The solver of an SDE solve: wrapped in :class:`~torchnde.StepDoubling` when the steps are
    adaptive (tolerances, or an adaptive controller), else as given; an SDE solve with neither
    ``dt`` nor tolerances is refused (no default tolerance suits every noise)."""
    adaptive = (controller.adaptive if isinstance(controller, AbstractController) else False) or (
        dt is None and (rtol is not None or atol is not None)
    )
    if adaptive:
        return adaptive_sde(method, term.noise)
    if controller is None and dt is None and not method.adaptive:
        raise ValueError(
            f"an SDE solve needs a step: pass dt=... for fixed steps of {method.name!r}, or rtol=..., "
            "atol=... for adaptive steps (by step doubling, nde.StepDoubling, on a BrownianInterval)"
        )
    return method


def _check_term(term: AbstractTerm, method: AbstractSolver) -> None:
    if not isinstance(term, method.terms):
        raise ValueError(
            f"solver {method.name!r} does not accept an {term.kind} term ({type(term).__name__}); "
            f"solvers that do: {_accepting_names(term)}"
        )
    reason = method.unsupported(term)
    if reason is not None:
        raise ValueError(
            f"solver {method.name!r} does not support {reason}; solvers that do: {_accepting_names(term)}"
        )


def _accepting_names(term: AbstractTerm) -> str:
    """The solvers that integrate ``term``, for an error message; built only when one is raised,
    since it asks every registered solver (``unsupported`` and ``repr`` of each: about 160 Python
    calls, which every solve made before)."""
    return ", ".join(repr(n) for n in accepting(term)) or "none yet"


def _split_kl(sol: Solution) -> Solution:
    """The solution over ``[y, l]`` split into ``ys`` and the KL path term ``kl``."""
    sol.ys, sol.kl = split_kl(sol.ys)
    if sol.step_ys is not None:
        sol.step_ys = sol.step_ys[..., :-1]
    if sol._evaluate is not None:
        whole = sol._evaluate
        sol._evaluate = lambda t: whole(t)[..., :-1]
    return sol


def _check_sde(term: SDETerm, method: AbstractSolver, strategy: AbstractGradient, compile: bool,
               event: Any, ctrl: AbstractController, per_sample: bool) -> None:  # fmt: skip
    """What SDE solves do not support yet, rejected before any work."""
    if isinstance(strategy, Adjoint):
        check_sde_adjoint(strategy, term, method)
        if ctrl.adaptive and strategy.dt is None:
            raise ValueError(
                "the stochastic adjoint steps back on a fixed grid, and an adaptive forward solve has "
                "none: pass Adjoint(dt=...) for its backward steps"
            )
    if ctrl.adaptive and per_sample:
        raise ValueError(
            "adaptive SDE steps are for the global layout: pass dt=... with per_sample=True, or "
            "per_sample=False with rtol/atol"
        )
    if per_sample and isinstance(strategy, Adjoint):
        raise ValueError(
            "the stochastic adjoint is for the global layout: use gradient='backprop' or 'checkpoint' "
            "with per_sample=True, or per_sample=False"
        )
    if per_sample and not method.supports_per_sample:
        takes = ", ".join(repr(n) for n in accepting(term) if resolve_solver(n, term).supports_per_sample)
        raise ValueError(
            f"solver {method.name!r} does not support per_sample=True (its exact reverse steps one grid "
            f"for the whole batch): use per_sample=False, or one of {takes}"
        )
    if compile:
        raise ValueError("compile=True is not supported for SDE terms yet")
    if event is not None:
        raise ValueError("events are not supported for SDE terms yet")


def _term_times(
    term: AbstractTerm, ctrl: AbstractController, strategy: AbstractGradient, per_sample: bool
) -> tuple[AbstractController, AbstractGradient]:
    """The term's ``step_ts``/``jump_ts`` (a CDE's knots) added to the controller's, and to a
    global adjoint's (whose backward solve crosses the same knots)."""
    step_ts, jump_ts = term.step_ts, term.jump_ts
    if step_ts is None and jump_ts is None:
        return ctrl, strategy
    ctrl = with_times(ctrl, step_ts, jump_ts)
    if isinstance(strategy, Adjoint) and not per_sample:
        strategy = dataclasses.replace(
            strategy,
            step_ts=union_times(strategy.step_ts, step_ts),
            jump_ts=union_times(strategy.jump_ts, jump_ts),
        )
    return ctrl, strategy


def _check_pair(method: AbstractSolver, problem: Problem) -> None:
    if method.separable_pair and not (
        problem.is_tuple and len(problem.sizes) == 2 and problem.sizes[0] == problem.sizes[1]
    ):
        raise ValueError(
            f"solver {method.name!r} integrates a separable pair: pass y0 as a tuple (q, p) of two "
            "equally shaped tensors, with f(t, (q, p)) returning (dq/dt, dp/dt)"
        )


def _check_strategy(
    strategy: AbstractGradient, method: AbstractSolver, per_sample: bool, compile: bool, sde: bool = False
) -> None:
    """Reject combinations a strategy does not support, before any work is done."""
    reversible = method.reversible
    if isinstance(strategy, Reversible) and not reversible:
        raise ValueError(
            f"gradient='reversible' needs an algebraically reversible solver, got {method.name!r}: "
            "use solver='reversible_heun'"
        )
    if reversible and (
        (isinstance(strategy, Adjoint) and not sde)
        or (isinstance(strategy, Checkpoint) and strategy.checkpoints is not None)
    ):
        what = "Checkpoint(checkpoints=...)" if isinstance(strategy, Checkpoint) else repr(strategy.name)
        raise ValueError(
            f"solver {method.name!r} supports gradient='reversible', 'backprop' and 'checkpoint', not {what}"
        )
    if (
        per_sample
        and isinstance(strategy, Adjoint)
        and (strategy.step_ts is not None or strategy.jump_ts is not None or strategy.norm is not None)
    ):
        raise ValueError(
            "Adjoint(step_ts=..., jump_ts=..., norm=...) are for the global layout: the per-sample "
            "adjoint is solved in a time normalised per sample, over the whole batch at once"
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


@functools.lru_cache(maxsize=64)
def _default_pid(rtol: float, atol: float) -> PIDController:
    return PIDController(rtol, atol)


def _controller(
    method: AbstractSolver, controller: Any, rtol: Any, atol: Any, dt: float | None
) -> AbstractController:
    if controller is not None:
        if rtol is not None or atol is not None or dt is not None:
            raise ValueError(
                "pass tolerances or dt either as solve(rtol=, atol=, dt=) or on the controller "
                "object, not both"
            )
        if not isinstance(controller, AbstractController):
            raise TypeError(
                "controller must be a torchnde controller (ConstantStep, PIDController or a subclass "
                f"of AbstractController), got {type(controller).__name__}"
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
