"""Drop-in replacements for ``torchdiffeq.odeint`` and ``torchdiffeq.odeint_adjoint``
(torchdiffeq 0.2.5 semantics).

Change ``from torchdiffeq import odeint`` to ``from torchnde.compat.torchdiffeq import odeint``
(likewise ``odeint_adjoint``) and nothing else: same arguments, same method names, the options torchdiffeq documents, tuple
states, and the same fixed-grid semantics (``step_size`` builds torchdiffeq's grid, outputs
between grid points are interpolated linearly unless ``interp="cubic"``). Unsupported methods
and options raise instead of being ignored.

The adaptive methods take 0.2.5's step sequence (its step-size rule, its error scale, its step
past the final time, its restart of the adjoint's solve at each output interval where adjoint
callbacks or ``first_step`` observe it: ``_steps025``), so the solver callbacks are called as
often as in 0.2.5; ``dopri8`` is 0.2.5's Prince–Dormand
8(7) (torchnde's ``rk87pd``). What differs, on purpose: outputs come from each method's own dense
output, and time is always handled in float64.
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import copy
import dataclasses
import functools
import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from .._names import did_you_mean
from .._optional import require
from .._solve import solve
from ..controllers import ConstantStep, PIDController, channel_rms_norm
from ..events import Event
from ..gradients import AbstractGradient, Adjoint, Backprop
from ..solvers import AdamsBashforthMoulton, Newton, resolve_solver
from ..solvers.tableau import DensePolynomial
from ._steps025 import Stepper, stepper
from ._steps025 import solver as solver025

__all__ = ["odeint", "odeint_adjoint", "odeint_event"]

# torchdiffeq's adaptive methods on torchnde's solvers (stepped as 0.2.5 steps them: _steps025)
_ADAPTIVE = {
    "dopri8": "rk87pd",  # Prince & Dormand's RK8(7)13M, not torchnde's dopri8 (DOP853)
    "dopri5": "dopri5",
    "bosh3": "bosh3",
    "fehlberg2": "fehlberg2",
    "adaptive_heun": "heun",
    "tsit5": "tsit5",  # not in torchdiffeq 0.2.5; in its later releases
}
_FIXED = {"euler": "euler", "midpoint": "midpoint", "heun2": "heun", "heun3": "heun3", "rk4": "rk38"}
# torchdiffeq's fixed-grid implicit methods (its releases after 0.2.5), on torchnde's own solvers
_IMPLICIT = {
    "implicit_euler": "implicit_euler",
    "implicit_midpoint": "implicit_midpoint",
    "trapezoid": "trapezoid",
    "radauIIA3": "radauiia3",
    "radauIIA5": "radauiia5",
    "gl4": "gl4",
    "gl6": "gl6",
    "sdirk2": "sdirk2",
    "trbdf2": "trbdf2",
}
_FIXED.update(_IMPLICIT)
# torchdiffeq 0.2.5's fixed-grid Adams methods (``fixed_adams`` is its alias of ``implicit_adams``)
_ADAMS = {
    "explicit_adams": "adams_bashforth",
    "implicit_adams": "adams_moulton",
    "fixed_adams": "adams_moulton",
}
_FIXED.update(_ADAMS)
_UNSUPPORTED: dict[str, str] = {}
_SCIPY_OPTIONS = {"solver", "min_step", "max_step"}
_SCIPY_ADJOINT = (
    "method 'scipy_solver' is not supported by odeint_adjoint: scipy's solve_ivp gives no "
    "gradients; use method='dopri5' or 'dopri8', or for a stiff problem 'radauIIA5'"
)
_ADAPTIVE_OPTIONS = {
    "first_step",
    "max_num_steps",
    "step_t",
    "jump_t",
    "dtype",
    "norm",
    "safety",
    "ifactor",
    "dfactor",
}
_FIXED_OPTIONS = {"step_size", "grid_constructor", "interp", "perturb", "dtype"}
_ADAMS_OPTIONS = _FIXED_OPTIONS | {"max_order", "max_iters"}


def _fixed_options(method: str) -> set[str]:
    return _ADAMS_OPTIONS if method in _ADAMS else _FIXED_OPTIONS


def odeint(
    func: Callable[[torch.Tensor, Any], Any],
    y0: torch.Tensor | tuple[torch.Tensor, ...],
    t: torch.Tensor,
    *,
    rtol: Any = 1e-7,
    atol: Any = 1e-9,
    method: str | None = None,
    options: dict[str, Any] | None = None,
    event_fn: Callable | None = None,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Integrate ``dy/dt = func(t, y)`` and return ``y`` at the times ``t`` (time first).

    Arguments and defaults are torchdiffeq 0.2.5's: ``method`` is one of ``dopri8`` (0.2.5's
    Prince–Dormand 8(7), :class:`~torchnde.PrinceDormand87`), ``dopri5`` (default), ``bosh3``,
    ``fehlberg2``, ``adaptive_heun``, ``tsit5`` (adaptive, stepped as 0.2.5 steps them; options
    ``first_step``, ``max_num_steps``, ``step_t``, ``jump_t``, ``norm``, ``dtype``, ``safety``,
    ``ifactor``, ``dfactor``) or ``euler``, ``midpoint``, ``heun2``, ``heun3``, ``rk4`` and the implicit
    ``implicit_euler``, ``implicit_midpoint``, ``trapezoid``, ``radauIIA3``, ``radauIIA5``,
    ``gl4``, ``gl6``, ``sdirk2``, ``trbdf2`` of torchdiffeq's later releases (fixed grid; options
    ``step_size`` or ``grid_constructor``, ``interp``, ``perturb``, ``dtype``; the implicit methods' Newton iterations
    converge to ``rtol``/``atol``), or 0.2.5's fixed-grid Adams methods ``explicit_adams``,
    ``implicit_adams`` and its alias ``fixed_adams`` (the same options plus ``max_order``,
    ``max_iters``; the corrector converges to ``rtol``/``atol``; the history is kept across a
    change of step size, as in 0.2.5), or ``scipy_solver`` (scipy's ``solve_ivp``; options
    ``solver``, ``min_step``, ``max_step``; no gradients). Methods of ``func`` named ``callback_step``,
    ``callback_accept_step`` and ``callback_reject_step`` are called with ``(t0, y0, dt)`` of
    each step as in torchdiffeq (the last two for adaptive methods only).

    With ``event_fn`` (``t`` of length 2; ``t[1]`` gives only the direction), the solve runs
    until a component of ``event_fn(t, y)`` crosses zero and returns ``(event_t, ys)`` with
    ``ys`` the states at ``[t[0], event_t]``; as in torchdiffeq, ``event_t`` carries no gradient
    (``odeint_event`` gives a differentiable one) and ``ys`` is differentiated at that fixed time.
    While grad is enabled the solve to the event is run twice (to find it, then to
    differentiate it).

    ```python
    import torch
    from torchnde.compat.torchdiffeq import odeint
    ys = odeint(lambda t, y: -y, torch.ones(3), torch.linspace(0, 1, 5), method="rk4",
                options=dict(step_size=0.1))
    ```
    """
    return _odeint(func, y0, t, rtol, atol, method, options, event_fn, Backprop())


def odeint_adjoint(
    func: Callable[[torch.Tensor, Any], Any],
    y0: torch.Tensor | tuple[torch.Tensor, ...],
    t: torch.Tensor,
    *,
    rtol: Any = 1e-7,
    atol: Any = 1e-9,
    method: str | None = None,
    options: dict[str, Any] | None = None,
    event_fn: Callable | None = None,
    adjoint_rtol: Any = None,
    adjoint_atol: Any = None,
    adjoint_method: str | None = None,
    adjoint_options: dict[str, Any] | None = None,
    adjoint_params: Any = None,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """``odeint`` whose backward pass is the continuous adjoint (:class:`torchnde.Adjoint`).

    torchdiffeq 0.2.5's rules: ``func`` must be an ``nn.Module`` unless ``adjoint_params`` lists
    the tensors to differentiate; ``adjoint_rtol``/``adjoint_atol``/``adjoint_method`` default to
    the forward ones; ``adjoint_options`` defaults to ``options`` (without ``norm``) and must be
    given when ``adjoint_method`` differs and ``options`` were passed. ``adjoint_options`` takes
    what ``options`` takes for ``adjoint_method``, applied to the adjoint solve (``jump_t`` and
    ``step_t`` in the forward problem's times; ``first_step`` is the first step of every output
    interval, as 0.2.5 solves each afresh; without it and without adjoint callbacks, the step
    size carries over from one output interval to the next instead, as in ``Adjoint``: the same
    gradient to the tolerance, fewer evaluations), and ``norm="seminorm"`` (Kidger et al. 2021: parameter channels out of the error control;
    the default norm, 0.2.5's, is the largest RMS norm over the parts of ``y``, of ``adj_y`` and
    each parameter's gradient) or a callable ``norm`` taking torchdiffeq's tuple ``(t, y,
    adj_y, *adj_params)`` of scaled errors (``t``: 0.2.5's time channel, ``-adj_y . df/dt``,
    integrated along as :class:`~torchnde.Adjoint`'s ``time_channel``; a zero for a fixed grid).
    Methods of ``func`` named ``callback_step_adjoint``, ``callback_accept_step_adjoint`` and
    ``callback_reject_step_adjoint`` are called during the adjoint's backward solves, as in
    torchdiffeq, with ``(t0, y0, dt)`` of each step: ``t0`` in the user's time, ``y0`` the
    augmented state ``(t, y, adj_y, *adj_params)``, ``dt`` the step's size.

    ```python
    import torch
    from torchnde.compat.torchdiffeq import odeint_adjoint
    func = torch.nn.Linear(2, 2)
    ys = odeint_adjoint(lambda t, y: func(y), torch.ones(2), torch.linspace(0, 1, 3),
                        adjoint_params=tuple(func.parameters()))
    ys.sum().backward()
    ```
    """
    if adjoint_params is None and not isinstance(func, torch.nn.Module):
        raise ValueError(
            "func must be an instance of nn.Module to specify the adjoint parameters; alternatively "
            "they can be specified explicitly via the `adjoint_params` argument. If there are no "
            "parameters then it is allowable to set `adjoint_params=()`."
        )
    method = "dopri5" if method is None else method
    adjoint_method = method if adjoint_method is None else adjoint_method
    if adjoint_method != method and options is not None and adjoint_options is None:
        raise ValueError(
            "If `adjoint_method != method` then we cannot infer `adjoint_options` from `options`. "
            "So as `options` has been passed then `adjoint_options` must be passed as well."
        )
    if adjoint_options is None:
        adjoint_options = {k: v for k, v in (options or {}).items() if k != "norm"}
    adjoint_options = dict(adjoint_options)
    perturb = bool(adjoint_options.pop("perturb", False))
    norm = adjoint_options.pop("norm", None)
    params = tuple(func.parameters()) if adjoint_params is None else tuple(adjoint_params)
    differentiated = tuple(p for p in params if p.requires_grad)  # torchdiffeq's adjoint channels
    timed = adjoint_method in _ADAPTIVE  # 0.2.5's time channel steers the adaptive adjoint's steps
    custom = None
    if norm is not None and not isinstance(norm, str) and callable(norm):
        custom = _adjoint_user_norm(norm, y0, differentiated, timed)
    elif norm not in (None, "seminorm"):
        raise ValueError(
            "adjoint_options['norm'] must be 'seminorm', a callable, or absent for the full norm"
        )
    adjoint_solver = _method_name(adjoint_method)
    if adjoint_method in _IMPLICIT or adjoint_method in _ADAMS:
        # an Adams adjoint solve starts its history afresh at each output interval, as 0.2.5's
        adjoint_solver = _fixed_solver(
            adjoint_method, _tol(adjoint_rtol, rtol), _tol(adjoint_atol, atol), adjoint_options
        )
    fixed = adjoint_method in _FIXED
    if perturb and not fixed:
        raise ValueError(
            f"adjoint_options: perturb is an option of the fixed-grid methods, not of {adjoint_method!r}"
        )
    if perturb:  # each step of the adjoint solve sees f inside the step, as the forward one does
        adjoint_solver = _perturbed(adjoint_solver, _dtype(y0))
    _reject_unknown(
        adjoint_options, _fixed_options(adjoint_method) if fixed else _ADAPTIVE_OPTIONS, adjoint_method
    )
    if fixed:
        _check_fixed_options(adjoint_options)  # interp: the intervals end on grid points anyway
    step_size, adjoint_grid = adjoint_options.get("step_size"), None
    if fixed:  # 0.2.5's grid per output interval
        step_size, adjoint_grid = _adjoint_grids(
            func, y0, t, step_size, adjoint_options.get("grid_constructor")
        )
    max_steps = adjoint_options.get("max_num_steps")
    found = [getattr(func, name + "_adjoint", None) for name in _CALLBACKS]
    hooked = any(callable(c) for c in found)
    # 0.2.5 starts every output interval of the adjoint afresh (Hairer's first step). Where that
    # is observable, through the adjoint callbacks' calls or a per-interval `first_step` (or where
    # a caller promises 0.2.5's steps: `_restarts_as_025`), the drop-in does the same; otherwise
    # the step size carries over, as in `Adjoint`: the same gradient to the tolerance with fewer
    # evaluations (ode_demo: 90 instead of 146 per minibatch).
    observed = hooked or adjoint_options.get("first_step") is not None or _RESTARTS_025.get()
    restart = not fixed and observed
    controller_hook = _restarted(adjoint_method, adjoint_options) if restart else None
    if hooked:  # torchdiffeq calls them during the adjoint's solves
        view = _augmented_view(y0, differentiated, timed)
        hook_solver, hook_controller = _hooks(found, t.flip(0), view)  # it runs from t[-1] to t[0]
        adjoint_solver = hook_solver(adjoint_solver)
        controller_hook = _then(controller_hook, hook_controller) if restart else hook_controller
    if custom is None and isinstance(y0, (tuple, list)):  # 0.2.5: each part of y and adj_y alone
        custom = _adjoint_mixed_norm(y0, differentiated, timed, seminorm=norm == "seminorm")
    strategy = Adjoint(
        rtol=None if fixed else _adjoint_tol(adjoint_rtol, rtol, "adjoint_rtol", y0, differentiated, timed),
        atol=None if fixed else _adjoint_tol(adjoint_atol, atol, "adjoint_atol", y0, differentiated, timed),
        solver=adjoint_solver,
        seminorm=norm == "seminorm",
        params=params,
        norm=custom,
        max_steps=None if max_steps is None else int(max_steps),
        dt=None if step_size is None else abs(float(step_size)),
        step_ts=adjoint_grid if fixed else _times(adjoint_options.get("step_t")),
        jump_ts=None if fixed else _times(adjoint_options.get("jump_t")),
        controller_options=None if fixed else _pid_options(adjoint_options),
        controller_hook=controller_hook,
        time_channel=timed,
    )
    return _odeint(func, y0, t, rtol, atol, method, options, event_fn, strategy)


_RESTARTS_025: contextvars.ContextVar[bool] = contextvars.ContextVar("restarts_025", default=False)


@contextlib.contextmanager
def _restarts_as_025() -> Iterator[None]:
    """Inside it, ``odeint_adjoint`` restarts its adaptive backward solve at every output
    interval, as 0.2.5 does, even where nothing observes it: for ``compat.torchcde``, whose
    contract is torchcde's gradients to 1e-6, which needs 0.2.5's very steps."""
    token = _RESTARTS_025.set(True)
    try:
        yield
    finally:
        _RESTARTS_025.reset(token)


def _restarted(method: str, options: dict[str, Any]) -> Callable[[Any], Any]:
    """The adjoint's controller hook: 0.2.5 solves each output interval backwards as an ``odeint``
    of its own, so every interval starts afresh (Hairer's first step, or ``first_step``) under
    0.2.5's rule, instead of continuing with the step size reached."""
    name, pid = _ADAPTIVE.get(method, ""), _pid_options(options)

    def restart(ctrl: PIDController) -> Stepper:
        return stepper(name, rtol=ctrl.rtol, atol=ctrl.atol, norm=ctrl.norm, step_ts=ctrl.step_ts,
                       jump_ts=ctrl.jump_ts, **pid)  # fmt: skip

    return restart


def _then(first: Callable[[Any], Any], second: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda ctrl: second(first(ctrl))


def _adjoint_mixed_norm(
    y0: Any, params: tuple[torch.Tensor, ...], timed: bool, seminorm: bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    """0.2.5's adjoint norm for a tuple state: the largest RMS norm over each part of ``y``, each
    part of ``adj_y``, each parameter's gradient (not with ``seminorm``) and the time channel
    (when ``timed``, last), of the flat ``[y | a | g_1 | ... (| tau)]``."""
    sizes = [math.prod(s) for s in _shapes(y0)]
    grads = [p.numel() for p in params]
    parts = sizes + sizes + grads + ([1] if timed else [])
    grouped = 2 * len(sizes)  # the parameters' channels come after y's and adj_y's parts
    return channel_rms_norm(
        parts, [not (seminorm and grouped <= i < grouped + len(grads)) for i in range(len(parts))]
    )


def _adjoint_user_norm(norm: Callable, y0: Any, params: tuple[torch.Tensor, ...], timed: bool) -> Callable:
    """torchdiffeq's callable adjoint norm: it gets the scaled error of the augmented state as
    the tuple ``(t, y, adj_y, *adj_params)`` (``(t, *y, *adj_y, *adj_params)`` for tuple
    states); ``t`` is the time channel's (a zero for a fixed-grid adjoint, which has none)."""
    augmented = _augmented_view(y0, params, timed)
    return lambda x: norm(augmented(x))


def _augmented_view(
    y0: Any, params: tuple[torch.Tensor, ...], timed: bool
) -> Callable[[torch.Tensor], tuple]:
    """The flat adjoint state ``[y | a | g_1 | ... (| tau)]`` as torchdiffeq's augmented tuple
    ``(t, y, adj_y, *adj_params)`` (``(t, *y, *adj_y, *adj_params)`` for tuple states): ``t``
    the time channel's when ``timed``, else a zero."""
    shapes = _shapes(y0)
    sizes = [math.prod(s) for s in shapes]
    parts = sizes + sizes + [p.numel() for p in params] + ([1] if timed else [])
    views = shapes + shapes + [p.shape for p in params] + ([torch.Size()] if timed else [])

    def augmented(x: torch.Tensor) -> tuple:
        if x.numel() != sum(parts):
            raise ValueError(f"the adjoint state has {x.numel()} elements, expected {sum(parts)}")
        pieces = [p.view(v) for p, v in zip(torch.split(x, parts), views)]
        if timed:
            return (pieces[-1], *pieces[:-1])
        return (torch.zeros((), dtype=x.dtype, device=x.device), *pieces)

    return augmented


def _times(times: Any) -> Any:
    return None if times is None else torch.as_tensor(times, dtype=torch.float64).reshape(-1)


def _pid_options(options: dict[str, Any]) -> dict[str, Any]:
    """torchdiffeq's step-size options as :class:`PIDController` keyword arguments."""
    pid = {"safety": float(options.get("safety", 0.9)), "factor_max": float(options.get("ifactor", 10.0)),
           "factor_min": float(options.get("dfactor", 0.2))}  # fmt: skip
    if options.get("first_step") is not None:
        pid["dt0"] = abs(float(options["first_step"]))
    return pid


def _tol(value: Any, default: Any) -> Any:
    return default if value is None else value


def _fixed_solver(
    method: str, rtol: Any, atol: Any, options: dict | None = None, restart: bool = False
) -> Any:
    """The solver of a fixed-grid method: its name, or for an implicit method a solver whose
    Newton iterations converge to odeint's ``rtol``/``atol`` (the tightest component of a
    per-component tolerance) instead of the constant-step default of ``1e-6``/``1e-9``. An Adams
    method gets torchdiffeq 0.2.5's defaults (``max_order=12``, ``max_iters=4``, the corrector
    converged to ``rtol``/``atol``) and, unless ``restart``, keeps its history across a change of
    step size as 0.2.5 does."""
    name = _FIXED[method]
    if method in _ADAMS:
        options = options or {}
        return type(resolve_solver(name))(
            max_order=int(options.get("max_order", 12)),
            max_iters=int(options.get("max_iters", 4)),
            rtol=_tightest(rtol),
            atol=_tightest(atol),
            restart=restart,
        )
    if method not in _IMPLICIT:
        return name
    newton = Newton(rtol=_tightest(rtol), atol=_tightest(atol))
    return type(resolve_solver(name))(newton=newton)


def _tightest(value: Any) -> float:
    return float(torch.as_tensor(value, dtype=torch.float64).min())


def _adjoint_tol(
    value: Any, default: Any, name: str, y0: Any, params: tuple[torch.Tensor, ...], timed: bool
) -> Any:
    """An adjoint tolerance as :class:`Adjoint` takes it: a float, or for torchdiffeq's tensor of
    one tolerance per part of the augmented tuple ``(t, *y, *adj_y, *adj_params)`` a tensor with
    one per element of torchnde's flat ``[y | a | g_1 | ... (| tau)]`` (the ``t`` entry last,
    or dropped without a time channel). A tensor forward tolerance is not inherited (its parts
    are the state's, not the augmented state's)."""
    inherited = value is None
    value = default if inherited else value
    if isinstance(value, (tuple, list)):
        value = torch.as_tensor(value, dtype=torch.float64)
    if not isinstance(value, torch.Tensor) or value.numel() == 1:
        return float(value)
    sizes = [math.prod(s) for s in _shapes(y0)]
    parts = sizes + sizes + [p.numel() for p in params]
    if inherited or value.ndim != 1 or len(value) != 1 + len(parts):
        raise ValueError(
            f"odeint_adjoint: {name} as a tensor needs one tolerance per part of the augmented state "
            f"(t, y, adj_y, *adj_params): {1 + len(parts)} here, got shape {tuple(value.shape)}"
            + (
                f"; a per-component forward tolerance is not inherited by the adjoint solve: pass a scalar {name}"
                if inherited
                else ""
            )
        )
    repeats = torch.tensor(parts, device=value.device)
    per_element = torch.repeat_interleave(value[1:].to(torch.float64), repeats)
    return torch.cat([per_element, value[:1].to(torch.float64)]) if timed else per_element


def _method_name(method: str) -> Any:
    if method == "scipy_solver":
        raise ValueError(_SCIPY_ADJOINT)
    if method in _UNSUPPORTED:
        raise ValueError(f"method {method!r} is not supported by torchnde: it is {_UNSUPPORTED[method]}")
    if method in _ADAPTIVE:
        return solver025(_ADAPTIVE[method])
    if method in _FIXED:
        return _FIXED[method]
    raise ValueError(_unknown_method(method))


def _odeint(
    func: Callable, y0: Any, t: torch.Tensor, rtol: Any, atol: Any, method: str | None,
    options: dict[str, Any] | None, event_fn: Callable | None, gradient: AbstractGradient,
) -> Any:  # fmt: skip
    method = "dopri5" if method is None else method
    options = dict(options or {})
    if not isinstance(t, torch.Tensor) or t.ndim != 1:
        raise ValueError("t must be a 1-D tensor of times, as in torchdiffeq")
    if method in _UNSUPPORTED:
        raise ValueError(f"method {method!r} is not supported by torchnde: it is {_UNSUPPORTED[method]}")
    if method == "scipy_solver":
        if event_fn is not None:
            raise ValueError("method 'scipy_solver' does not handle events (as in torchdiffeq 0.2.5)")
        if not isinstance(gradient, Backprop):
            raise ValueError(_SCIPY_ADJOINT)
        _reject_unknown(options, _SCIPY_OPTIONS, method)
        return _scipy(func, y0, t, rtol, atol, options)
    if event_fn is not None and method in {**_ADAPTIVE, **_FIXED}:
        _reject_unknown(options, _ADAPTIVE_OPTIONS if method in _ADAPTIVE else _fixed_options(method), method)
        return _until_event(func, y0, t, rtol, atol, method, options, event_fn, gradient)
    if method in _ADAPTIVE:
        _reject_unknown(options, _ADAPTIVE_OPTIONS, method)
        return _adaptive(func, y0, t, rtol, atol, _ADAPTIVE[method], options, gradient)
    if method in _FIXED:
        _reject_unknown(options, _fixed_options(method), method)
        return _fixed(func, y0, t, _fixed_solver(method, rtol, atol, options), options, gradient)
    raise ValueError(_unknown_method(method))


def _scipy(func: Callable, y0: Any, t: torch.Tensor, rtol: Any, atol: Any, options: dict) -> Any:
    """torchdiffeq 0.2.5's ``scipy_solver``: ``scipy.integrate.solve_ivp`` with
    ``options["solver"]`` (default ``"LSODA"``), ``min_step``, ``max_step``, on the flattened
    state in numpy (``f`` evaluated without a graph: the result carries no gradient); decreasing
    ``t`` is solved as the increasing ``-t``, as torchdiffeq does."""
    solve_ivp = require("scipy.integrate", extra="experiments", purpose="method='scipy_solver'").solve_ivp
    shapes, is_tuple = _shapes(y0), isinstance(y0, (tuple, list))
    parts = list(y0) if is_tuple else [y0]
    flat = torch.cat([p.reshape(-1) for p in parts])
    dtype, device = flat.dtype, flat.device
    sizes = [math.prod(shape) for shape in shapes]

    def structured(y: torch.Tensor) -> Any:
        pieces = [p.reshape(shape) for p, shape in zip(torch.split(y, sizes, dim=-1), shapes)]
        return tuple(pieces) if is_tuple else pieces[0]

    def unflatten(ys: torch.Tensor) -> Any:  # [T, N] -> the state's structure, time first
        pieces = [p.reshape(len(ys), *shape) for p, shape in zip(torch.split(ys, sizes, dim=-1), shapes)]
        return tuple(pieces) if is_tuple else pieces[0]

    if t.numel() == 1:
        return unflatten(flat.detach()[None])
    sign = -1.0 if bool(t[-1] < t[0]) else 1.0

    def np_func(s: float, y: Any) -> Any:
        ts = (sign * torch.tensor(s)).to(device, dtype)
        with torch.no_grad():
            f = func(ts, structured(torch.tensor(y).to(device, dtype)))
            f = torch.cat([p.reshape(-1) for p in f]) if is_tuple else f.reshape(-1)
        return (sign * f).detach().cpu().numpy()

    def tol(value: Any) -> Any:
        return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value

    s = (sign * t).detach().cpu().numpy()
    sol = solve_ivp(
        np_func,
        t_span=[s.min(), s.max()],
        y0=flat.detach().cpu().numpy(),
        t_eval=s,
        method=options.get("solver", "LSODA"),
        rtol=tol(rtol),
        atol=tol(atol),
        min_step=options.get("min_step", 0),
        max_step=options.get("max_step", float("inf")),
    )
    if not sol.success:
        raise RuntimeError(f"scipy's solve_ivp failed: {sol.message}")
    return unflatten(torch.tensor(sol.y).T.to(device, dtype))


def _unknown_method(method: Any) -> str:
    valid = sorted({**_ADAPTIVE, **_FIXED, "scipy_solver": None})
    return f"unknown method {method!r}; valid methods: {', '.join(valid)}.{did_you_mean(method, valid)}"


def _reject_unknown(options: dict[str, Any], allowed: set[str], method: str) -> None:
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(
            f"option(s) {sorted(unknown)} are not supported for method {method!r}; "
            f"supported: {', '.join(sorted(allowed))}.{did_you_mean(sorted(unknown), sorted(allowed))}"
        )
    dtype = options.get("dtype")
    if dtype is not None and dtype not in (torch.float32, torch.float64):
        raise ValueError(f"options['dtype'] must be torch.float32 or torch.float64, got {dtype}")


def _shapes(y0: Any) -> list[torch.Size]:
    return [y.shape for y in y0] if isinstance(y0, (tuple, list)) else [y0.shape]


def _user_norm(norm: Callable, y0: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """torchdiffeq hands ``norm`` the scaled error shaped like the state (a tuple for tuples)."""
    shapes = _shapes(y0)
    if not isinstance(y0, (tuple, list)):
        return lambda x: norm(x.view(shapes[0]))
    sizes = [math.prod(s) for s in shapes]
    return lambda x: norm(tuple(p.view(s) for p, s in zip(torch.split(x, sizes), shapes)))


def _mixed_norm(y0: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """torchdiffeq's default for tuple states: the largest RMS norm over the parts."""
    return channel_rms_norm([math.prod(s) for s in _shapes(y0)])


def _adaptive(
    func: Callable, y0: Any, t: torch.Tensor, rtol: Any, atol: Any, solver: str, options: dict,
    gradient: AbstractGradient,
) -> Any:  # fmt: skip
    controller, solver = _pid(y0, rtol, atol, options, solver, _stops_at_end(t, options)), solver025(solver)
    if options.get("max_num_steps") is not None:
        solver = _limited(solver, t, int(options["max_num_steps"]))
    solver, controller = _hooked(func, y0, t, solver, controller)
    return solve(func, y0, t, solver, controller=controller, max_steps=2**31 - 1, gradient=gradient).ys


def _stops_at_end(t: torch.Tensor, options: dict) -> bool:
    """Whether the final time is one of ``step_t``/``jump_t``: 0.2.5 cuts a step at the next of
    those, so its last step then ends on the final time instead of past it."""
    end = float(t[-1])
    return any(
        bool((torch.as_tensor(times, dtype=torch.float64).reshape(-1) == end).any())
        for times in (options.get("step_t"), options.get("jump_t"))
        if times is not None
    )


def _limited(solver: Any, t: torch.Tensor, max_num_steps: int) -> Any:
    """torchdiffeq 0.2.5's ``max_num_steps``: a bound on the steps attempted between two
    consecutive output times (it restarts its count at each one), not on the whole solve. A
    solver object of this solve's own whose ``step`` counts the attempts of each output interval
    and raises when one exceeds the bound."""
    method = resolve_solver(solver)
    step = method.step
    sign = -1.0 if len(t) > 1 and bool(t[0] > t[1]) else 1.0
    ends = (sign * t.detach().to(torch.float64)).tolist()  # the loop's own (increasing) time
    counts: dict[int, int] = {}

    def limited_step(f: Callable, s: float, y: torch.Tensor, f0: Any, h: float, need_error: bool,
                     state: Any = None) -> Any:  # fmt: skip
        interval = min(bisect.bisect_right(ends, float(s)), len(ends) - 1)  # the output it heads for
        counts[interval] = counts.get(interval, 0) + 1
        if counts[interval] > max_num_steps:
            raise RuntimeError(
                f"odeint: the maximum number of steps (max_num_steps={max_num_steps}) was reached between "
                f"t[{interval - 1}] and t[{interval}] (counted per output interval, as torchdiffeq does): "
                "raise options['max_num_steps'] or loosen rtol/atol"
            )
        return step(f, s, y, f0, h, need_error, state)

    method.step = limited_step  # this solve's own solver object
    return method


def _pid(y0: Any, rtol: Any, atol: Any, options: dict, solver: str, land_on_end: bool = False) -> Stepper:
    """torchdiffeq 0.2.5's step-size control of torchnde solver ``solver`` (see ``_steps025``)."""
    norm = options.get("norm")
    if norm is not None:
        norm = _user_norm(norm, y0)
    elif isinstance(y0, (tuple, list)):
        norm = _mixed_norm(y0)
    return stepper(
        solver, rtol=rtol, atol=atol, norm=norm, step_ts=options.get("step_t"), jump_ts=options.get("jump_t"),
        land_on_end=land_on_end, **_pid_options(options),
    )  # fmt: skip


def _until_event(
    func: Callable, y0: Any, t: torch.Tensor, rtol: Any, atol: Any, method: str, options: dict,
    event_fn: Callable, gradient: AbstractGradient,
) -> tuple[torch.Tensor, Any]:  # fmt: skip
    """torchdiffeq 0.2.5's event mode: from ``t[0]`` (``t[1]`` gives only the direction) until
    the first component of ``event_fn(t, y)`` crosses zero; ``(event_t, states at [t[0],
    event_t])``. As in torchdiffeq, the event time carries no gradient and the states are
    differentiated at that fixed time: the event is found without a graph, then the solve to it
    is repeated under ``gradient`` (only while grad is enabled)."""
    if len(t) != 2:
        raise ValueError(f"We require len(t) == 2 when in event handling mode, but got len(t)={len(t)}.")
    if method in _ADAPTIVE:
        name = _ADAPTIVE[method]
        controller = _pid(y0, rtol, atol, options, name, land_on_end=True)  # no final time here
        solver, search = solver025(name), solver025(name)  # each solve hooks its own object
    else:
        _check_fixed_options(options)
        if options.get("step_size") is None:
            raise ValueError(
                "event handling with a fixed-step method needs options['step_size'], as in torchdiffeq"
            )
        solver = _fixed_solver(method, rtol, atol, options)
        if options.get("perturb"):
            solver = _perturbed(solver, _dtype(y0))
        controller = ConstantStep(abs(float(options["step_size"])))
        search = solver
    max_steps = int(options.get("max_num_steps", 2**31 - 1))
    t0 = t[0].detach().to(torch.float64)
    with torch.no_grad():
        signs = torch.sign(event_fn(t[0], y0))  # each component made positive at the start

        def first(tt: torch.Tensor, y: Any) -> torch.Tensor:  # crosses zero with the first component
            return torch.min(event_fn(tt, y) * signs)

        if bool(first(t[0], y0) == 0):  # torchdiffeq: an event at the start ends the solve there
            return t[0].detach().clone(), _pair(y0, y0)
        horizon = t0 + (-1e15 if bool(t[0] > t[1]) else 1e15)
        hooked, hooked_ctrl = _hooked(func, y0, t, search, controller)  # the callbacks see this solve
        sol = solve(func, y0, torch.stack([t0, horizon]), hooked, controller=hooked_ctrl, max_steps=max_steps,
                    event=Event(first))  # fmt: skip
    if sol.event_ts is None or len(sol.event_ts) == 0:
        raise RuntimeError("odeint: the event did not occur")
    event_t = sol.event_ts[0]
    if torch.is_grad_enabled():
        times = torch.stack([t[0].to(torch.float64), event_t.to(t.device)])
        ys = solve(func, y0, times, solver, controller=controller, max_steps=max_steps, gradient=gradient).ys
    elif isinstance(y0, (tuple, list)):
        ys = tuple(torch.stack([y, e[0]]) for y, e in zip(y0, sol.event_ys))
    else:
        ys = torch.stack([y0, sol.event_ys[0]])
    return event_t.to(t), ys


def _pair(y0: Any, y1: Any) -> Any:
    if isinstance(y0, (tuple, list)):
        return tuple(torch.stack([a, b]) for a, b in zip(y0, y1))
    return torch.stack([y0, y1])


def _fixed(
    func: Callable, y0: Any, t: torch.Tensor, solver: str, options: dict, gradient: AbstractGradient
) -> Any:
    _check_fixed_options(options)
    interp = options.get("interp", "linear")
    grid = _grid(func, y0, t, options.get("step_size"), options.get("grid_constructor"))
    spacing = float(grid.diff().abs().max()) if len(grid) > 1 else 1.0
    if options.get("perturb"):
        solver = _perturbed(solver, _dtype(y0))
    solver, controller = _hooked(func, y0, t, solver, ConstantStep(spacing, step_ts=grid))
    if interp == "linear" and grid is not t:
        solver = _linear_dense(solver)
    # the steps land on the grid; output times between grid points are the dense output's (cubic
    # Hermite, or torchdiffeq's linear interpolation): with an Adjoint, its backward intervals
    # are then the output intervals, each restarted from the forward value, as in torchdiffeq
    return solve(func, y0, t, solver, controller=controller, max_steps=2**31 - 1, gradient=gradient).ys


def _grid(func: Callable, y0: Any, t: torch.Tensor, step_size: Any, constructor: Any) -> torch.Tensor:
    """torchdiffeq's grid from ``t[0]`` to ``t[-1]``: ``constructor(func, y0, t)``, or ``t[0] + k
    step_size`` with the last point moved onto ``t[-1]`` (a decreasing ``t`` handled as the
    increasing ``-t``, as torchdiffeq does), or ``t`` itself."""
    if step_size is not None and constructor is not None:
        raise ValueError("step_size and grid_constructor are mutually exclusive arguments.")
    if constructor is not None:  # torchdiffeq: the grid in the user's time, from t[0] to t[-1]
        grid = torch.as_tensor(constructor(func, y0, t)).to(t)
        if grid.ndim != 1 or len(grid) < 1 or bool(grid[0] != t[0]) or bool(grid[-1] != t[-1]):
            raise ValueError("grid_constructor must return a 1-D grid from t[0] to t[-1]")
        if len(grid) > 1 and not bool(((grid[1:] - grid[:-1]) * (t[-1] - t[0]) > 0).all()):
            raise ValueError("grid_constructor must return a grid strictly monotonic in the direction of t")
        return grid
    if step_size is None:  # torchdiffeq steps from output time to output time
        return t
    sign = -1.0 if len(t) > 1 and bool(t[-1] < t[0]) else 1.0
    start, end = sign * t[0], sign * t[-1]
    niters = math.ceil(float((end - start) / step_size + 1))
    grid = torch.arange(0, niters, dtype=t.dtype, device=t.device) * step_size + start
    grid[-1] = end
    return sign * grid


def _adjoint_grids(
    func: Callable, y0: Any, t: torch.Tensor, step_size: Any, constructor: Any
) -> tuple[float, torch.Tensor | None]:
    """``(dt, step_ts)`` of a fixed-grid adjoint solve: torchdiffeq 0.2.5 solves each output
    interval backwards, from ``t[i]`` to ``t[i-1]``, on a grid of its own (:func:`_grid` of that
    interval; a short last step where ``step_size`` does not divide it). The union of those grids
    as the adjoint's ``step_ts`` and their largest spacing as its ``dt`` give the same steps."""
    t = t.detach()
    grids = [_grid(func, y0, t[[i, i - 1]], step_size, constructor) for i in range(len(t) - 1, 0, -1)]
    dt = max((float(g.diff().abs().max()) for g in grids if len(g) > 1), default=1.0)
    inner = [g[1:-1] for g in grids if len(g) > 2]
    return dt, (torch.cat(inner).to(torch.float64) if inner else None)


def _dtype(y0: Any) -> torch.dtype:
    return (y0[0] if isinstance(y0, (tuple, list)) else y0).dtype


def _perturbed(solver: Any, dtype: torch.dtype) -> Any:
    """torchdiffeq's ``perturb=True``: a stage at the start of a step sees ``f`` at the next
    float of the state's dtype after it, one at its end at the float before it (both towards the
    inside of the step, in the direction of integration), so a discontinuity at a grid point is
    seen on the side of the step. A solver object whose ``step`` wraps that step's ``f``; the
    step's ``f0`` is evaluated afresh (a reused ``f1`` of the previous step is on the wrong side).
    The loop itself is unchanged."""
    method = resolve_solver(solver)
    if isinstance(method, AdamsBashforthMoulton):  # this solve's own object, its options kept
        method = copy.copy(method)
    elif not isinstance(solver, str):  # an object of this solve's own: still wrap a copy
        method = type(method)(newton=method.newton) if hasattr(method, "newton") else type(method)()
    step = method.step
    up, down = torch.tensor(math.inf, dtype=dtype), torch.tensor(-math.inf, dtype=dtype)

    def perturbed_step(f: Callable, s: float, y: torch.Tensor, f0: Any, h: float, need_error: bool,
                       state: Any = None) -> Any:  # fmt: skip
        s1 = s + h
        start = torch.nextafter(torch.tensor(s, dtype=dtype), up)
        end = torch.nextafter(torch.tensor(s1, dtype=dtype), down)

        def nudged(si: Any, yi: torch.Tensor) -> torch.Tensor:
            if not isinstance(si, torch.Tensor):
                if si == s:
                    return f(start, yi)
                if si == s1:
                    return f(end, yi)
            return f(si, yi)

        return step(nudged, s, y, nudged(s, y), h, need_error, state)

    method.step = perturbed_step  # this solve's own solver object
    return method


def _check_fixed_options(options: dict[str, Any]) -> None:
    interp = options.get("interp", "linear")
    if interp not in ("linear", "cubic"):
        raise ValueError(f"options['interp'] must be 'linear' or 'cubic', got {interp!r}")


_CALLBACKS = ("callback_step", "callback_accept_step", "callback_reject_step")


def _hooked(func: Callable, y0: Any, t: torch.Tensor, solver: str, controller: Any) -> tuple[Any, Any]:
    """torchdiffeq's solver callbacks, methods of ``func``: ``callback_step(t0, y0, dt)`` before
    each step, ``callback_accept_step``/``callback_reject_step(t0, y0, dt)`` after its verdict
    (adaptive methods only, as in torchdiffeq). ``(solver, controller)`` unchanged when ``func``
    has none; otherwise a solver whose ``step`` and a controller whose ``adapt`` call them, so
    the loop itself is the same either way."""
    found = [getattr(func, name, None) for name in _CALLBACKS]
    if not any(callable(c) for c in found):
        return solver, controller
    if not controller.adaptive and any(callable(c) for c in found[1:]):
        warnings.warn(f"fixed-step methods do not call {_CALLBACKS[1]} or {_CALLBACKS[2]}", stacklevel=4)
    shapes, is_tuple = _shapes(y0), isinstance(y0, (tuple, list))
    sizes = [math.prod(shape) for shape in shapes]

    def view(y: torch.Tensor) -> Any:  # the state's structure
        if is_tuple:
            return tuple(p.view(shape) for p, shape in zip(torch.split(y, sizes), shapes))
        return y.view(shapes[0])

    hook_solver, hook_controller = _hooks(found, t, view)
    return hook_solver(solver), hook_controller(controller)


def _hooks(callbacks: list[Any], t: torch.Tensor, view: Callable) -> tuple[Callable, Callable]:
    """``(hook_solver, hook_controller)``: each takes this solve's solver (a name or an object
    of its own) or controller and returns one whose ``step`` calls ``callbacks[0]`` before each
    step, and whose ``adapt`` calls ``callbacks[1]`` or ``callbacks[2]`` with the step just
    judged; the callbacks get ``(t0, view(y0), dt)`` as torchdiffeq passes them: user time, the
    state's structure, ``|dt|``. The controller is left as it is when fixed-step, or without
    accept/reject callbacks."""
    on_step, on_accept, on_reject = (c if callable(c) else None for c in callbacks)
    sign = -1.0 if len(t) > 1 and bool(t[0] > t[1]) else 1.0
    last: list[Any] = [None]

    def user(s: float, y: torch.Tensor, h: float) -> tuple[torch.Tensor, Any, torch.Tensor]:
        return torch.tensor(sign * s, dtype=t.dtype, device=t.device), view(y), torch.tensor(h, dtype=t.dtype)

    def hook_solver(solver: Any) -> Any:
        method = resolve_solver(solver)
        step = method.step

        def hooked_step(f: Callable, s: float, y: torch.Tensor, f0: Any, h: float, need_error: bool,
                        state: Any = None) -> Any:  # fmt: skip
            last[0] = (s, y, h)
            if on_step is not None:
                on_step(*user(s, y, h))
            return step(f, s, y, f0, h, need_error, state)

        method.step = hooked_step  # this solve's own solver object
        return method

    def hook_controller(controller: Any) -> Any:
        if not controller.adaptive or not (on_accept or on_reject):
            return controller
        adapt = controller.adapt

        def hooked_adapt(err: Any, h: Any, memory: Any, ok: Any = True) -> tuple[Any, Any]:
            accept, dt = adapt(err, h, memory, ok)
            callback = on_accept if accept else on_reject
            if callback is not None:
                callback(*user(*last[0]))
            return accept, dt

        controller = dataclasses.replace(controller)  # a copy: the hook is this solve's
        object.__setattr__(controller, "adapt", hooked_adapt)
        return controller

    return hook_solver, hook_controller


def _linear_dense(solver: Any) -> Any:
    r"""This solve's own copy of ``solver`` whose continuous extension is torchdiffeq's linear
    interpolation between the step's ends, :math:`y_0 + \theta (y_1 - y_0)`: one stage
    ``(y1 - y0) / dt`` with weight :math:`\theta`, and no evaluation of ``f(t1, y1)``. Its steps
    are the solver's own (a ``step`` replaced on the object, by ``perturb`` or the callbacks,
    is kept)."""
    method = resolve_solver(solver)
    linear = _linear_class(type(method)).__new__(_linear_class(type(method)))
    linear.__dict__.update(method.__dict__)
    return linear


@functools.cache
def _linear_class(cls: type) -> type:
    def dense_stages(self: Any, func: Any, t0: Any, y0: torch.Tensor, dt: Any, result: Any, f1: Any) -> Any:
        return ((result.y1 - y0) / dt).unsqueeze(-1)

    return type(
        f"Linear{cls.__name__}",
        (cls,),
        {
            "needs_end_derivative": property(lambda self: False),
            "dense_stages": dense_stages,
            "dense_polynomial": property(lambda self: _LINEAR),
        },
    )


_LINEAR = DensePolynomial(np.ones((1, 1)), order=1)


# the keyword arguments odeint_event passes on to its interface
_ODEINT_ARGUMENTS = ("rtol", "atol", "method", "options")
_ADJOINT_ARGUMENTS = ("adjoint_rtol", "adjoint_atol", "adjoint_method", "adjoint_options", "adjoint_params")


def odeint_event(
    func: Callable[[torch.Tensor, Any], Any],
    y0: torch.Tensor | tuple[torch.Tensor, ...],
    t0: torch.Tensor,
    *,
    event_fn: Callable[[torch.Tensor, Any], torch.Tensor],
    reverse_time: bool = False,
    odeint_interface: Callable | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, Any]:
    r"""Integrate from ``t0`` until ``event_fn(t, y)`` crosses zero (torchdiffeq 0.2.5's
    ``odeint_event``): returns ``(event_t, ys)`` with ``ys`` the states at ``[t0, event_t]``.

    ``odeint_interface`` is :func:`odeint` (default) or :func:`odeint_adjoint`; ``kwargs`` are
    its arguments (``rtol``, ``atol``, ``method``, ``options``, and the adjoint's), any method
    included (a fixed-grid one needs ``options["step_size"]``). The solve runs in event mode
    (:func:`odeint` with ``event_fn``), which gives the states at the *fixed* event time; the
    event time and the final state are then made differentiable by the implicit function
    theorem. With :math:`g` the component of ``event_fn`` that crossed, :math:`y^*` the state
    at the event time :math:`t^*` and :math:`f^* = f(t^*, y^*)`,

    .. math::

        \frac{dt^*}{d\theta} = -\frac{\partial_y g\,\frac{\partial y^*}{\partial \theta}
        + \partial_\theta g}{\partial_t g + \partial_y g \cdot f^*}, \qquad
        \frac{dy(t^*)}{d\theta} = \frac{\partial y^*}{\partial \theta} + f^* \frac{dt^*}{d\theta},

    where :math:`\partial y^* / \partial \theta` is the chosen interface's gradient of the solve
    to the fixed time. Beyond torchdiffeq, tensors ``event_fn`` depends on (its parameters) get
    their gradient too. Costs one more evaluation of ``func`` and of ``event_fn``.

    ```python
    import torch
    from torchnde.compat.torchdiffeq import odeint_event
    t_hit, ys = odeint_event(lambda t, y: -torch.ones_like(y), torch.ones(1), torch.tensor(0.0),
                             event_fn=lambda t, y: y.sum())
    ```
    """
    interface = odeint if odeint_interface is None else odeint_interface
    if interface not in (odeint, odeint_adjoint):
        raise ValueError(
            "odeint_interface must be torchnde.compat.torchdiffeq's odeint or odeint_adjoint, "
            f"got {odeint_interface!r}"
        )
    valid = _ODEINT_ARGUMENTS if interface is odeint else _ODEINT_ARGUMENTS + _ADJOINT_ARGUMENTS
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(
            f"odeint_event got unsupported argument(s) {unknown}; supported: {', '.join(valid)}."
            f"{did_you_mean(unknown, valid)}"
        )
    t0 = torch.as_tensor(t0)
    t0 = t0 if t0.is_floating_point() else t0.to(torch.get_default_dtype())
    start = t0.reshape(-1)
    t = torch.cat([start, start.detach() + (-1.0 if reverse_time else 1.0)])  # t[1]: the direction
    event_t, ys = interface(func, y0, t, event_fn=event_fn, **kwargs)
    if not torch.is_grad_enabled():
        return event_t, ys
    is_tuple = isinstance(ys, tuple)
    at_event = tuple(y[-1] for y in ys) if is_tuple else ys[-1]
    event_t, at_event = _differentiable_event(func, event_fn, event_t, at_event, is_tuple)
    if is_tuple:
        return event_t, tuple(torch.cat([y[:-1], e[None]]) for y, e in zip(ys, at_event))
    return event_t, torch.cat([ys[:-1], at_event[None]])


def _differentiable_event(
    func: Callable, event_fn: Callable, event_t: torch.Tensor, y_star: Any, is_tuple: bool
) -> tuple[torch.Tensor, Any]:
    """The event time and state with the implicit function theorem's gradients (see
    :func:`odeint_event`). Values are unchanged: the event time is ``t* - (G - G_detached) /
    dG/dt`` with ``G = g(t*, y*)`` recorded on the graph of ``y*`` (and of ``event_fn``'s own
    tensors), and the state ``y* + f* (t - t*)``; ``dG/dt`` and ``f*`` are constants."""
    t_star = event_t.detach()
    parts = list(y_star) if is_tuple else [y_star]
    with torch.enable_grad():
        t_leaf = t_star.clone().requires_grad_(True)
        y_leaf = [p.detach().clone().requires_grad_(True) for p in parts]
        values = event_fn(t_leaf, tuple(y_leaf) if is_tuple else y_leaf[0]).reshape(-1)
        k = int(values.detach().abs().argmin())  # the component that crossed zero
        grads = torch.autograd.grad(values[k], [t_leaf, *y_leaf], allow_unused=True)
    with torch.no_grad():
        f_star = func(t_star, tuple(p.detach() for p in parts) if is_tuple else parts[0].detach())
        f_parts = list(f_star) if is_tuple else [f_star]
        rate = torch.zeros((), dtype=t_star.dtype, device=t_star.device)
        if grads[0] is not None:
            rate = rate + grads[0].to(rate.dtype)
        for dg, fp in zip(grads[1:], f_parts):
            if dg is not None:
                rate = rate + (dg * fp).sum().to(rate.dtype)
    if float(rate) == 0.0:
        raise RuntimeError(
            "odeint_event: event_fn does not change along the solution at the event "
            "(d event_fn/dt = 0), so the event time has no gradient; make the event a transversal "
            "crossing, or detach the inputs"
        )
    g = event_fn(t_star, y_star).reshape(-1)[k]
    shift = -(g - g.detach()).to(t_star.dtype) / rate  # zero, with the gradient of the event time
    event_time = t_star + shift
    moved = [p + fp.to(p.dtype) * shift.to(p.dtype) for p, fp in zip(parts, f_parts)]
    return event_time, tuple(moved) if is_tuple else moved[0]
