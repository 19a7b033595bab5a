r"""Gradient strategies: how ``solve`` is differentiated (``solve(..., gradient=...)``).

Four ways to get :math:`\partial L/\partial(y_0, \theta, t)` through a solve, trading compute
for memory:

| strategy | gradient | memory held after the forward pass |
|---|---|---|
| ``Backprop`` | exact gradient of the discretised solve | every operation's saved tensors |
| ``Checkpoint`` | the same, bit for bit | one state (and its derivative) per step |
| ``Adjoint`` | continuous adjoint, to the tolerances | the outputs only: O(1) in the steps |
| ``Reversible`` | exact, for a reversible solver | the outputs only: O(1) in the steps |

Gradients with respect to the output times ``t_eval`` use the flow identities
:math:`\partial y(t_i)/\partial t_i = f(t_i, y(t_i))` and
:math:`\partial y(t_i)/\partial t_0 = -\Phi(t_i, t_0) f(t_0, y_0)` with every strategy; they
equal the derivative of the discretised solution up to the solver's tolerance.

```python
import torch, torchnde as nde
f = torch.nn.Linear(2, 2)
y0 = torch.randn(2, requires_grad=True)
sol = nde.solve(lambda t, y: f(y), y0, torch.linspace(0, 1, 5), gradient=nde.Adjoint(params=f))
sol.ys.square().sum().backward()
```
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from .._loop import LoopOptions, Problem, Raw, integrate
from .._names import checked_keywords, did_you_mean
from .._solution import Stats
from ..controllers import AbstractController, ConstantStep, PIDController
from ..solvers import AbstractSolver, resolve_solver
from .adjoint import run_adjoint
from .checkpoint import check_budgeted, run_budgeted
from .discover import discover
from .memory import GraphMemory, graph_memory
from .reversible import run_reversible
from .sde_adjoint import check_sde_adjoint, sde_backward

__all__ = [
    "AbstractGradient",
    "Adjoint",
    "Backprop",
    "Checkpoint",
    "GraphMemory",
    "Reversible",
    "check_sde_adjoint",
    "graph_memory",
    "names",
    "resolve_gradient",
]


class AbstractGradient:
    """Base class of the gradient strategies; ``name`` is the string ``solve`` accepts.

    A strategy owns its passes: :meth:`run` runs the loop its way (with a graph, with
    recomputation, or without a graph under a custom backward pass) and returns the loop's raw
    result, whose ``ys`` carry the gradient, and the backward pass's statistics (or ``None``).
    """

    name: str = ""

    def run(self, problem: Problem, solver: AbstractSolver, ctrl: AbstractController, opts: LoopOptions,
            owner: Any) -> tuple[Raw, Stats | None]:  # fmt: skip
        """Run the loop for ``problem``; ``owner`` is the term's vector field (its parameters
        are the default ones to differentiate, where a strategy needs them listed)."""
        return integrate(problem, solver, ctrl, opts), None


@checked_keywords
@dataclass(frozen=True)
class Backprop(AbstractGradient):
    """Differentiate through every operation of the solve (discretise-then-optimise).

    The gradient is the exact derivative of the computed solution; the step-size controller's
    accept/reject decisions and step sizes are treated as constants (as in torchdiffeq and
    diffrax). Memory grows with the number of steps times the vector field's activations.
    Double backward works. This is the default.
    """

    name = "backprop"


@checked_keywords
@dataclass(frozen=True)
class Checkpoint(AbstractGradient):
    """Backprop with recomputation: the exact ``Backprop`` gradient at a fraction of its memory.

    **Arguments:**

    - ``checkpoints``: ``None`` (default) stores every step's input, as described below. An
      int ``k`` bounds what the forward pass holds by ``k`` step inputs, whatever the number of
      steps: the forward pass runs without a graph and keeps ``k`` of the accepted steps'
      inputs, chosen online (a doubling schedule, :mod:`torchnde.gradients.schedule`); the
      backward pass recomputes the others from them by recursive bisection and differentiates
      one step at a time. It replays at most ``n (1 + ceil(log2(n / k)) / 2)`` steps for ``n``
      steps (``schedule.recompute_bound``), counted in ``sol.backward_stats.steps`` (and the
      evaluations of ``f`` in ``.nfe``). The gradient is ``Backprop``'s to round-off. It
      differentiates ``y0``, the times, and ``params`` (default: what ``f`` uses, as found for
      :class:`Adjoint`); it supports global solves without events, ``dense``, ``save_steps``
      or ``compile``, and a failed solve raises even with ``throw=False``.

    The forward pass keeps, for each accepted step, only its inputs (the state and, for
    first-same-as-last methods, its derivative); the backward pass recomputes one step at a
    time (non-reentrant :func:`torch.utils.checkpoint.checkpoint`) and differentiates it.
    Memory grows with the number of steps times the *state* size instead of the activations;
    the backward pass costs one more forward evaluation of every step (Griewank & Walther,
    *Algorithm 799: revolve*, ACM TOMS 2000, describe the general trade-off; this is its
    store-every-step end). Gradients reach everything ``f`` uses, closed-over tensors included.
    ``f`` must be deterministic: it is called again on the same inputs (random draws inside
    ``f``, such as dropout, would differ; the random-number state is not stored per step).
    """

    checkpoints: int | None = None
    params: Any = None

    name = "checkpoint"

    def __post_init__(self) -> None:
        k = self.checkpoints
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ValueError(f"Checkpoint(checkpoints=...) must be None or a positive int, got {k!r}")

    def run(self, problem: Problem, solver: AbstractSolver, ctrl: AbstractController, opts: LoopOptions,
            owner: Any) -> tuple[Raw, Stats | None]:  # fmt: skip
        if self.checkpoints is None:
            return integrate(problem, solver, ctrl, dataclasses.replace(opts, checkpoint=True)), None
        check_budgeted(problem, solver, opts)
        if not torch.is_grad_enabled():
            return integrate(problem, solver, ctrl, opts), None
        params = _parameters(self.params, owner, *initial_point(problem), type(self).__name__)
        return run_budgeted(problem, solver, ctrl, opts, params, self.checkpoints)


@checked_keywords
@dataclass(frozen=True)
class Adjoint(AbstractGradient):
    r"""The continuous adjoint method (optimise-then-discretise; Pontryagin 1962, Chen et al.,
    *Neural Ordinary Differential Equations*, NeurIPS 2018).

    The forward solve keeps no graph. The backward pass solves, from each output time to the
    previous one, the augmented system

    .. math:: \dot y = f(t, y),\quad \dot a = -a^\top \partial_y f,\quad
              \dot g = -a^\top \partial_\theta f

    backwards in time, adding the incoming gradient of each output to :math:`a` on the way and
    restarting :math:`y` from the forward pass's value there. Memory is O(1) in the number of
    steps; the gradient is accurate to the adjoint solve's tolerances (not the exact derivative
    of the forward discretisation).

    **Arguments:**

    - ``rtol``, ``atol``: tolerances of the adjoint solve (default: the forward solve's): floats,
      or 1-D tensors with one tolerance per element of the flat augmented state ``[y | a | g_1 |
      ... | g_k]`` (the parameters in the order they are differentiated; global layout only).
    - ``solver``: solver of the adjoint solve (default: the forward solver).
    - ``seminorm``: leave the parameter-gradient channels :math:`g` out of the error control
      (Kidger, Chen & Lyons, *"Hey, that's not an ODE": Faster ODE Adjoints via Seminorms*,
      ICML 2021): they feed back into nothing, so their error need not limit the step. The error
      norm is the larger of the RMS norms of the :math:`y` and :math:`a` channels (and, without
      the seminorm, of every parameter's channel).
    - ``params``: the tensors to differentiate besides ``y0`` and the times: an ``nn.Module``,
      or an iterable of tensors; when given, exactly these (those requiring grad) receive
      gradients, and nothing is discovered. Default (``None``): ``f.parameters()`` when ``f`` is
      an ``nn.Module``; otherwise the tensors ``f`` uses are *discovered*, as follows.

    **Discovery** (``params=None``, ``f`` not an ``nn.Module``): ``f`` is evaluated once more, at
    the initial time and the initial state (detached), with grad recording on, and the autograd
    graph of its output is walked back to the tensors requiring grad it depends on: the leaves
    (a closed-over network's parameters, a closed-over tensor ``A`` in ``lambda t, y: A @ y``)
    and any non-leaf tensor ``f`` closes over (``W = base * 2`` computed outside ``f``: ``W`` is
    differentiated, and autograd carries its gradient on to ``base``). This costs one extra
    evaluation of ``f`` per solve (two when ``f`` closes over a non-leaf tensor), only when grad
    is recording, and is not counted in ``sol.stats.nfe``. It cannot see tensors that ``f`` uses
    only in branches not taken at the initial point (``net(y) if t > 0.5 else -y`` from
    ``t0 = 0``), nor tensors created afresh inside ``f`` at each call: pass ``params=`` for those.
    When nothing requiring grad is found and ``y0`` does not require grad either, the outputs
    carry no gradient with respect to ``f``, as with ``Backprop``. A ``ValueError`` asks for
    ``params=`` when ``f`` depends on a tensor computed outside it that cannot be identified.
    - ``max_steps``: step budget of each adjoint interval (default: the forward solve's).
    - ``dt``: fixed steps for the adjoint solve. Default: the forward solve's ``dt`` when it took
      fixed steps and no ``rtol``/``atol`` is given here, adaptive steps otherwise.
    - ``step_ts``, ``jump_ts``: times (of the forward problem) the adjoint solve steps onto, and
      known discontinuities of ``f`` in time it steps onto and restarts after, as for the
      controllers (global layout only). Default: none, whatever the forward controller has.
    - ``controller_options``: further keyword arguments of the adjoint solve's
      :class:`PIDController` (``safety``, ``factor_min``, ``factor_max``, ``pcoeff``, ...,
      ``dtmin``, ``dtmax``; ``dt0`` sets the first step of the first interval, later intervals
      start from the step the previous one ended with). Not ``rtol``/``atol``/``norm`` (set
      above), nor ``step_ts``/``jump_ts``.
    - ``norm``: the error norm of the adjoint solve instead of the one ``seminorm`` picks: a
      callable taking the flat scaled error ``[y | a | g_1 | ... | g_k]`` (1-D; the parameters
      in the order they are differentiated) and returning a scalar tensor. Global layout only.
    - ``controller_hook``: a function applied to the controller of each adjoint interval (a
      :class:`PIDController`, or :class:`ConstantStep` for fixed steps), returning the controller
      to use instead, e.g. one whose ``adapt`` observes the accept/reject verdicts (as
      ``torchnde.compat.torchdiffeq`` does for torchdiffeq's ``callback_*_adjoint``). Default:
      none.
    - ``time_channel``: integrate torchdiffeq's time channel :math:`\tau` with the augmented
      system, :math:`\dot\tau = -a^\top \partial_t f`, as its last element (the flat state
      becomes ``[y | a | g_1 | ... | g_k | tau]``, also for ``norm`` and tensor tolerances), so
      that its error enters the error control as in torchdiffeq's adjoint: :math:`\tau` starts
      at zero and, when the output times require grad, takes :math:`-\partial L/\partial t_i`
      at each output time. It only steers the step size (and costs one more vector-Jacobian
      input per evaluation); the times' gradients are formed as without it. Global layout only.
      Default ``False``.

    **SDE terms** get the stochastic adjoint (Li, Wong, Chen & Duvenaud, *Scalable Gradients
    for Stochastic Differential Equations*, AISTATS 2020; :mod:`torchnde.gradients.sde_adjoint`):
    the adjoint SDE is solved backwards in Stratonovich form on the same Brownian path, with
    fixed steps (the forward ones, or ``dt``) and a Stratonovich ``solver`` (``"midpoint"`` or
    ``"heun"``; default Heun after ``heun``, ``euler_heun`` and ``reversible_heun``, midpoint
    otherwise); an Itô SDE is converted with its correction term. ``dt``, ``solver`` and
    ``params`` apply; the tolerance and controller options are errors.
    """

    rtol: float | torch.Tensor | None = None
    atol: float | torch.Tensor | None = None
    solver: Any = None
    seminorm: bool = True
    params: Any = None
    max_steps: int | None = None
    dt: float | None = None
    step_ts: Any = None
    jump_ts: Any = None
    controller_options: dict[str, Any] | None = None
    norm: Any = None
    controller_hook: Any = None
    time_channel: bool = False

    name = "adjoint"

    def __post_init__(self) -> None:
        for key in ("rtol", "atol"):
            _check_adjoint_tolerance(key, getattr(self, key))
        if self.solver is not None:
            object.__setattr__(self, "solver", resolve_solver(self.solver))
        for key in ("seminorm", "time_channel"):
            if not isinstance(getattr(self, key), bool):
                raise TypeError(f"Adjoint({key}=...) must be True or False, got {getattr(self, key)!r}")
        if self.norm is not None and not callable(self.norm):
            raise TypeError(f"Adjoint(norm=...) must be callable, got {type(self.norm).__name__}")
        if self.controller_hook is not None and not callable(self.controller_hook):
            raise TypeError(
                f"Adjoint(controller_hook=...) must be callable, got {type(self.controller_hook).__name__}"
            )
        if self.dt is not None and (not isinstance(self.dt, (int, float)) or not self.dt > 0):
            raise ValueError(f"Adjoint(dt=...) must be a positive float, got {self.dt!r}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise ValueError(f"Adjoint(max_steps=...) must be a positive int, got {self.max_steps!r}")
        options = dict(self.controller_options or {})
        reserved = sorted(set(options) & {"rtol", "atol", "norm", "step_ts", "jump_ts"})
        if reserved:
            raise ValueError(
                f"Adjoint(controller_options=...) cannot set {reserved}: pass rtol/atol, seminorm, "
                "step_ts and jump_ts to Adjoint itself"
            )
        PIDController(**options)  # checked now: an unknown or invalid option fails here
        object.__setattr__(self, "controller_options", options)
        ConstantStep(1.0, step_ts=self.step_ts, jump_ts=self.jump_ts)  # the times checked too

    def parameters(self, f: Any, t0: torch.Tensor, y0: Any) -> tuple[torch.Tensor, ...]:
        """The tensors this strategy differentiates besides ``y0`` (only those requiring grad):
        ``params``, or those discovered from ``f(t0, y0)`` (``t0``: the initial time, a tensor of
        the state's dtype, per sample ``[B, 1, ..., 1]``; ``y0``: the initial state as the user
        gave it, a tensor or a tuple)."""
        return _parameters(self.params, f, t0, y0, type(self).__name__)

    def run(self, problem: Problem, solver: AbstractSolver, ctrl: AbstractController, opts: LoopOptions,
            owner: Any) -> tuple[Raw, Stats | None]:  # fmt: skip
        if not torch.is_grad_enabled():
            return integrate(problem, solver, ctrl, opts), None
        params = self.parameters(owner, *initial_point(problem))
        _check_something_to_differentiate(self, params, problem)
        run = _without_graph(problem, solver, ctrl, opts)
        backward = sde_backward if problem.sde is not None else None  # the stochastic adjoint
        return run_adjoint(problem, solver, ctrl, self, params, run, opts.max_steps, backward)


def _check_adjoint_tolerance(key: str, value: Any) -> None:
    """A tolerance of :class:`Adjoint`: ``None``, a positive float, or a 1-D floating tensor of
    positive finite tolerances (one per element of the augmented state)."""
    if value is None:
        return
    if isinstance(value, torch.Tensor):
        if value.ndim != 1 or not value.is_floating_point():
            raise ValueError(
                f"Adjoint({key}=...) as a tensor must be 1-D and floating, one tolerance per element of "
                f"[y | a | g_1 | ... | g_k]; got shape {tuple(value.shape)} and dtype {value.dtype}"
            )
        if not bool((torch.isfinite(value) & (value > 0)).all()):
            raise ValueError(f"Adjoint({key}=...) must hold positive finite tolerances")
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"Adjoint({key}=...) must be a positive float, got {value!r}")


def _check_something_to_differentiate(strategy: Any, params: tuple, problem: Problem) -> None:
    """A strategy that attaches its own backward pass, asked to differentiate while grad is
    recording, with nothing requiring grad: say what to pass, rather than letting the user's
    ``backward`` fail later with "element 0 of tensors does not require grad"."""
    if params or problem.y0.requires_grad:
        return
    raise ValueError(
        f"gradient={strategy.name!r}: nothing to differentiate: y0 (and t_eval) do not require "
        f"grad, and f uses no tensor that does (looked for by evaluating f once at the initial "
        f"point). Pass {type(strategy).__name__}(params=[...]) with the tensors f uses, make y0 "
        "require grad, or solve under torch.no_grad() when no gradient is needed"
    )


def initial_point(problem: Problem) -> tuple[torch.Tensor, Any]:
    """``(t0, y0)`` as ``f`` receives them: the initial time (per sample ``[B, 1, ..., 1]``)
    and the initial state in the user's structure (what parameter discovery evaluates)."""
    if problem.per_sample:
        return problem.user_time(problem.s_eval[:, 0]), problem.unflatten(problem.y0, (problem.batch,))
    return problem.user_time(problem.s_host[0]), problem.unflatten(problem.y0, ())  # type: ignore[index]


def _without_graph(problem: Problem, solver: AbstractSolver, ctrl: AbstractController,
                   opts: LoopOptions) -> Any:  # fmt: skip
    """``run(y0)``: the forward loop from ``y0`` without a graph (the strategies that attach
    their own backward pass)."""

    def run(y0: torch.Tensor) -> Raw:
        with torch.no_grad():
            return integrate(dataclasses.replace(problem, y0=y0), solver, ctrl, opts)

    return run


def _parameters(params: Any, f: Any, t0: torch.Tensor, y0: Any, owner: str) -> tuple[torch.Tensor, ...]:
    source = params if params is not None else f
    if isinstance(source, torch.nn.Module):
        tensors = tuple(source.parameters())
    elif params is None:
        tensors = discover(f, t0, y0, owner)
    elif isinstance(source, torch.Tensor):
        tensors = (source,)
    else:
        tensors = tuple(source)
        if not all(isinstance(p, torch.Tensor) for p in tensors):
            raise TypeError(f"{owner}(params=...) must be an nn.Module or an iterable of tensors")
    return tuple(p for p in tensors if p.requires_grad)


@checked_keywords
@dataclass(frozen=True)
class Reversible(AbstractGradient):
    """Exact gradients at O(1) memory with an algebraically reversible solver.

    The forward pass keeps only its final solver state; the backward pass runs the solver
    backwards step by step, reconstructing each earlier state in closed form, and
    differentiates the step it just undid (Kidger, Foster, Li & Lyons, *Efficient and Accurate
    Gradients for Neural SDEs*, NeurIPS 2021). The gradient equals ``Backprop``'s on the same
    steps up to round-off. Needs a reversible solver (``solver="reversible_heun"``: the ODE
    method, or for an SDE term the stochastic one, which undoes each step on the same Brownian
    increment); outputs are stepped onto, not interpolated. For an SDE the memory stays O(1)
    with a :class:`~torchnde.BrownianInterval` (a :class:`~torchnde.BrownianPath` stores one
    increment per step).

    **Arguments:**

    - ``params``: the tensors to differentiate besides ``y0`` and the times, as for
      :class:`Adjoint` (default: ``f.parameters()`` when ``f`` is an ``nn.Module``, otherwise
      the tensors discovered from one evaluation of ``f``, as described there).
    """

    params: Any = None

    name = "reversible"

    def parameters(self, f: Any, t0: torch.Tensor, y0: Any) -> tuple[torch.Tensor, ...]:
        """The tensors this strategy differentiates besides ``y0``, as :meth:`Adjoint.parameters`."""
        return _parameters(self.params, f, t0, y0, type(self).__name__)

    def run(self, problem: Problem, solver: AbstractSolver, ctrl: AbstractController, opts: LoopOptions,
            owner: Any) -> tuple[Raw, Stats | None]:  # fmt: skip
        run = _without_graph(problem, solver, ctrl, opts)
        if not torch.is_grad_enabled():
            return run(problem.y0), None
        params = self.parameters(owner, *initial_point(problem))
        _check_something_to_differentiate(self, params, problem)
        return run_reversible(problem, solver, params, run)


_REGISTRY: dict[str, type[AbstractGradient]] = {
    cls.name: cls for cls in (Backprop, Checkpoint, Adjoint, Reversible)
}


def names() -> list[str]:
    """The gradient strategy names ``solve(gradient=...)`` accepts."""
    return sorted(_REGISTRY)


def resolve_gradient(gradient: str | AbstractGradient) -> AbstractGradient:
    """A strategy object from a name or an object; unknown names list the valid ones."""
    if isinstance(gradient, AbstractGradient):
        return gradient
    if isinstance(gradient, type) and issubclass(gradient, AbstractGradient):
        return gradient()
    if isinstance(gradient, str):
        cls = _REGISTRY.get(gradient.lower())
        if cls is None:
            raise ValueError(
                f"unknown gradient {gradient!r}; valid strategies: {', '.join(names())}."
                f"{did_you_mean(gradient, names())}"
            )
        return cls()
    raise TypeError(f"gradient must be a name or a strategy object, got {type(gradient).__name__}")
