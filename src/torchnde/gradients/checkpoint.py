"""``Checkpoint(checkpoints=k)``: backprop through a global solve holding at most ``k`` step
inputs after the forward pass, whatever the number of steps, by recomputation in the backward
pass (the schedule is :mod:`.schedule`'s; the replay of a step is :mod:`torchnde._loop.replay`'s).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .._loop import LoopOptions, Problem, Raw, integrate
from .._loop.diagnostics import error
from .._loop.replay import StepLog
from .._solution import Stats, Status
from ..controllers import AbstractController
from ..solvers import AbstractSolver
from .schedule import CheckpointedSolve, CheckpointTape

__all__ = ["check_budgeted", "run_budgeted"]


def check_budgeted(problem: Problem, solver: AbstractSolver, opts: LoopOptions) -> None:
    """Reject what the budgeted schedule does not support, before solving."""
    unsupported = [
        (problem.per_sample, "per_sample=True"),
        (problem.s_host is None, "per-sample time spans"),
        (opts.event is not None, "events"),
        (opts.dense, "dense=True"),
        (opts.save_steps, "save_steps=True"),
        (opts.compile, "compile=True"),
    ]
    for bad, what in unsupported:
        if bad:
            raise ValueError(
                f"Checkpoint(checkpoints=...) does not support {what} yet: use Checkpoint() (one "
                "checkpoint per step), or a global solve without it"
            )


class _NfeOf:
    """``stats.nfe`` as the one-element counter (``counter[0] += 1``) an SDE's diffusion counts
    its evaluations in, so that they join the drift's in the backward statistics."""

    def __init__(self, stats: Stats):
        self.stats = stats

    def __getitem__(self, index: int) -> int:
        return self.stats.nfe

    def __setitem__(self, index: int, value: int) -> None:
        self.stats.nfe = value


class _Context:
    """The loop as :class:`~.schedule.CheckpointedSolve` drives it (see its contract)."""

    def __init__(self, problem: Problem, solver: AbstractSolver, ctrl: AbstractController, opts: LoopOptions):
        self.problem, self.solver, self.ctrl, self.opts = problem, solver, ctrl, opts
        self.stats = Stats()
        self.raw: Raw | None = None
        self.log: StepLog | None = None
        base = problem.func(count=False)
        stats = self.stats

        def counted(s: Any, y: torch.Tensor) -> torch.Tensor:
            stats.nfe += 1
            return base(s, y)

        if problem.sde is not None:  # the stochastic solvers read the diffusion and noise here
            counted.sde = problem.sde.counted(_NfeOf(stats))  # type: ignore[attr-defined]
        self.func = counted

    def initial_carry(self, y0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return y0, self.func(self.problem.s_host[0], y0)  # type: ignore[index]

    def run_forward(self, carry0: tuple[torch.Tensor, ...], tape: CheckpointTape) -> torch.Tensor:
        problem = dataclasses.replace(self.problem, y0=carry0[0])
        log = StepLog(tape, problem, self.solver, self.ctrl.adaptive, self.func)
        raw = integrate(problem, self.solver, self.ctrl, dataclasses.replace(self.opts, tape=log))
        tape.finish(len(log.steps))
        if not Status(raw.status).ok:  # the schedule needs every output produced by a step
            raise error(problem.solution(raw), raw, self.solver)
        self.raw, self.log = raw, log
        self.stats.nfe = 0  # the forward pass's initial evaluation is not backward work
        return raw.ys

    def transition(self, k: int, carry: tuple[torch.Tensor, ...]) -> Any:
        assert self.log is not None
        return self.log.replay(k, carry)

    def outputs_of(self, k: int) -> list[int]:
        assert self.log is not None
        return self.log.outputs_of(k)

    @property
    def recomputed_steps(self) -> int:
        return self.stats.steps

    @recomputed_steps.setter
    def recomputed_steps(self, replayed: int) -> None:
        """Set by the backward pass: the steps it replayed (recomputed or differentiated)."""
        self.stats.steps += replayed
        self.stats.accepted += replayed


def run_budgeted(problem: Problem, solver: AbstractSolver, ctrl: AbstractController, opts: LoopOptions,
                 params: tuple[torch.Tensor, ...], budget: int) -> tuple[Raw, Stats]:  # fmt: skip
    """Run the loop without a graph keeping at most ``budget`` step inputs; the outputs'
    backward pass recomputes and differentiates the steps (counted in the returned stats)."""
    context = _Context(problem, solver, ctrl, opts)
    ys = CheckpointedSolve.apply(context, budget, problem.y0, *params)
    raw, context.raw = context.raw, None  # the backward pass holds the context: no cycle via ys
    assert raw is not None
    raw.ys = ys
    return raw, context.stats
