"""Failure is data first: statuses, partial solutions, and errors that say what to do."""

from __future__ import annotations

import math
import re

import pytest
import torch

import torchnde as nde


def _blowup(t, y):
    return y**2  # y(t) = 1 / (1 - t) from y(0) = 1: infinite at t = 1


def _y0():
    return torch.ones(1, dtype=torch.float64)


def test_max_steps_status_and_partial_solution():
    ts = torch.linspace(0, 10, 11, dtype=torch.float64)
    sol = nde.solve(lambda t, y: -y, _y0(), ts, dt=0.01, max_steps=250, throw=False)
    assert sol.status == nde.Status.MAX_STEPS
    assert torch.allclose(sol.ys[:3, 0], torch.exp(-ts[:3]), rtol=1e-8)
    assert torch.isnan(sol.ys[3:]).all()
    assert sol.stats.steps == 250


def test_max_steps_error_names_time_step_count_and_fix():
    with pytest.raises(nde.MaxStepsReached) as info:
        nde.solve(lambda t, y: -y, _y0(), torch.tensor([0.0, 10.0]), dt=0.01, max_steps=250)
    msg = str(info.value)
    assert "t=2.5" in msg and "dt=0.01," in msg and "250 steps" in msg and "max_steps" in msg
    assert info.value.solution is not None and info.value.solution.status == nde.Status.MAX_STEPS


def test_step_size_collapse_reports_dt_min():
    ctrl = nde.PIDController(rtol=1e-6, atol=1e-8, dtmin=1e-4)
    sol = nde.solve(_blowup, _y0(), torch.tensor([0.0, 0.5, 2.0]), controller=ctrl, throw=False)
    assert sol.status == nde.Status.DT_MIN
    assert math.isclose(float(sol.ys[1, 0]), 2.0, rel_tol=1e-5)
    assert torch.isnan(sol.ys[2]).all()
    with pytest.raises(nde.StepSizeTooSmall, match=r"t=0\.99.*step size fell below"):
        nde.solve(_blowup, _y0(), torch.tensor([0.0, 2.0]), controller=ctrl)


def test_step_size_underflow_without_dtmin_is_caught():
    with pytest.raises(nde.SolveError) as info:
        nde.solve(_blowup, _y0(), torch.tensor([0.0, 2.0]), max_steps=100_000)
    assert isinstance(info.value, (nde.StepSizeTooSmall, nde.NonFiniteState))


def test_nonfinite_state_is_reported_for_fixed_steps():
    sol = nde.solve(_blowup, _y0(), torch.tensor([0.0, 2.0]), "rk4", dt=0.1, throw=False)
    assert sol.status == nde.Status.NONFINITE
    with pytest.raises(nde.NonFiniteState, match="non-finite"):
        nde.solve(_blowup, _y0(), torch.tensor([0.0, 2.0]), "rk4", dt=0.1)


def test_nonfinite_vector_field_is_reported_for_adaptive_steps():
    def f(t, y):
        return torch.where(t > 0.5, torch.full_like(y, math.nan), -y)

    sol = nde.solve(f, _y0(), torch.tensor([0.0, 0.25, 1.0]), throw=False)
    assert sol.status == nde.Status.NONFINITE
    assert not torch.isnan(sol.ys[1]).any()


def test_stiff_problem_error_suggests_an_implicit_solver():
    """Explicit solvers on a stiff problem spend their budget rejecting steps."""

    def stiff(t, y):
        return -1e4 * (y - torch.cos(t))

    with pytest.raises(nde.MaxStepsReached, match="looks stiff"):
        nde.solve(stiff, _y0(), torch.tensor([0.0, 10.0]), "dopri5", max_steps=2000)


def test_per_sample_error_names_the_sample():
    y0 = torch.tensor([[0.1], [1.0]], dtype=torch.float64)
    ctrl = nde.PIDController(dtmin=1e-4)
    with pytest.raises(nde.StepSizeTooSmall, match="sample 1 at t="):
        nde.solve(_blowup, y0, torch.tensor([0.0, 2.0]), controller=ctrl, per_sample=True)


def test_per_sample_statuses_are_per_sample():
    y0 = torch.tensor([[0.1], [1.0]], dtype=torch.float64)
    ctrl = nde.PIDController(dtmin=1e-4)
    sol = nde.solve(_blowup, y0, torch.tensor([0.0, 2.0]), controller=ctrl, per_sample=True, throw=False)
    assert sol.status.tolist() == [nde.Status.SUCCESS, nde.Status.DT_MIN]
    assert math.isclose(float(sol.ys[-1, 0, 0]), 0.1 / (1 - 0.2), rel_tol=1e-5)
    assert not sol.success


def test_tolerance_below_float32_resolution_says_so():
    with pytest.raises(
        nde.MaxStepsReached, match=r"rtol=1e-10 is below what torch.float32 resolves.*float64"
    ):
        nde.solve(lambda t, y: -y + torch.sin(t), torch.ones(2), torch.tensor([0.0, 5.0]), "dopri8",
                  rtol=1e-10, atol=1e-12, max_steps=500)  # fmt: skip


@pytest.mark.parametrize(
    ("solver", "options", "error"),
    [
        ("dopri5", {"max_steps": 20}, nde.MaxStepsReached),  # adaptive: the step it would take next
        ("rk4", {"dt": 0.1}, nde.NonFiniteState),  # fixed steps: found non-finite at the end
        ("reversible_heun", {"dt": 0.1}, nde.NonFiniteState),
    ],
)
def test_failure_messages_print_the_step_size_as_a_number(solver, options, error):
    with pytest.raises(error) as info:
        nde.solve(_blowup, _y0(), torch.tensor([0.0, 2.0], dtype=torch.float64), solver, **options)
    found = re.search(r"dt=([0-9.e+-]+),", str(info.value))
    assert found is not None and math.isfinite(float(found.group(1))) and float(found.group(1)) > 0, str(
        info.value
    )
    assert "n/a" not in str(info.value) and "nan" not in str(info.value)


def test_per_sample_failure_of_a_reversible_solve_names_the_sample_and_step_size():
    y0 = torch.tensor([[0.1], [1.0]], dtype=torch.float64)
    with pytest.raises(nde.NonFiniteState, match=r"sample 1 at t=2, dt=0.1,"):
        nde.solve(_blowup, y0, torch.tensor([0.0, 2.0], dtype=torch.float64), "reversible_heun", dt=0.1,
                  per_sample=True)  # fmt: skip


def test_per_sample_statuses_read_by_name():
    y0 = torch.tensor([[0.1], [1.0]], dtype=torch.float64)
    ctrl = nde.PIDController(dtmin=1e-4)
    sol = nde.solve(_blowup, y0, torch.tensor([0.0, 2.0]), controller=ctrl, per_sample=True, throw=False)
    assert sol.status.dtype == torch.int64 and sol.status.tolist() == [0, 2]
    assert sol.statuses == [nde.Status.SUCCESS, nde.Status.DT_MIN]
    assert sol.status_names == ["SUCCESS", "DT_MIN"]
    assert nde.Status(int(sol.status[1])).message == "the step size fell below the minimum"
    single = nde.solve(lambda t, y: -y, _y0(), torch.tensor([0.0, 1.0]))
    assert single.statuses == [nde.Status.SUCCESS] and single.status_names == ["SUCCESS"]
