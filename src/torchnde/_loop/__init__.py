"""The solve loop, one responsibility a module (see ``docs/architecture.md``):

- :mod:`.problem`: inputs, times, flattening, the vector field in the loop's layout, outputs;
- :mod:`.global_` and :mod:`.per_sample`: the two layouts (host floats vs per-sample tensors),
  and :mod:`.reversible`, the fixed grid of reversible solvers;
- :mod:`.stepping`: what the layouts share around a step (stops, compile cache, checkpointing);
- :mod:`.error_norm`, :mod:`.saving` (outputs, dense output), :mod:`.watch` (events),
  :mod:`.compaction` (per-sample), :mod:`.diagnostics` (hints, error messages);
- :mod:`.raw`: the loop's options and raw result.

:func:`integrate` runs the layout a problem needs; :func:`solve_plain` is an ordinary solve
without a gradient strategy, for the gradient strategies' own solves (the adjoint's backward
intervals). Nothing here imports :mod:`torchnde.gradients` or ``solve``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._solution import Solution
from ..controllers import AbstractController
from ..solvers import AbstractSolver
from .diagnostics import error
from .fused import fusable, loop_fused
from .global_ import loop_global
from .per_sample import loop_per_sample
from .problem import Problem
from .raw import LoopOptions, Raw
from .reversible import loop_reversible

__all__ = ["LoopOptions", "Problem", "Raw", "integrate", "solve_plain"]


def integrate(problem: Problem, solver: AbstractSolver, ctrl: AbstractController, opts: LoopOptions) -> Raw:
    """Run the loop layout ``problem`` needs and return its raw result."""
    if not ctrl.land_on_end and (solver.reversible or problem.per_sample or opts.event is not None):
        raise ValueError(
            f"{type(ctrl).__name__}(land_on_end=False) steps past the final time, which only the global "
            "layout without events does: use per_sample=False, no event, a non-reversible solver, "
            "or land_on_end=True"
        )
    if solver.reversible:
        return loop_reversible(problem, solver, ctrl, opts)
    if problem.per_sample:
        return loop_per_sample(problem, solver, ctrl, opts)
    if opts.compile and fusable(problem, solver, ctrl, opts):
        return loop_fused(problem, solver, ctrl, opts)
    return loop_global(problem, solver, ctrl, opts)


def solve_plain(
    f: Callable[[Any, Any], Any], y0: Any, t_eval: Any, *, solver: AbstractSolver,
    controller: AbstractController, max_steps: int,
) -> tuple[Solution, Raw]:  # fmt: skip
    """Solve without a gradient strategy (plain backprop through whatever grad mode is on) in
    the global layout, raising :class:`~torchnde.SolveError` on failure."""
    problem = Problem.build(f, y0, t_eval, per_sample=False)
    raw = integrate(problem, solver, controller, LoopOptions(max_steps))
    sol = problem.solution(raw)
    if not sol.success:
        raise error(sol, raw, solver)
    return sol, raw
