"""Candidates: torchnde and each peer library, set up once, with ``run`` (timed) and ``probe``.

Everything a library needs that a user would also build once (solver objects, per-sample time
grids, float64 copies for scipy) is built here, outside the timed call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import torchnde as nde

from .common import Candidate, Probe
from .problems import ATOL, RTOL, Problem, hand_rk4, numpy_field

VectorField = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class CountingField:
    """Wraps ``f`` and counts its calls (used only by the untimed probes)."""

    def __init__(self, f: VectorField):
        self.f = f
        self.calls = 0

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.f(t, y)


def _final(ys_last: torch.Tensor) -> np.ndarray:
    return ys_last.detach().double().cpu().numpy()


def _worst(x: Any) -> tuple[int, dict[str, Any]]:
    """A per-sample counter as (max, {mean, min}); a plain int as itself."""
    if isinstance(x, torch.Tensor) and x.ndim > 0:
        return int(x.max()), {"mean": float(x.double().mean()), "min": int(x.min())}
    return int(x), {}


# -- adaptive dopri5 -----------------------------------------------------------------------------


def torchnde_dopri5(
    key: str,
    label: str,
    problem: Problem,
    f: VectorField,
    grad: bool,
    per_sample: bool = False,
    compile_step: bool = False,
) -> Candidate:
    """torchnde's dopri5; ``compile_step`` runs the step function under torch.compile
    (``solve(..., compile=True)``: the stages and the vector field in one graph)."""
    y0, t_eval = problem.y0, problem.t_eval

    def solve(fn: VectorField) -> nde.Solution:
        with torch.set_grad_enabled(grad):
            return nde.solve(
                fn, y0, t_eval, "dopri5", rtol=RTOL, atol=ATOL, per_sample=per_sample, compile=compile_step
            )

    def probe() -> Probe:
        counted = CountingField(f)
        sol = solve(counted)
        nfe, nfe_extra = _worst(sol.stats.nfe)
        steps, steps_extra = _worst(sol.stats.steps)
        rejected, _ = _worst(sol.stats.rejected)
        extra = {"nfe_per_sample": nfe_extra, "steps_per_sample": steps_extra} if per_sample else {}
        extra["rejected"] = rejected
        return Probe(counted.calls, nfe, steps, _final(sol.ys[-1]), extra)

    return Candidate(key, label, run=lambda: solve(f), probe=probe)


def torchdiffeq_dopri5(key: str, label: str, problem: Problem, f: VectorField, grad: bool) -> Candidate:
    from torchdiffeq import odeint

    y0, t_eval = problem.y0, problem.t_eval

    def solve(fn: VectorField) -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            return odeint(fn, y0, t_eval, method="dopri5", rtol=RTOL, atol=ATOL)

    def probe() -> Probe:
        counted = CountingField(f)
        ys = solve(counted)
        return Probe(calls=counted.calls, nfe=None, steps=None, y_final=_final(ys[-1]))

    return Candidate(key, label, run=lambda: solve(f), probe=probe)


def torchode_dopri5(key: str, label: str, problem: Problem, f: VectorField, grad: bool) -> Candidate:
    """torchode's Dopri5 + IntegralController; every sample has its own step size (by design)."""
    import torchode as to

    y0 = problem.y0
    t_eval = problem.t_eval.repeat(problem.batch, 1)  # per-sample output times [batch, n]

    def make(fn: VectorField) -> Any:
        term = to.ODETerm(fn)
        return to.AutoDiffAdjoint(
            to.Dopri5(term=term), to.IntegralController(atol=ATOL, rtol=RTOL, term=term)
        )

    adjoint = make(f)

    def solve(adj: Any) -> Any:
        with torch.set_grad_enabled(grad):
            return adj.solve(to.InitialValueProblem(y0=y0, t_eval=t_eval))

    def probe() -> Probe:
        counted = CountingField(f)
        sol = solve(make(counted))
        nfe, nfe_extra = _worst(sol.stats["n_f_evals"])
        steps, steps_extra = _worst(sol.stats["n_steps"])
        extra = {"nfe_per_sample": nfe_extra, "steps_per_sample": steps_extra}
        return Probe(counted.calls, nfe, steps, _final(sol.ys[:, -1]), extra)

    return Candidate(key, label, run=lambda: solve(adjoint), probe=probe)


def scipy_rk45(key: str, label: str, problem: Problem) -> Candidate:
    """scipy's RK45 on the whole batch as one float64 system, ``f`` a numpy MLP (reference only)."""
    from scipy.integrate import solve_ivp

    f = numpy_field(problem.field, problem.batch)
    y0 = problem.y0.double().numpy().reshape(-1)
    t_eval = problem.t_eval.double().numpy()
    span = (float(t_eval[0]), float(t_eval[-1]))

    def run() -> Any:
        return solve_ivp(f, span, y0, method="RK45", t_eval=t_eval, rtol=RTOL, atol=ATOL)

    def probe() -> Probe:
        sol = run()
        return Probe(
            calls=int(sol.nfev), nfe=int(sol.nfev), steps=None, y_final=sol.y[:, -1].reshape(problem.y0.shape)
        )

    return Candidate(key, label, run=run, probe=probe, note="float64 numpy, reference")


def count_calls(solve_with: Callable[[VectorField], Any], f: VectorField) -> int:
    """How many times one solve calls ``f`` (for :func:`vector_field_only`)."""
    counted = CountingField(f)
    solve_with(counted)
    return counted.calls


def vector_field_only(
    key: str, label: str, problem: Problem, f: VectorField, grad: bool, n_calls: int
) -> Candidate:
    """``n_calls`` bare evaluations of ``f`` at ``y0``: the floor under any solver that makes as
    many calls (it has no solver arithmetic, no control flow and no output interpolation)."""
    y0, t = problem.y0, problem.t_eval[0]

    def run() -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            out = y0
            for _ in range(n_calls):
                out = f(t, y0)
            return out

    return Candidate(
        key, label, run=run, probe=lambda: Probe(calls=n_calls), note="torchnde's call count; a floor"
    )


# -- fixed-step RK4 ------------------------------------------------------------------------------


def _rk4_steps(calls: int) -> int:
    return calls // 4


def torchnde_rk4(key: str, label: str, problem: Problem, dt: float, grad: bool) -> Candidate:
    f, y0, t_eval = problem.field, problem.y0, problem.t_eval

    def solve(fn: VectorField) -> nde.Solution:
        with torch.set_grad_enabled(grad):
            return nde.solve(fn, y0, t_eval, solver="rk4", dt=dt)

    def probe() -> Probe:
        counted = CountingField(f)
        sol = solve(counted)
        return Probe(counted.calls, int(sol.stats.nfe), int(sol.stats.steps), _final(sol.ys[-1]))

    return Candidate(key, label, run=lambda: solve(f), probe=probe)


def hand_written_rk4(key: str, label: str, problem: Problem, dt: float, grad: bool) -> Candidate:
    f, y0 = problem.field, problem.y0
    t0, t1 = float(problem.t_eval[0]), float(problem.t_eval[-1])
    n = round((t1 - t0) / dt)

    def solve(fn: VectorField) -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            return hand_rk4(fn, y0, t0, dt, n)

    def probe() -> Probe:
        counted = CountingField(f)
        y = solve(counted)
        return Probe(counted.calls, None, _rk4_steps(counted.calls), _final(y), {"steps": "calls / 4"})

    return Candidate(key, label, run=lambda: solve(f), probe=probe)


def torchdiffeq_rk4(key: str, label: str, problem: Problem, dt: float, grad: bool) -> Candidate:
    from torchdiffeq import odeint

    f, y0, t_eval = problem.field, problem.y0, problem.t_eval

    def solve(fn: VectorField) -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            return odeint(fn, y0, t_eval, method="rk4", options={"step_size": dt})

    def probe() -> Probe:
        counted = CountingField(f)
        ys = solve(counted)
        return Probe(counted.calls, None, _rk4_steps(counted.calls), _final(ys[-1]), {"steps": "calls / 4"})

    return Candidate(key, label, run=lambda: solve(f), probe=probe, note="3/8-rule RK4")
