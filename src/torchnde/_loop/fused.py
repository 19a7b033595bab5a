"""The global layout fused for ``solve(compile=True)``: time, the step size, the controller's
memory and the step counts stay on the device, and :data:`BLOCK` steps run as one compiled
graph whose accept/reject decisions are ``torch.where`` selections, so the host reads the
device once per block (whether the solve ended) instead of once per step.

A step after the end of the solve (or after a failure) inside a block is a padding step of size
zero: it changes nothing, costs its evaluations of ``f`` and is not counted in the statistics.
The first solve of a compiled entry calls ``f`` once eagerly, to check what it returns (not
counted either). Outputs are written into a buffer by every step that passes them
(interpolated from the step's continuous extension, or its end state for an output on the
step's end), as the eager loop does.

The fused layout serves the common case: an explicit first-same-as-last Runge–Kutta method with
an interpolant over its own stages (Dopri5, Tsit5, Bosh3, ...), a :class:`PIDController` (not a
subclass) with neither ``step_ts``, ``jump_ts`` nor ``on_dtmin="accept"``, and no events, dense
output, saved steps, progress bar or gradient strategy of its own. Any other compiled solve
compiles the step alone (:func:`.stepping.compiled_step`) and runs the eager loop around it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .._solution import Status
from ..controllers import PIDController, initial_step_size
from ..solvers import AbstractSolver
from ..solvers.explicit_rk import ExplicitRungeKutta
from .error_norm import ErrorNorm
from .global_ import finish
from .problem import Problem
from .raw import LoopOptions, Raw
from .stepping import STRETCH, compile_cached, dynamo_config

__all__ = ["BLOCK", "fusable", "loop_fused"]

# Steps per compiled block: the host reads the device once per block. Four steps cover a short
# solve in one read; a longer block traces longer and pads more after the end.
BLOCK = 4

# Inductor's C++ wrapper calls a block's kernels from C++ rather than from generated Python: at
# batch 16 of benchmarks/'s MLP it took the compiled solve from 0.82x to 0.61x eager's time
# (interleaved with eager in each run, on one loaded machine) for 1.7x the compile time.
INDUCTOR_OPTIONS: dict[str, Any] = {"cpp_wrapper": True}

_NONFINITE, _MAX_STEPS, _DT_MIN = int(Status.NONFINITE), int(Status.MAX_STEPS), int(Status.DT_MIN)


def fusable(problem: Problem, solver: AbstractSolver, ctrl: Any, opts: LoopOptions) -> bool:
    """Whether a compiled solve runs fused (see the module docstring)."""
    return (
        opts.compile
        and not problem.per_sample
        and problem.s_host is not None
        and problem.y0.ndim > 0
        and isinstance(solver, ExplicitRungeKutta)
        and solver.fsal
        and not solver.extra_stages
        and not solver.needs_end_derivative
        and type(ctrl) is PIDController  # a subclass's rule may read floats on the host
        and ctrl.land_on_end
        and ctrl.on_dtmin == "fail"
        and ctrl.step_ts is None
        and ctrl.jump_ts is None
        and not (opts.dense or opts.save_steps or opts.progress or opts.checkpoint)
        and opts.event is None
        and opts.tape is None
        and not problem.t_eval.requires_grad
    )


def _static(*tensors: torch.Tensor) -> None:
    """Inside a trace: the sizes of ``tensors`` are constants of the graph (a guard checks
    them). The blocks compile with ``dynamic=True``, so that an integer attribute of the field
    (a call counter) is a symbolic input, not a constant that each call would change; the sizes
    stay static, since each shape has its own compiled entry anyway (its cache key), and static
    sizes let inductor unroll small loops and :mod:`.graph_rewrites` replace small linear layers
    (at batch 16 of benchmarks/'s MLP: 0.88x the time of the symbolic-size graph)."""
    for t in tensors:
        torch._dynamo.mark_static(t)


class _Memory:
    """The PID controller's memory as 0-d tensors, rebuilt inside the traced block for each
    step (the controller's rule reads and writes these attributes)."""

    def __init__(self, betas: tuple[float, float, float], inv1: torch.Tensor, inv2: torch.Tensor,
                 after_reject: torch.Tensor):  # fmt: skip
        self.beta1, self.beta2, self.beta3 = betas
        self.inv1, self.inv2, self.after_reject = inv1, inv2, after_reject


def _kernels(problem: Problem, solver: ExplicitRungeKutta, ctrl: PIDController) -> tuple[Callable, Callable]:
    """``(start, block)``: the plain functions that :func:`loop_fused` compiles. ``start`` picks
    the first step size and runs the first block; ``block`` runs :data:`BLOCK` steps. Both take
    and return the loop's carry (a tuple of tensors, see :func:`loop_fused`)."""
    func = problem.func(count=False, host_time=False)
    norm = ErrorNorm(problem, solver, ctrl)
    betas = ctrl.exponents(solver.error_order)  # type: ignore[arg-type]
    poly = solver.dense_polynomial
    dtmax = ctrl.dtmax
    ctrl.too_small(0.0, 1.0)  # its bounds are cached properties: built here, not in the trace

    def one_step(carry: tuple, s_out: torch.Tensor, s1: torch.Tensor, max_steps: torch.Tensor) -> tuple:
        s, dt, y, f0, inv1, inv2, after_reject, steps, accepted, code, fail_dt, unclipped, outs = carry
        running = code == 0
        hit_max = running & (s < s1) & (steps >= max_steps)
        code = torch.where(hit_max, _MAX_STEPS, code)
        fail_dt = torch.where(hit_max, dt, fail_dt)
        active = running & (s < s1) & ~hit_max
        land = s + dt * STRETCH >= s1
        h = torch.where(active, torch.where(land, s1 - s, dt), 0.0)  # a padding step has size 0
        res = solver.step(func, s, y, f0, h, True, None)
        err = norm.on_device(y, res.y1, res.errors, h)
        nonfinite = active & ~torch.isfinite(err)
        code = torch.where(nonfinite, _NONFINITE, code)
        fail_dt = torch.where(nonfinite, h, fail_dt)
        live = active & ~nonfinite
        memory = _Memory(betas, inv1, inv2, after_reject)
        accept, dt_next = ctrl.adapt(err, h, memory)
        accept = accept & live
        s_new = torch.where(land, s1, s + h)
        with torch.no_grad():
            inside = accept & (s_out > s) & (s_out < s_new)
            at_end = accept & (s_out == s_new)
            theta = ((s_out - s) / torch.where(h == 0, 1.0, h)).clamp(0.0, 1.0).to(y.dtype)
            weights = poly.powers(theta) @ poly.matrix_t(y.dtype, y.device)  # [n_out, S]
        stages = res.stages.reshape(-1, res.stages.shape[-1])  # [N, S]
        between = y.reshape(1, -1) + h.to(y.dtype) * (weights @ stages.T)  # [n_out, N]
        rows = (-1, *([1] * y.ndim))
        outs = torch.where(inside.view(rows), between.view(outs.shape), outs)
        outs = torch.where(at_end.view(rows), res.y1.unsqueeze(0), outs)
        unclipped = torch.where(active, dt, unclipped)
        y, f0 = torch.where(accept, res.y1, y), torch.where(accept, res.f1, f0)  # type: ignore[arg-type]
        s = torch.where(accept, s_new, s)
        inv1 = torch.where(live, memory.inv1, inv1)
        inv2 = torch.where(live, memory.inv2, inv2)
        after_reject = torch.where(live, memory.after_reject, after_reject)
        dt = torch.where(live, dt_next, dt)  # (the rule clips to dtmax)
        small = live & (s < s1) & ctrl.too_small(s, dt)
        code = torch.where(small, _DT_MIN, code)
        fail_dt = torch.where(small, dt, fail_dt)
        steps, accepted = steps + active.long(), accepted + accept.long()
        return s, dt, y, f0, inv1, inv2, after_reject, steps, accepted, code, fail_dt, unclipped, outs

    def block(carry: tuple, s_out: torch.Tensor, s1: torch.Tensor, max_steps: torch.Tensor) -> tuple:
        _static(carry[2], carry[3], carry[12], s_out)  # y, f0, the outputs
        for _ in range(BLOCK):
            carry = one_step(carry, s_out, s1, max_steps)
        s, dt, _, _, _, _, _, steps, accepted, code, fail_dt, unclipped, _ = carry
        info = torch.stack([code.double(), s, steps.double(), accepted.double(), dt, fail_dt, unclipped])
        return carry, info

    def start(y0: torch.Tensor, s_out: torch.Tensor, max_steps: torch.Tensor) -> tuple:
        _static(y0, s_out)
        s0, s1 = s_out[0], s_out[-1]
        f0 = func(s0, y0)
        if ctrl.dt0 is None:
            with torch.no_grad():
                scale = norm.scale(y0)
                dt = initial_step_size(func, s0, y0, f0, solver.error_order, scale, norm.device_norm)  # type: ignore[arg-type]
        else:
            dt = torch.full_like(s0, ctrl.dt0)
        dt = dt.double() if dtmax is None else dt.double().clamp(max=dtmax)
        one, zero = torch.ones_like(s0), torch.zeros_like(s0, dtype=torch.long)
        later = y0.new_full((s_out.shape[0] - 1, *y0.shape), math.nan)
        outs = torch.cat([y0.unsqueeze(0), later])  # NaN until a step passes the output
        # s, dt, y, f0, the controller's memory (inv1, inv2, after_reject), steps, accepted,
        # status code, the failing step size, the last unclipped step size, the outputs
        carry = (s0, dt, y0, f0, one, one, zero.bool(), zero, zero, zero, torch.full_like(s0, math.nan), dt, outs)  # fmt: skip
        return block(carry, s_out, s1, max_steps)

    return start, block


def loop_fused(problem: Problem, solver: AbstractSolver, ctrl: Any, opts: LoopOptions) -> Raw:
    """The global layout in compiled blocks of :data:`BLOCK` steps (see the module docstring);
    the same :class:`Raw` as :func:`.global_.loop_global`."""
    key = ("fused", type(solver), id(problem.f), problem.direction, problem.is_tuple, tuple(problem.shapes),
           problem.dtype, problem.device, problem.n_out, ctrl, torch.is_grad_enabled())  # fmt: skip
    start, block = compile_cached(key, problem, solver, lambda: _kernels(problem, solver, ctrl), dynamic=True,
                                  inductor=INDUCTOR_OPTIONS)  # type: ignore[arg-type]  # fmt: skip
    if not start.seen:  # the first solve: check what f returns, eagerly, before anything is traced
        problem.checked_f0()
        problem.nfe_counter[0] -= 1  # (a check, not part of the solve)
    y0, s_out = problem.y0, problem.s_eval
    s1_host = problem.s_host[-1]  # type: ignore[index]
    limit = torch.tensor(opts.max_steps, device=y0.device)
    with dynamo_config():
        carry, info = start(y0, s_out, limit)
        while True:
            code, s, steps, accepted, dt, fail_dt, unclipped = info.tolist()  # the block's one sync
            if code != 0 or s >= s1_host:
                break
            carry, info = block(carry, s_out, s_out[-1], limit)
    steps, accepted = int(steps), int(accepted)
    problem.nfe_counter[0] += 1 + (ctrl.dt0 is None) + (solver.evaluations_per_step or 0) * steps
    status = Status(int(code))
    end = (s, carry[2], dt, unclipped, None if status == Status.SUCCESS else fail_dt)
    func = problem.func()
    return finish(problem, solver, ctrl, opts, func, [carry[12]], problem.n_out, status,
                  (steps, accepted, 0), end, ([], [], []), None)  # fmt: skip
