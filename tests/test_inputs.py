"""Bad input is caught before solving, with a message that names the fix."""

from __future__ import annotations

import pytest
import torch

import torchnde as nde

TS = torch.tensor([0.0, 1.0])


def _decay(t, y):
    return -y


@pytest.mark.parametrize(
    ("t_eval", "match"),
    [
        (torch.tensor([0.0, 1.0, 0.5]), "strictly monotonic"),
        (torch.tensor([0.0, 1.0, 1.0]), "strictly monotonic"),
        (torch.zeros(2, 2), r"shape \[n\]"),
        (torch.tensor([0.0, float("nan")]), "finite"),
        (torch.tensor([]), "at least the initial time"),
    ],
)
def test_bad_t_eval_is_rejected(t_eval, match):
    with pytest.raises(ValueError, match=match):
        nde.solve(_decay, torch.ones(2), t_eval)


def test_integer_state_is_rejected_with_a_cast_hint():
    with pytest.raises(TypeError, match=r"floating point, e.g. y0.to\(torch.float32\)"):
        nde.solve(_decay, torch.ones(2, dtype=torch.int64), TS)


def test_mismatched_tuple_dtypes_are_rejected():
    with pytest.raises(TypeError, match="share one dtype"):
        nde.solve(lambda t, y: y, (torch.ones(2), torch.ones(2, dtype=torch.float64)), TS)


def test_f_returning_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match=r"f returned shape \(3,\).*shaped like y"):
        nde.solve(lambda t, y: torch.ones(3), torch.ones(2), TS)


def test_f_returning_wrong_dtype_is_rejected():
    with pytest.raises(TypeError, match=r"f returned dtype torch.float64.*cast inside f"):
        nde.solve(lambda t, y: y.double(), torch.ones(2), TS)


def test_f_returning_wrong_structure_is_rejected():
    with pytest.raises(TypeError, match="same structure as y0"):
        nde.solve(lambda t, y: y[0], (torch.ones(2), torch.ones(2)), TS)


@pytest.mark.parametrize("rtol", [0.0, -1e-6])
def test_nonpositive_rtol_is_rejected(rtol):
    with pytest.raises(ValueError, match="rtol must be > 0"):
        nde.solve(_decay, torch.ones(2), TS, rtol=rtol)


def test_negative_atol_is_rejected():
    with pytest.raises(ValueError, match="atol must be >= 0"):
        nde.PIDController(atol=-1.0)


def test_unknown_solver_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown solver 'dopri6'; valid solvers: .*dopri5.*tsit5"):
        nde.solve(_decay, torch.ones(2), TS, solver="dopri6")


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['rtoll'\]; valid options: .*rtol"):
        nde.solve(_decay, torch.ones(2), TS, rtoll=1e-3)


def test_unknown_controller_option_is_an_error():
    with pytest.raises(TypeError):
        nde.PIDController(rtoll=1e-3)


def test_fixed_step_solver_without_dt_says_what_to_pass():
    with pytest.raises(ValueError, match="pass dt="):
        nde.solve(_decay, torch.ones(2), TS, solver="rk4")


def test_fixed_step_solver_with_pid_controller_is_rejected():
    with pytest.raises(ValueError, match="cannot use PIDController"):
        nde.solve(_decay, torch.ones(2), TS, solver="rk4", controller=nde.PIDController())


def test_tolerances_twice_is_ambiguous():
    with pytest.raises(ValueError, match="not both"):
        nde.solve(_decay, torch.ones(2), TS, rtol=1e-3, controller=nde.PIDController())


def test_bad_constant_step_is_rejected():
    with pytest.raises(ValueError, match="positive finite"):
        nde.ConstantStep(-0.1)


def test_per_sample_needs_a_batch_axis():
    with pytest.raises(ValueError, match="leading batch axis"):
        nde.solve(_decay, torch.tensor(1.0), TS, per_sample=True)


def test_per_sample_time_rows_must_match_the_batch():
    with pytest.raises(ValueError, match="3 rows but y0 has batch 2"):
        nde.solve(_decay, torch.ones(2, 1), torch.zeros(3, 2).cumsum(0).T.contiguous().T, per_sample=True)


def test_per_component_tolerances_must_broadcast():
    with pytest.raises(ValueError, match="does not broadcast"):
        nde.solve(_decay, torch.ones(2), TS, rtol=torch.ones(3) * 1e-6)


def test_per_component_tolerances_are_accepted():
    sol = nde.solve(_decay, torch.ones(2), TS, rtol=torch.tensor([1e-3, 1e-9]), atol=0.0)
    assert sol.success
