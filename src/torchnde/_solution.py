"""What a solve returns: the solution, its statistics and status, and the error family."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "ConvergenceFailure",
    "MaxStepsReached",
    "NonFiniteState",
    "Solution",
    "SolveError",
    "Stats",
    "Status",
    "StepSizeTooSmall",
]


class Status(enum.IntEnum):
    """Why a solve (or one sample of a per-sample solve) stopped."""

    SUCCESS = 0
    MAX_STEPS = 1
    DT_MIN = 2
    NONFINITE = 3
    NO_CONVERGENCE = 4

    @property
    def message(self) -> str:
        return _MESSAGES[self]

    def __str__(self) -> str:
        return f"Status.{self.name}"


_MESSAGES = {
    Status.SUCCESS: "success",
    Status.MAX_STEPS: "the maximum number of steps was reached",
    Status.DT_MIN: "the step size fell below the minimum",
    Status.NONFINITE: "the state or its error estimate became non-finite (NaN or inf)",
    Status.NO_CONVERGENCE: "the implicit stage equations did not converge (Newton iterations)",
}


@dataclass
class Stats:
    """Work counters. Plain ints for a global solve; ``[batch]`` int64 tensors per sample.

    - ``nfe``: vector-field evaluations (per sample: evaluations while the sample was running).
    - ``steps``: steps attempted; ``accepted`` + ``rejected`` == ``steps``.
    """

    nfe: Any = 0
    steps: Any = 0
    accepted: Any = 0
    rejected: Any = 0

    def as_dict(self) -> dict[str, Any]:
        return {"nfe": self.nfe, "steps": self.steps, "accepted": self.accepted, "rejected": self.rejected}


@dataclass
class Solution:
    """The result of :func:`torchnde.solve`.

    - ``ts``: output times, ``[n]`` (or ``[batch, n]`` for per-sample time spans).
    - ``ys``: states at ``ts``, time first: ``[n, *y0.shape]``; a tuple for tuple states. After a
      failure with ``throw=False``, entries after the failure time are NaN.
    - ``stats``: :class:`Stats`.
    - ``status``: :class:`Status` for a global solve, an int tensor ``[batch]`` per sample (values
      of :class:`Status`).
    - ``step_ts``/``step_ys``: every accepted step when ``save_steps=True`` (per sample: padded
      with NaN where a sample did not advance in that iteration).
    - ``evaluate(t)``: the continuous extension over the whole interval when ``dense=True``.
    - ``backward_stats``: for gradient strategies that solve during the backward pass
      (``Adjoint``: the adjoint solves, summed; ``Reversible``: the reconstruction), a
      :class:`Stats` filled in when ``backward`` runs; ``None`` otherwise.
    - ``event_ts``/``event_ys``: with ``solve(..., event=...)``, the times ``[k]`` and states
      (``[k, *y0.shape]``) of the events that fired, differentiable; ``None`` otherwise.
    - ``advice``: a note on a successful solve that was costlier than it needed to be (a long
      explicit solve whose steps were limited by stability: "looks stiff, try 'kvaerno5'"), or
      ``None``.
    """

    ts: torch.Tensor
    ys: Any
    stats: Stats
    status: Any
    step_ts: torch.Tensor | None = None
    step_ys: Any = None
    _evaluate: Callable[[Any], Any] | None = field(default=None, repr=False)
    backward_stats: Stats | None = None
    event_ts: torch.Tensor | None = None
    event_ys: Any = None
    advice: str | None = None

    @property
    def success(self) -> bool:
        """True if every sample finished successfully."""
        if isinstance(self.status, torch.Tensor):
            return bool((self.status == Status.SUCCESS).all())
        return self.status == Status.SUCCESS

    def evaluate(self, t: Any) -> Any:
        """The dense solution at time(s) ``t`` (needs ``dense=True``).

        ``t`` is a float or a tensor of times ``[m]``; the result is ``[*t.shape, *y0.shape]``.
        In per-sample mode ``t`` may also be ``[batch]`` or ``[batch, m]`` (one row per sample).
        """
        if self._evaluate is None:
            raise ValueError("this solution has no dense output: call solve(..., dense=True)")
        return self._evaluate(t)


class SolveError(RuntimeError):
    """A solve stopped before the final time. ``solution`` holds the partial result."""

    status: Status = Status.SUCCESS

    def __init__(self, message: str, solution: Solution | None = None):
        super().__init__(message)
        self.solution = solution


class MaxStepsReached(SolveError):
    """``max_steps`` steps were taken before reaching the final time."""

    status = Status.MAX_STEPS


class StepSizeTooSmall(SolveError):
    """The step size fell below ``dtmin`` (or below what the time's precision can represent)."""

    status = Status.DT_MIN


class NonFiniteState(SolveError):
    """The state or the error estimate became NaN or infinite."""

    status = Status.NONFINITE


class ConvergenceFailure(SolveError):
    """An implicit solver's Newton iterations failed with constant steps (an adaptive
    controller instead rejects the step and shrinks it)."""

    status = Status.NO_CONVERGENCE


ERRORS: dict[Status, type[SolveError]] = {
    Status.MAX_STEPS: MaxStepsReached,
    Status.DT_MIN: StepSizeTooSmall,
    Status.NONFINITE: NonFiniteState,
    Status.NO_CONVERGENCE: ConvergenceFailure,
}
