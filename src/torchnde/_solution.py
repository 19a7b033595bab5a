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
    """Why a solve (or one sample of a per-sample solve) stopped.

    A global solve's ``sol.status`` is a member; a per-sample solve's is an int64 tensor
    ``[batch]`` of these values, read by name with ``sol.statuses`` (``Status(int(v))`` for one
    value). ``SUCCESS`` and ``EVENT`` are normal outcomes (``sol.success``); the others are
    failures, raised as a :class:`SolveError` with ``throw=True``.

    - ``SUCCESS``: reached the final time.
    - ``EVENT``: stopped at an event: a terminal :class:`~torchnde.Event`, or the
      ``max_events``-th firing of a non-terminal one (outputs after it are NaN).
    - ``MAX_STEPS``, ``DT_MIN``, ``NONFINITE``, ``NO_CONVERGENCE``: see :attr:`message`.

    ```python
    import torch, torchnde as nde
    sol = nde.solve(lambda t, y: y**2, torch.tensor([[0.1], [1.0]]), torch.tensor([0.0, 2.0]),
                    per_sample=True, throw=False)
    sol.status          # tensor([0, 2])
    sol.statuses        # [<Status.SUCCESS: 0>, <Status.DT_MIN: 2>]
    sol.status_names    # ['SUCCESS', 'DT_MIN']
    ```
    """

    SUCCESS = 0
    MAX_STEPS = 1
    DT_MIN = 2
    NONFINITE = 3
    NO_CONVERGENCE = 4
    EVENT = 5

    @property
    def message(self) -> str:
        """What the status means, in words."""
        return _MESSAGES[self]

    @property
    def ok(self) -> bool:
        """A normal outcome: ``SUCCESS`` or ``EVENT``."""
        return self in (Status.SUCCESS, Status.EVENT)

    def __str__(self) -> str:
        return f"Status.{self.name}"


_MESSAGES = {
    Status.SUCCESS: "success",
    Status.MAX_STEPS: "the maximum number of steps was reached",
    Status.DT_MIN: "the step size fell below the minimum",
    Status.NONFINITE: "the state or its error estimate became non-finite (NaN or inf)",
    Status.NO_CONVERGENCE: "the implicit stage equations did not converge (Newton iterations)",
    Status.EVENT: "stopped at an event (a terminal event, or Event(max_events=N) reached)",
}


@dataclass
class Stats:
    """Work counters. Plain ints for a global solve; ``[batch]`` int64 tensors per sample.

    - ``nfe``: vector-field evaluations (per sample: evaluations while the sample was running).
    - ``steps``: steps attempted; ``accepted`` + ``rejected`` == ``steps``.
    - ``forced``: accepted steps taken at the minimum step size with an error estimate above
      tolerance (``PIDController(dtmin=..., on_dtmin="accept")``, and the torchsde drop-in's
      ``dt_min``); they are among ``accepted``. 0 for every other solve.
    """

    nfe: Any = 0
    steps: Any = 0
    accepted: Any = 0
    rejected: Any = 0
    forced: Any = 0

    def as_dict(self) -> dict[str, Any]:
        return {"nfe": self.nfe, "steps": self.steps, "accepted": self.accepted, "rejected": self.rejected,
                "forced": self.forced}  # fmt: skip


@dataclass
class Solution:
    r"""The result of :func:`torchnde.solve`.

    - ``ts``: output times, ``[n]`` (or ``[batch, n]`` for per-sample time spans).
    - ``ys``: states at ``ts``, time first: ``[n, *y0.shape]``; a tuple for tuple states. After a
      failure with ``throw=False``, entries after the failure time are NaN.
    - ``stats``: :class:`Stats`.
    - ``status``: :class:`Status` for a global solve, an int tensor ``[batch]`` per sample (values
      of :class:`Status`); ``statuses``/``status_names`` read it by name.
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
    - ``kl``: with ``SDETerm(..., prior_drift=h)``, the KL path term
      :math:`\int_{t_0}^{t} \tfrac12 \lVert (f - h)/g \rVert^2\,ds` at ``ts``, one value per
      row of the state: ``[n, *y0.shape[:-1]]`` (differentiable); ``None`` otherwise.
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
    kl: torch.Tensor | None = None

    @property
    def success(self) -> bool:
        """True if every sample finished normally: at the final time, or at an event (``EVENT``)."""
        if isinstance(self.status, torch.Tensor):
            return bool(((self.status == Status.SUCCESS) | (self.status == Status.EVENT)).all())
        return Status(self.status).ok

    @property
    def statuses(self) -> list[Status]:
        """The status of each sample as a :class:`Status` (a global solve: a list of one)."""
        if isinstance(self.status, torch.Tensor):
            return [Status(v) for v in self.status.reshape(-1).tolist()]
        return [Status(self.status)]

    @property
    def status_names(self) -> list[str]:
        """The names of :attr:`statuses`, e.g. ``['SUCCESS', 'DT_MIN']``."""
        return [s.name for s in self.statuses]

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
