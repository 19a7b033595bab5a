"""Diagnostics: stiffness and precision hints, and the error a failed solve raises, whose
message names the time, step size, step count, sample and a fix."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .._solution import ERRORS, Solution, Status
from ..controllers import AbstractController
from ..solvers import AbstractSolver
from .problem import Problem
from .raw import Raw

__all__ = ["error", "precision_hint", "stiffness_advice", "stiffness_ratio"]


@torch.no_grad()
def stiffness_ratio(func: Callable, s: Any, y: torch.Tensor, per_sample: bool, iters: int = 10) -> Any:
    """Estimate the spectral radius of ``df/dy`` at ``(s, y)`` (per sample in that layout) by
    power iteration on finite-difference Jacobian-vector products.

    An explicit method whose steps are limited by stability rather than accuracy takes steps of
    about ``c / rho`` with ``c`` of order one (3.3 for Dopri5), so ``rho * mean_dt > 1`` at a
    failure says the problem is stiff (Hairer & Wanner, *Solving ODEs II*, IV.2) -- provided the
    solution itself changes slowly, ``|f| / |y| << rho``; a blow-up (``y' = y^2``) has
    ``|f| / |y| ~ rho`` and is not stiff. Returns ``rho`` where that holds, else 0.
    """
    lead = y.shape[:1] if per_sample else ()

    def norm(x: torch.Tensor) -> torch.Tensor:  # per sample (or overall), broadcastable to y
        n = torch.linalg.vector_norm(x.reshape(*lead, -1), dim=-1)
        return n.view(lead + (1,) * (y.ndim - len(lead)))  # a tuple: a 0-d state views as ()

    gen = torch.Generator(device=y.device).manual_seed(0)
    v = torch.randn(y.shape, generator=gen, dtype=y.dtype, device=y.device)
    v = v / norm(v)
    eps = torch.finfo(y.dtype).eps ** 0.5 * (1 + norm(y))
    f0 = func(s, y)
    rho = torch.zeros(lead, dtype=torch.float64, device=y.device)
    for _ in range(iters):
        jv = (func(s, y + eps * v) - f0) / eps
        size = norm(jv)
        rho = size.reshape(lead).to(torch.float64)
        v = jv / size.clamp(min=1e-300)
    rate = (norm(f0) / norm(y).clamp(min=torch.finfo(y.dtype).tiny)).reshape(lead).to(torch.float64)
    rho = torch.where(rate < 0.01 * rho, torch.nan_to_num(rho, nan=0.0), 0.0)
    return rho if per_sample else float(rho)


# A successful explicit solve with at least this many steps is checked for stiffness.
ADVICE_STEPS = 1000
# Which implicit solver to suggest, and why (benchmarks/results/stiff.md, Robertson and Van der Pol
# mu = 1000 at rtol 1e-6: rodas5p 60 and 373 ms, kvaerno5 119 and 943 ms, with 4-10x smaller
# errors; a Rosenbrock step factorises a fresh Jacobian, Kvaerno5's Newton reuses one across steps)
IMPLICIT_CHOICE = (
    "solver='rodas5p' for a small or medium state (no Newton iterations; about twice kvaerno5's speed "
    "on the Robertson and Van der Pol benchmarks), or solver='kvaerno5' for a large one (its Jacobian "
    "is reused across steps)"
)


def stiffness_advice(problem: Problem, method: AbstractSolver, ctrl: Any, raw: Raw) -> str | None:
    """For a long successful explicit solve: whether its steps were limited by stability (the
    problem is stiff), said in ``Solution.advice`` with the solver to try. Costs eleven
    evaluations of ``f``, only after ``ADVICE_STEPS`` steps."""
    accepted = raw.stats.accepted
    if (
        method.implicit
        or not ctrl.adaptive
        or not isinstance(accepted, int)
        or raw.stats.steps < ADVICE_STEPS
        or problem.s_host is None
    ):
        return None
    s0, s1 = problem.s_host[0], problem.s_host[-1]
    with torch.no_grad():
        y_end = raw.ys[-1].detach()
        rho = stiffness_ratio(problem.func(count=False), s1, y_end, False)
    mean_dt = (s1 - s0) / max(accepted, 1)
    if rho * mean_dt <= 1.0:
        return None
    return (
        f"{raw.stats.steps} steps of about {mean_dt:.2g} against a stiffness of {rho:.2g}: the step size was "
        f"limited by stability, not accuracy, so the problem looks stiff. Try an implicit solver: "
        f"{IMPLICIT_CHOICE}."
    )


def precision_hint(ctrl: AbstractController, dtype: torch.dtype) -> str | None:
    """A tolerance tighter than the state's dtype can resolve makes steps collapse: say so."""
    if not ctrl.adaptive or not dtype.is_floating_point:
        return None
    rtol = ctrl.rtol
    smallest = (
        float(torch.as_tensor(rtol).min())
        if not isinstance(rtol, (tuple, list))
        else min(float(torch.as_tensor(r).min()) for r in rtol)
    )
    eps = torch.finfo(dtype).eps
    if smallest >= eps:
        return None
    return (
        f"rtol={smallest:.3g} is below what {dtype} resolves (eps {eps:.2g}): solve in float64 "
        f"(y0.double()) or use rtol >= {10 ** math.ceil(math.log10(10 * eps)):.0e}."
    )


def looks_stiff(raw: Raw, solver: AbstractSolver, sample: int | None) -> bool:
    if raw.stiff_check is None or not solver.adaptive:
        return False
    stiff = raw.stiff_check()
    return bool(stiff[sample]) if isinstance(stiff, torch.Tensor) else bool(stiff)


def error(sol: Solution, raw: Raw, solver: AbstractSolver) -> Exception:
    if isinstance(sol.status, torch.Tensor):
        ok = (sol.status == Status.SUCCESS) | (sol.status == Status.EVENT)
        bad = (~ok).nonzero().flatten().tolist()
        i = bad[0]
        status = Status(int(sol.status[i]))
        where = (
            f"sample {i} (and {len(bad) - 1} more)" if len(bad) > 1 else f"sample {i}"
        ) + f" at t={float(raw.fail_time[i]):.6g}{_dt(raw.fail_dt, i)}, "
        where += f"after {int(raw.stats.steps[i])} steps"
    else:
        status = Status(sol.status)
        where = f"at t={float(raw.fail_time):.6g}{_dt(raw.fail_dt, None)}, after {raw.stats.steps} steps"
    hint = HINTS[status]
    if status == Status.MAX_STEPS and raw.events is not None:
        fired = raw.events[0].shape[-1] if isinstance(raw.events[0], torch.Tensor) else len(raw.events[0])
        steps = raw.stats.steps if isinstance(raw.stats.steps, int) else int(raw.stats.steps.max())
        if fired >= 10 and 4 * fired >= steps:  # about one event every few steps
            hint += (
                f" The event fired {fired} times: if events accumulate (Zeno behaviour), stop after "
                "a number of them with Event(..., max_events=N)."
            )
    if raw.precision_hint is not None and status in (Status.MAX_STEPS, Status.DT_MIN):
        hint = raw.precision_hint
    elif looks_stiff(raw, solver, i if isinstance(sol.status, torch.Tensor) else None):
        hint = (
            "The step size is limited by stability, not accuracy: the problem looks stiff. Try "
            f"an implicit solver: {IMPLICIT_CHOICE}; or, staying explicit, raise max_steps"
        )
    return ERRORS[status](f"solve stopped {where}: {status.message}. {hint}", sol)


def _dt(fail_dt: Any, i: int | None) -> str:
    """``", dt=0.01"``: the step size at the failure (``""`` when the loop did not record one)."""
    if fail_dt is None:
        return ""
    value = float(fail_dt[i]) if i is not None else float(fail_dt)
    return f", dt={value:.3g}" if math.isfinite(value) else ""


HINTS = {
    Status.MAX_STEPS: "Raise max_steps, loosen rtol/atol, or check whether the problem is stiff.",
    Status.DT_MIN: (
        "The solution may blow up or be discontinuous here; if f has known jumps pass them as "
        "jump_ts, or lower dtmin. If the problem looks stiff use an implicit solver."
    ),
    Status.NONFINITE: "Check f for overflow or division by zero, or tighten rtol/atol.",
    Status.NO_CONVERGENCE: (
        "Use a smaller dt, or an adaptive controller (PIDController), which shrinks the step "
        "when Newton fails."
    ),
}
