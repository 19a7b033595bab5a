"""Replaying the accepted steps of a global solve without the step-size controller, for
checkpointing with a memory budget (``Checkpoint(checkpoints=k)``).

The forward loop logs, per accepted step, its time, size and end (a few host floats) in a
:class:`StepLog`, and hands the step's input ``(y, f0)`` to a checkpoint tape; :meth:`StepLog.replay`
then recomputes accepted step ``k`` from any ``(y_k, f0_k)`` exactly as the loop computed it:
the same step, the same outputs inside it, and the same next ``f0`` (first-same-as-last, or a
fresh evaluation, just after a jump where one is listed).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

import torch

from ..solvers import AbstractSolver
from .problem import Problem
from .saving import interpolate_host

__all__ = ["StepLog"]


class StepLog:
    """The accepted steps of one global solve: ``(s, h, s_end, where f is evaluated after the
    jump it lands on (None if none), solver state)``."""

    def __init__(self, tape: Any, problem: Problem, solver: AbstractSolver, adaptive: bool, func: Callable):
        self.tape, self.problem, self.solver, self.adaptive = tape, problem, solver, adaptive
        self.steps: list[tuple[float, float, float, float | None, Any]] = []
        self.func = func  # the vector field in the loop's layout, as the replay calls it

    def record(self, s: float, h: float, y: torch.Tensor, f0: torch.Tensor, s_new: float, jumped: float | None,
               state: Any) -> None:  # fmt: skip
        """Called by the loop for every accepted step, with the step's input carry and the
        solver's state it started from (kept for the replay: an explicit, unmutated value)."""
        self.tape.record((y, f0))
        self.steps.append((s, h, s_new, jumped, state))

    def outputs_of(self, k: int) -> list[int]:
        """The output rows step ``k`` produced: those in ``(s_k, s_end]`` (and row 0, the
        initial state, for the first step)."""
        s_out = self.problem.s_host
        s, _, s_new, _, _ = self.steps[k]
        lo = 0 if k == 0 else bisect.bisect_right(s_out, s)
        return list(range(lo, bisect.bisect_right(s_out, s_new)))

    def replay(self, k: int, carry: tuple[torch.Tensor, ...]) -> tuple[tuple[torch.Tensor, ...], tuple]:
        """``((y_{k+1}, f0_{k+1}), the output rows of step k)`` from ``carry = (y_k, f0_k)``."""
        y, f0 = carry
        s, h, s_new, jumped, state = self.steps[k]
        solver, func = self.solver, self.func
        res = solver.step(func, s, y, f0, h, self.adaptive, state)
        s_out = self.problem.s_host
        rows = self.outputs_of(k)
        inside = [s_out[i] for i in rows if s < s_out[i] < s_new]
        outs: list[torch.Tensor] = [y] if k == 0 else []  # row 0: the initial state
        f1 = res.f1
        if inside:
            if solver.needs_end_derivative and (f1 is None or not solver.f1_exact):
                f1 = func(s_new, res.y1)
            stages = solver.dense_stages(func, s, y, h, res, f1)
            outs.extend(interpolate_host(solver, s, h, y, stages, inside).unbind(0))
        if rows and s_out[rows[-1]] == s_new:
            outs.append(res.y1)
        f0_next = None if jumped is not None else f1
        if f0_next is None:
            f0_next = func(s_new if jumped is None else jumped, res.y1)
        return (res.y1, f0_next), tuple(outs)
