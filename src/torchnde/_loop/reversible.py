r"""The loop of reversible solvers (global and per-sample states alike): fixed steps on one grid
that lands on every output time, so that a backward pass can undo every step exactly.

A CDE term is handed to the solver as its vector field and the increments of its control
(:class:`BoundControl`, ``func.control``), not lowered to :math:`f\,dX/dt`: a method that carries
an evaluation from one step into the next (reversible Heun carries :math:`f(t_n, z_n)`) then
multiplies it by the increment of the piece it steps over, not by the slope at a knot.

Any other vector field that jumps (the controller's ``jump_ts``) is handled as the global loop
handles it: a step landing on a jump ends just short of it, and the derivative the solver
carries is evaluated again on the jump's far side (``solver.restart``: one evaluation per jump).
The state ``z`` is unchanged by that, so the backward pass undoes it exactly: it evaluates the
near side again at the step's end before undoing the step (:class:`Plan`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from .._solution import Stats, Status
from .raw import Raw
from .stepping import STRETCH, checkpointed, jump_sides

__all__ = ["BoundControl", "Plan", "bind_control", "grid_func", "loop_reversible", "plan_steps", "step_grid"]


def step_grid(s_out: list[float], dt: float, extra: list[float]) -> list[float]:
    """Step boundaries from ``s_out[0]`` to ``s_out[-1]``: steps of ``dt``, each shortened to
    land on the next output time or grid time (``extra``), as ``ConstantStep`` does."""
    stops = sorted({*s_out[1:], *(x for x in extra if s_out[0] < x < s_out[-1])})
    grid = [s_out[0]]
    s = s_out[0]
    for stop in stops:
        while s < stop:
            s = stop if s + dt * STRETCH >= stop else s + dt
            grid.append(s)
    return grid


class Plan(NamedTuple):
    """The reversible loop's steps over ``grid`` (the times landed on): step ``k`` starts at
    ``starts[k]`` (``grid[k]``, or the far side of a jump there) with size ``sizes[k]`` (to
    ``grid[k + 1]``, or just short of a jump there), and ``restarts[k]`` is where the carried
    derivative is evaluated again after it (the far side of an interior jump it lands on), else
    ``None``. The forward loop and the backward pass step by the same floats."""

    grid: list[float]
    starts: list[float]
    sizes: list[float]
    restarts: list[float | None]


def plan_steps(grid: list[float], jumps: dict[float, tuple[float, float]]) -> Plan:
    """The :class:`Plan` of ``grid`` with ``jumps`` (forward time -> ``jump_sides``)."""
    starts, sizes, restarts = [], [], []
    last = grid[-1]
    for s, s_next in itertools.pairwise(grid):
        start = jumps[s][1] if s in jumps else s
        end = jumps[s_next][0] if s_next in jumps else s_next
        if end <= start:  # a step shorter than the jump's sides (never in practice): as it was
            start, end = s, s_next
        starts.append(start)
        sizes.append(end - start)
        restarts.append(jumps[s_next][1] if s_next in jumps and s_next != last else None)
    return Plan(grid, starts, sizes, restarts)


def loop_reversible(problem: Any, solver: Any, ctrl: Any, opts: Any) -> Any:
    """Step a reversible solver over its grid (global layout), saving at the output times.

    Returns the loop's raw result with ``reversible`` set to ``(plan, final y, final solver
    state)`` (:class:`Plan`).
    """
    if ctrl.adaptive:
        raise ValueError(f"solver {solver.name!r} takes fixed steps: pass dt=... (ConstantStep)")
    if opts.dense or opts.save_steps:
        raise ValueError(f"solver {solver.name!r} supports neither dense= nor save_steps=")
    if problem.s_host is None:
        raise ValueError(
            f"solver {solver.name!r} steps every sample on one grid: per-sample time spans "
            "(t_eval of shape [batch, n]) need an adaptive solver such as 'tsit5'"
        )
    s_out = problem.s_host
    extra = []
    for times in (ctrl.step_ts, ctrl.jump_ts):
        if times is not None:
            extra += [x * problem.direction for x in times.tolist()]
    grid = step_grid(s_out, ctrl.dt, extra)
    if len(grid) - 1 > opts.max_steps:
        raise ValueError(
            f"reversible solve needs {len(grid) - 1} steps but max_steps={opts.max_steps}: "
            "raise max_steps or dt"
        )
    jumps = {}
    if ctrl.jump_ts is not None and problem.control is None:  # a CDE's jumps: its increments' work
        times = [x * problem.direction for x in ctrl.jump_ts.tolist()]
        jumps = {t: jump_sides(t, problem.dtype) for t in times if grid[0] <= t <= grid[-1]}
    plan = plan_steps(grid, jumps)
    func = grid_func(problem, problem.func())
    step = checkpointed(solver.step, opts.checkpoint)  # gradient="checkpoint": recompute each step
    y = problem.y0
    f0 = None if problem.control is not None else func(plan.starts[0], y)  # a control: the solver starts it
    state = solver.init_state(ctrl)
    outputs = [y]
    wanted = set(s_out[1:])
    for k, s_next in enumerate(grid[1:]):
        res = step(func, plan.starts[k], y, f0, plan.sizes[k], False, state)
        y, f0, state = res.y1, res.f1, res.state  # f1: the next step's f0 where the method reads one
        if plan.restarts[k] is not None:  # landed on a jump: the carried derivative from its far side
            state = solver.restart(func, plan.restarts[k], state)
        if s_next in wanted:
            outputs.append(y)
    steps = len(grid) - 1
    if problem.per_sample:  # every sample took the same steps; results in the per-sample layout
        batch = problem.batch
        ys = torch.stack(outputs, 1).reshape(batch, len(outputs), -1)
        finite = torch.isfinite(ys.reshape(batch, -1)).all(1)
        status: Any = torch.where(finite, int(Status.SUCCESS), int(Status.NONFINITE))
        counts = [
            torch.full((batch,), c, dtype=torch.int64) for c in (problem.nfe_counter[0], steps, steps, 0)
        ]
        stats = Stats(*counts)
        end: Any = torch.full((batch,), grid[-1] * problem.direction, dtype=torch.float64)
    else:
        ys = torch.stack(outputs)
        status = Status.SUCCESS if bool(torch.isfinite(y).all()) else Status.NONFINITE
        stats, end = Stats(problem.nfe_counter[0], steps, steps, 0), grid[-1] * problem.direction
    last_dt = abs(grid[-1] - grid[-2]) if steps else 0.0  # the step size (at the end, where it is judged)
    fail_dt = torch.full((problem.batch,), last_dt, dtype=torch.float64) if problem.per_sample else last_dt
    raw = Raw(ys, stats, status, end, fail_dt)
    raw.reversible = (plan, y, state)
    return raw


def grid_func(problem: Any, func: Callable) -> Callable:
    """``func`` called with a host time: per sample, every sample at that time (SDE problems are
    global, and ``func`` carries their ``sde``); a CDE's ``control`` attached as ``func.control``."""
    out = func
    if problem.per_sample:
        batch, device = problem.batch, problem.device

        def out(s: float, y: torch.Tensor) -> torch.Tensor:
            return func(torch.full((batch,), s, dtype=torch.float64, device=device), y)

    if problem.control is not None:
        out.control = problem.control  # type: ignore[attr-defined]
    return out


class BoundControl:
    r"""A CDE term's vector field and control increments (:meth:`CDETerm.lower_controlled`) in
    the reversible loop's layout: forward host times ``s`` (user time ``t = s * direction``),
    evaluations of the field counted. A solver stepping from ``s0`` to ``s1`` computes
    :math:`f(t, z)\,\Delta X` as ``product(field(s, z), increment(s0, s1))``; a backward solve
    (``direction = -1``) needs no sign, since :math:`\Delta X = X(t_1) - X(t_0)` carries it."""

    __slots__ = ("_field", "_increment", "counter", "direction", "product", "time")

    def __init__(self, parts: tuple[Callable, Callable, Callable], time: Callable, direction: float,
                 counter: list[int]):  # fmt: skip
        self._field, self._increment, self.product = parts
        self.time, self.direction, self.counter = time, direction, counter

    def field(self, s: float, y: torch.Tensor) -> torch.Tensor:
        """:math:`f(t, y)`, ``[*y.shape, channels]``."""
        self.counter[0] += 1
        return self._field(self.time(s), y)

    def increment(self, s0: float, s1: float) -> torch.Tensor:
        """:math:`X(t(s_1)) - X(t(s_0))`, ``[*path.batch_shape, channels]``."""
        return self._increment(s0 * self.direction, s1 * self.direction)

    def counted(self, counter: list[int]) -> BoundControl:
        """The same control, counting its evaluations in ``counter`` (a backward pass's)."""
        parts = (self._field, self._increment, self.product)
        return BoundControl(parts, self.time, self.direction, counter)


def bind_control(term: Any, problem: Any) -> BoundControl:
    """The CDE ``term``'s control for the reversible loop of ``problem`` (global or per sample:
    every sample on one grid, so one host time)."""
    user_time = problem.user_time
    if problem.per_sample:
        batch, device = problem.batch, problem.device

        def time(s: float) -> torch.Tensor:
            return user_time(torch.full((batch,), s, dtype=torch.float64, device=device))

    else:
        time = user_time
    return BoundControl(term.lower_controlled(), time, problem.direction, problem.nfe_counter)
