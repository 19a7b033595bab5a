"""DETEST non-stiff problems A1–E5 (Hull, Enright, Fellen, Sedgwick 1972): torchnde's adaptive
solvers against their scipy counterparts on the same problem, tolerance and interval [0, 20].

Error measure (the same for both libraries): the mixed absolute/relative error at the final time,
``max_i |y_i - ref_i| / (1 + |ref_i|)``, against a reference from scipy's DOP853 at
``rtol = atol = 1e-13``. That reference agrees with every closed-form solution the set has (A1–A4,
C1, D1–D5, E1) to ``REFERENCE_ACCURACY`` (checked below), so errors under ten times that are not
resolved and are not compared.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import torchnde as nde

from .detest_problems import EXACT_AT_T1, PROBLEMS, T0, T1, numpy_field, torch_field

TOLERANCES = (1e-6, 1e-9)
SCIPY_COUNTERPART = {"bosh3": "RK23", "dopri5": "RK45", "tsit5": "RK45", "dopri8": "DOP853"}
REFERENCE_TOL = 1e-13
REFERENCE_ACCURACY = 5e-12  # measured worst case 4e-12 (D3); see test_reference_matches_closed_form
ERROR_FACTOR = 3.0
ERROR_FLOOR = 10 * REFERENCE_ACCURACY
NFE_FACTOR = 1.3
MAX_STEPS = 200_000

# The end-point error of some problems is chaotic under round-off: DOP853 on C3/C4 steps outside
# its stability region for the decayed fast modes (eigenvalues down to -4, steps up to 2.5, so
# |R(h lambda)| = 140 per step and 6e3 for the dense output), and C2's end point sits on a
# near-cancellation. A change of the summation order alone moves such a ratio between 0.1 and 6,
# and so does scipy's own error between tolerances 2% apart. Where the ratio at the tolerance
# itself exceeds 3, the case must still meet 3x on the geometric mean of the ratios over the
# tolerances BAND x tol; it is then reported as an xfail carrying both numbers.
BAND = (0.8, 0.9, 1.0, 1.1, 1.25)

# Cases that fail the 3x comparison, each investigated (the assertion message has the numbers).
# They are non-strict xfails: the assertion itself is unchanged, they show as XFAIL while the cause
# stands and as XPASS once it is gone. Delete an entry to see it fail, or when its cause is fixed.
_DIFFERENT_METHOD = (
    "tsit5 is a different 5(4) pair from RK45: at equal tolerance it spends 26% fewer evaluations "
    "and is consistently ~3.5x less accurate here (still more accurate per evaluation)."
)
KNOWN_DEVIATIONS: dict[tuple[str, str, float], str] = {
    ("A2", "tsit5", 1e-9): _DIFFERENT_METHOD,
}


class Run(NamedTuple):
    y1: np.ndarray
    nfe: int
    steps: int  # torchnde: attempted steps; scipy: accepted steps
    rejected: int  # -1 for scipy, which does not report it


def _scaled_error(y: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(y - ref) / (1.0 + np.abs(ref))))


@functools.cache
def _reference(name: str) -> np.ndarray:
    p = PROBLEMS[name]
    sol = solve_ivp(
        numpy_field(p), (T0, T1), p.y0_numpy(), method="DOP853", rtol=REFERENCE_TOL, atol=REFERENCE_TOL
    )
    assert sol.success, sol.message
    return sol.y[:, -1]


@functools.cache
def _scipy(name: str, method: str, tol: float) -> Run:
    p = PROBLEMS[name]
    sol = solve_ivp(numpy_field(p), (T0, T1), p.y0_numpy(), method=method, rtol=tol, atol=tol)
    assert sol.success, sol.message
    accepted = len(sol.t) - 1
    return Run(sol.y[:, -1], sol.nfev, accepted, -1)


@functools.cache
def _torchnde(name: str, solver: str, tol: float) -> Run:
    p = PROBLEMS[name]
    sol = nde.solve(
        torch_field(p),
        p.y0_torch(),
        torch.tensor([T0, T1], dtype=torch.float64),
        solver=solver,
        controller=nde.PIDController(rtol=tol, atol=tol),
        max_steps=MAX_STEPS,
    )
    assert sol.ys.dtype == torch.float64
    s = sol.stats
    return Run(sol.ys[-1].numpy(), s.nfe, s.steps, s.rejected)


def _cases(solvers, known=None):
    for tol in TOLERANCES:
        for solver in solvers:
            for name in PROBLEMS:
                reason = (known or {}).get((name, solver, tol))
                marks = [pytest.mark.xfail(reason=reason, strict=False)] if reason else []
                yield pytest.param(name, solver, tol, id=f"{name}-{solver}-tol{tol:.0e}", marks=marks)


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_torch_and_numpy_vector_fields_agree(name):
    p = PROBLEMS[name]
    rng = np.random.default_rng(0)
    y = p.y0_numpy() + 0.1 * rng.standard_normal(len(p.y0))
    expected = numpy_field(p)(1.3, y)
    got = torch_field(p)(torch.tensor(1.3, dtype=torch.float64), torch.from_numpy(y))
    assert got.dtype == torch.float64 and got.shape == y.shape
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", list(EXACT_AT_T1))
def test_reference_matches_closed_form(name):
    """The reference is accurate to REFERENCE_ACCURACY wherever the solution is known exactly,
    which also checks those problems' definitions."""
    assert _scaled_error(_reference(name), EXACT_AT_T1[name]) <= REFERENCE_ACCURACY


@pytest.mark.parametrize(("name", "solver", "tol"), list(_cases(SCIPY_COUNTERPART, KNOWN_DEVIATIONS)))
def test_error_within_3x_of_scipy(name, solver, tol):
    """At ``rtol = atol = tol``, torchnde's scaled error at t = 20 is at most 3x that of its scipy
    counterpart (bosh3/RK23, dopri5/RK45, tsit5/RK45, dopri8/DOP853) at the same tolerances.

    Floor: errors up to ``ERROR_FLOOR = 10 * REFERENCE_ACCURACY`` (5e-11, scaled) count as the
    floor, because below it the reference cannot tell errors apart; otherwise a scipy run that
    happens to land on the reference by luck would set an unresolvable bound. Round-off
    sensitive end points: see BAND.
    """
    mine = _torchnde(name, solver, tol)
    theirs = _scipy(name, SCIPY_COUNTERPART[solver], tol)
    ratio = _ratio(name, solver, tol)
    message = (
        f"{name} {solver} tol={tol:g}: error ratio {ratio:.2f} against {SCIPY_COUNTERPART[solver]}; "
        f"nfe {mine.nfe} vs {theirs.nfe}; steps {mine.steps} ({mine.rejected} rejected) vs "
        f"{theirs.steps} accepted"
    )
    if ratio <= ERROR_FACTOR:
        return
    band = [_ratio(name, solver, tol * k) for k in BAND]
    mean = float(np.exp(np.mean(np.log(band))))
    assert mean <= ERROR_FACTOR, f"{message}; geometric mean over tol x {BAND}: {mean:.2f}"
    pytest.xfail(f"{message}: round-off sensitive end point; geometric mean over tol x {BAND}: {mean:.2f}")


def _ratio(name: str, solver: str, tol: float) -> float:
    """torchnde's end-point error over scipy's; errors below ERROR_FLOOR count as the floor."""
    ref = _reference(name)
    err = _scaled_error(_torchnde(name, solver, tol).y1, ref)
    err_scipy = _scaled_error(_scipy(name, SCIPY_COUNTERPART[solver], tol).y1, ref)
    return max(err, ERROR_FLOOR) / max(err_scipy, ERROR_FLOOR)


@pytest.mark.parametrize(("name", "solver", "tol"), list(_cases(["dopri5"])))
def test_dopri5_nfe_within_1_3x_of_scipy_rk45(name, solver, tol):
    """dopri5 and scipy's RK45 are the same Dormand–Prince pair with the same default controller
    constants, so their evaluation counts agree within a factor 1.3 either way."""
    mine = _torchnde(name, solver, tol)
    theirs = _scipy(name, "RK45", tol)
    ratio = mine.nfe / theirs.nfe
    assert 1 / NFE_FACTOR <= ratio <= NFE_FACTOR, (
        f"{name} tol={tol:g}: nfe {mine.nfe} vs RK45 nfev {theirs.nfe} (ratio {ratio:.2f}); "
        f"steps {mine.steps} ({mine.rejected} rejected) vs {theirs.steps} accepted"
    )
