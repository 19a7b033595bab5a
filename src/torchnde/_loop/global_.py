"""The global layout (default): the whole state is one problem, flattened to ``[N]`` for a tuple
state, with time and the step size on the host as Python floats. The loop synchronises with the
device once per step, to read the error norm (``float(err_norm)``); a fixed-step solve never
synchronises inside the loop.

The loop below is the hot path of every solve: it keeps its state in locals and hands the rare
work (outputs inside a step, events, the result) to the helpers after it.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .._solution import Stats, Status
from ..controllers import AbstractController
from ..solvers import AbstractSolver
from .diagnostics import stiffness_ratio
from .error_norm import ErrorNorm
from .problem import Problem
from .raw import LoopOptions, Raw
from .saving import global_dense, interpolate_host
from .stepping import STRETCH, Progress, prepared, stops
from .watch import EventWatch

__all__ = ["finish", "loop_global"]


def loop_global(problem: Problem, solver: AbstractSolver, ctrl: AbstractController, opts: LoopOptions) -> Raw:
    func = problem.func()
    step, dense_stages, derivative = prepared(problem, solver, opts, func)
    s_out = problem.s_host
    n_out = len(s_out)
    s0, s1 = s_out[0], s_out[-1]
    grid, jumps = stops(ctrl, problem.direction, s0, s1, problem.dtype)
    grid.append(s1 if ctrl.land_on_end else math.inf)  # or step past t1 and interpolate back
    y = problem.y0
    # the event's condition first: a condition of the wrong shape fails before f is called
    watch = EventWatch(problem, func, opts.event, s0, y) if opts.event is not None else None
    f0: torch.Tensor | None = problem.checked_f0()
    if s0 in jumps:  # starting on a jump: f from its far side
        f0 = derivative(jumps[s0][1], y)
    adaptive = ctrl.adaptive
    error_norm = ErrorNorm(problem, solver, ctrl) if adaptive else None
    dt, memory = ctrl.start(solver, func, s0, y, f0, error_norm)
    solver_state = solver.init_state(ctrl)  # e.g. an implicit method's Jacobian, passed step to step
    adapt, too_small = ctrl.adapt, ctrl.too_small
    max_steps, dense, save_steps, progress = opts.max_steps, opts.dense, opts.save_steps, opts.progress
    needs_f1, f1_exact = solver.needs_end_derivative, solver.f1_exact
    tape = opts.tape
    outputs: list[torch.Tensor] = [y.unsqueeze(0)]  # chunks of [m, *state], concatenated at the end
    kept: tuple[list, list, list] = ([], [], [])  # saved steps' times and states, dense pieces
    next_out, steps, accepted, stop_idx = 1, 0, 0, 0
    status, s, fail_dt, unclipped, dt_next = Status.SUCCESS, s0, None, dt, dt
    bar = Progress(s0, s1, progress)
    while s < s1:
        if steps >= max_steps:
            status, fail_dt = Status.MAX_STEPS, dt  # the step it would take next
            break
        while grid[stop_idx] <= s:
            stop_idx += 1
        s_stop = grid[stop_idx]
        land = s + dt * STRETCH >= s_stop
        h = unclipped = dt
        if land:  # just short of a jump (in the state's dtype): no stage sees its far side
            h = (_before(jumps[s_stop][0], s, s_stop) if s_stop in jumps else s_stop) - s
        if f0 is None:
            f0 = derivative(jumps[s][1] if s in jumps else s, y)
        res = step(func, s, y, f0, h, adaptive, solver_state)
        state_in, solver_state = solver_state, res.state
        steps += 1
        if res.converged is not True and not bool(res.converged):  # an implicit solve failed
            if not adaptive:
                status, fail_dt = Status.NO_CONVERGENCE, h
                break
            accept, dt_next = adapt(math.inf, h, memory, False)
        elif adaptive:
            err = error_norm(y, res.y1, res.errors, h)  # type: ignore[misc]  # the step's one sync
            if not math.isfinite(err):
                status, fail_dt = Status.NONFINITE, h
                break
            accept, dt_next = adapt(err, h, memory)
        else:
            accept = True
        if accept:
            accepted += 1
            s_new = s_stop if land else s + h
            f1, y1 = res.f1, res.y1
            if tape is not None:  # Checkpoint(checkpoints=k): the step's input, for its replay
                tape.record(
                    s, h, y, f0, s_new, jumps[s_stop][1] if land and s_stop in jumps else None, state_in
                )
            crossed = False
            if watch is not None:  # an event's condition at the step's end (one more host read)
                g_new = watch.value(s_new, y1)
                crossed = watch.event.crossed(watch.g_prev, g_new)
            s_end, y_end, stages = s_new, y1, None
            if crossed or dense or (next_out < n_out and s_out[next_out] < s_new):
                if needs_f1 and (f1 is None or not f1_exact):
                    f1 = derivative(s_new, y1)
                stages = dense_stages(func, s, y, h, res, f1)
                if dense:
                    kept[2].append((s, h, y, stages))
                if crossed:
                    s_end, y_end = watch.locate(solver, s, h, y, stages, g_new, y1)  # type: ignore[union-attr]
            if next_out < n_out and s_out[next_out] <= s_end:
                next_out = _emit(outputs, s_out, next_out, solver, (s, h, y, stages), s_end, y_end)
            if save_steps:
                kept[0].append(s_end)
                kept[1].append(y_end)
            if crossed:
                s, y = s_end, watch.fire(s_end, y_end)  # type: ignore[union-attr]
                if watch.done:  # type: ignore[union-attr]  # terminal, or max_events reached
                    status = Status.EVENT
                    break
                f0 = None  # the state jumped: no first-same-as-last
                bar.update(s, steps)
                continue
            if watch is not None:
                watch.g_prev = g_new
            s, y = s_new, y1
            f0 = None if land and s_stop in jumps else f1  # f1: FSAL, or computed for outputs
            if progress:
                bar.update(s, steps)
        if adaptive:
            dt = dt_next
        if adaptive and s < s1 and too_small(s, dt):
            status, fail_dt = Status.DT_MIN, dt
            break
    bar.update(s, steps, force=True)
    end = (s, y, dt, unclipped, fail_dt)
    counts = (steps, accepted, getattr(memory, "forced", 0))
    return finish(problem, solver, ctrl, opts, func, outputs, next_out, status, counts, end, kept, watch)


def _before(end: float, s: float, s_stop: float) -> float:
    """The end of a step landing on the jump ``s_stop``: ``end``, its neighbour in the state's
    dtype, unless the step starts past that (then the float64 neighbour)."""
    return end if end > s else math.nextafter(s_stop, -math.inf)


def _emit(outputs: list[torch.Tensor], s_out: list[float], next_out: int, solver: AbstractSolver,
          piece: tuple[float, float, torch.Tensor, Any], s_end: float, y_end: torch.Tensor) -> int:  # fmt: skip
    """Append the outputs up to ``s_end`` (interpolated inside the step ``piece = (s, h, y,
    stages)``, the step's end state on it); return the index of the next output."""
    s, h, y, stages = piece
    n_out = len(s_out)
    while next_out < n_out and s_out[next_out] <= s_end:
        hi = next_out
        while hi < n_out and s_out[hi] < s_end:
            hi += 1
        if hi > next_out:  # strictly inside the step: interpolate
            outputs.append(interpolate_host(solver, s, h, y, stages, s_out[next_out:hi]))
            next_out = hi
        if next_out < n_out and s_out[next_out] == s_end:
            outputs.append(y_end.unsqueeze(0))
            next_out += 1
    return next_out


def finish(problem: Problem, solver: AbstractSolver, ctrl: AbstractController, opts: LoopOptions, func: Any,
            outputs: list[torch.Tensor], next_out: int, status: Status, counts: tuple[int, int, int],
            end: tuple, kept: tuple[list, list, list], watch: EventWatch | None) -> Raw:  # fmt: skip
    """The loop's raw result: outputs (NaN after a failure), statistics, and what was kept."""
    s, y, dt, unclipped, fail_dt = end
    steps, accepted, forced = counts
    s_out = problem.s_host
    s0, s1 = s_out[0], s_out[-1]
    if status == Status.SUCCESS and not ctrl.adaptive and not bool(torch.isfinite(y).all()):
        status, fail_dt = Status.NONFINITE, dt
    if next_out < len(s_out):  # after a failure: NaN from there on
        outputs.append(problem.y0.new_full((len(s_out) - next_out, *problem.y0.shape), math.nan))
    ys = torch.cat(outputs)
    stats = Stats(problem.nfe_counter[0], steps, accepted, steps - accepted, forced)
    raw = Raw(ys, stats, status, s * problem.direction, fail_dt)
    if ctrl.adaptive and steps:  # a step size to continue with; a final step shortened to land on
        raw.next_dt = max(dt, unclipped) if s == s1 else dt  # t1 says little about the scale
    if status in (Status.MAX_STEPS, Status.DT_MIN):
        mean_dt = (s - s0) / max(accepted, 1)
        raw.stiff_check = lambda: bool(stiffness_ratio(func, s, y, False) * mean_dt > 1.0)
    step_s, step_y, dense_pieces = kept
    if opts.save_steps:
        raw.step_s = torch.tensor(step_s, dtype=torch.float64, device=problem.device)
        raw.step_y = torch.stack(step_y) if step_y else problem.y0.new_empty((0, *problem.y0.shape))
    if opts.dense:
        raw.dense = global_dense(solver, dense_pieces, s0, s)
    if watch is not None:
        raw.events = (watch.times, watch.states)
    return raw
