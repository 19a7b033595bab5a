"""What every model shares: the solve options it passes through, and what the last solve cost."""

from __future__ import annotations

import dataclasses
import inspect
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .._names import did_you_mean
from .._solution import Solution, Stats
from .._solve import _OPTIONS, solve
from ..gradients import Adjoint

__all__ = ["SolveOptions", "as_field", "check_span", "split_pair"]

# solve()'s options that a model takes as keywords besides its own solver/rtol/atol/dt/gradient
# (save_steps is left out: a model returns its states, not a list of steps)
_SOLVE_KEYS = tuple(
    k for k in _OPTIONS if k not in {"solver", "rtol", "atol", "dt", "gradient", "save_steps"}
)


def as_field(net: Callable[..., Any]) -> Callable[[torch.Tensor, Any], Any]:
    """``net`` as a vector field ``f(t, y)``.

    A network whose ``forward`` takes one argument (an ``nn.Sequential``, an MLP) is treated as
    autonomous and called as ``net(y)``; one that takes two is called as ``net(t, y)``. The
    models call this at every evaluation of their field, so the answer is remembered per class
    (per object for a plain function, or a module whose ``forward`` was set on the instance):
    ``inspect.signature`` costs about as much as a small network's forward pass.
    """
    return (lambda t, y: net(y)) if _state_only(net) else net


_STATE_ONLY: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _state_only(net: Callable[..., Any]) -> bool:
    """Whether ``net`` takes the state alone (one required positional argument, no ``*args``)."""
    module = isinstance(net, nn.Module)
    key = type(net) if module and "forward" not in net.__dict__ else net
    try:
        return _STATE_ONLY[key]
    except (KeyError, TypeError):  # not seen yet, or not weakly referenceable
        pass
    try:
        params = inspect.signature(net.forward if module else net).parameters.values()
    except (TypeError, ValueError):
        found = False
    else:
        positional = [
            p
            for p in params
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
        found = len(positional) == 1 and not any(p.kind == p.VAR_POSITIONAL for p in params)
    try:
        _STATE_ONLY[key] = found
    except TypeError:
        pass
    return found


class SolveOptions(nn.Module):
    r"""Base of the models: keeps the options passed to :func:`torchnde.solve` and its cost.

    **Arguments** (all keyword, passed through to :func:`torchnde.solve`):

    - ``solver``: a name or solver object (default ``"tsit5"``).
    - ``rtol``, ``atol``: tolerances of the default PID controller (``1e-6``, ``1e-8``, as
      ``solve``); ``dt``: a fixed step instead.
    - ``gradient``: ``"backprop"`` (default), ``"checkpoint"``, ``"adjoint"``, ``"reversible"``
      or a strategy object. ``"adjoint"`` is given this module's parameters automatically.
    - any other option of ``solve`` (``controller``, ``per_sample``, ``max_steps``, ``throw``,
      ``progress``, ``compile``, ``event``, ``dense``); an unknown one is an error.

    After each call, ``self.stats`` holds the forward solve's :class:`Stats`, ``self.nfe`` its
    evaluation count (a tensor per sample in per-sample mode), and ``self.solution`` the whole
    :class:`Solution` (its ``backward_stats`` fill in when an adjoint backward runs). The kept
    solution's tensors are detached: the model does not keep the autograd graph of its last call
    alive once the caller drops the output (only ``solution.evaluate`` of a ``dense=True`` model
    still refers to it, until the next call).
    """

    def __init__(
        self,
        *,
        solver: Any = "tsit5",
        rtol: float | None = None,
        atol: float | None = None,
        dt: float | None = None,
        gradient: Any = "backprop",
        **solve_options: Any,
    ) -> None:
        super().__init__()
        unknown = sorted(set(solve_options) - set(_SOLVE_KEYS))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unknown option(s) {unknown}; valid solve options: "
                f"solver, rtol, atol, dt, gradient, {', '.join(_SOLVE_KEYS)}."
                f"{did_you_mean(unknown, ('solver', 'rtol', 'atol', 'dt', 'gradient', *_SOLVE_KEYS))}"
            )
        self.solver = solver
        self.rtol = rtol
        self.atol = atol
        self.dt = dt
        self.gradient = gradient
        self.solve_options = dict(solve_options)
        self.solution: Solution | None = None

    @property
    def stats(self) -> Stats:
        """The last forward solve's work counters."""
        if self.solution is None:
            raise RuntimeError(f"{type(self).__name__} has not been called yet: no stats to show")
        return self.solution.stats

    @property
    def nfe(self) -> Any:
        """Vector-field evaluations of the last forward solve."""
        return self.stats.nfe

    def _solve(self, f: Callable, y0: Any, t_eval: torch.Tensor, **override: Any) -> Solution:
        """Run :func:`torchnde.solve` with this model's options (``override`` wins; an
        ``Adjoint`` passed there is used as it is: ``params=None`` discovers what ``f`` uses)."""
        options: dict[str, Any] = dict(self.solve_options)
        options.update(solver=self.solver, gradient=self.gradient)
        if self.dt is not None:
            options["dt"] = self.dt
        elif "controller" not in options:
            options["rtol"], options["atol"] = self.rtol, self.atol
        options.update(override)
        strategy = options["gradient"]
        if strategy == "adjoint":
            strategy = Adjoint()
        if isinstance(strategy, Adjoint) and strategy.params is None and "gradient" not in override:
            trainable = tuple(p for p in self.parameters() if p.requires_grad)
            options["gradient"] = dataclasses.replace(strategy, params=trainable)
        solution = solve(f, y0, t_eval, **options)
        self.solution = _detached_copy(solution)
        return solution


def _detached(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(_detached(v) for v in value)
    return value


def _detached_copy(solution: Solution) -> Solution:
    """``solution`` with every tensor field detached (the other fields are the same objects:
    ``backward_stats`` is filled in by a later backward pass): what a model keeps of its last call
    without holding its graph."""
    fields = {f.name: _detached(getattr(solution, f.name)) for f in dataclasses.fields(solution)}
    return dataclasses.replace(solution, **fields)


def time_grid(t_eval: Any, like: torch.Tensor) -> torch.Tensor:
    """``t_eval`` as a 1-D float64 tensor on ``like``'s device."""
    if not isinstance(t_eval, torch.Tensor):
        return torch.tensor(t_eval, dtype=torch.float64, device=like.device)
    t = t_eval.to(like.device)
    if not t.is_floating_point():
        t = t.to(torch.float64)
    return t


def check_span(t_span: Any) -> tuple[float, float]:
    """``t_span`` as two distinct floats ``(t0, t1)``, or a ``ValueError`` naming the fix."""
    if len(t_span) != 2 or float(t_span[0]) == float(t_span[1]):
        raise ValueError(f"t_span must be two distinct times (t0, t1), got {t_span!r}")
    return float(t_span[0]), float(t_span[1])


def split_pair(
    y: Any, who: str, names: tuple[str, str] = ("q", "p")
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(a, b, was_tuple)`` from a tuple state ``(a, b)`` or a tensor ``cat([a, b], -1)``.

    ``names`` name the halves in error messages (``("q", "p")``, ``("q", "qdot")``).
    """
    first, second = names
    if isinstance(y, (tuple, list)):
        if len(y) != 2 or not all(isinstance(v, torch.Tensor) for v in y):
            raise TypeError(
                f"{who}: a tuple state must be ({first}, {second}), two tensors; got {len(y)} items"
            )
        a, b = y
        if a.shape[-1:] != b.shape[-1:]:
            raise ValueError(
                f"{who}: {first} and {second} must have the same last dimension, got {tuple(a.shape)} and "
                f"{tuple(b.shape)}"
            )
        return a, b, True
    if not isinstance(y, torch.Tensor):
        raise TypeError(
            f"{who}: the state must be a tensor cat([{first}, {second}], -1) or a tuple ({first}, {second})"
        )
    if y.ndim == 0 or y.shape[-1] % 2:
        raise ValueError(
            f"{who}: a tensor state is cat([{first}, {second}], -1) and needs an even last dimension, got shape "
            f"{tuple(y.shape)}; pass a tuple ({first}, {second}) instead if they differ in size"
        )
    a, b = y.chunk(2, dim=-1)
    return a, b, False
