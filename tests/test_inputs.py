"""Bad input is caught before solving, with a message that names the fix."""

from __future__ import annotations

import math

import pytest
import torch

import torchnde as nde

TS = torch.tensor([0.0, 1.0])


def _decay(t, y):
    return -y


class _Counted:
    """A vector field that counts its calls: bad input must be rejected before any."""

    def __init__(self):
        self.calls = 0

    def __call__(self, t, y):
        self.calls += 1
        return -y if isinstance(y, torch.Tensor) else tuple(-p for p in y)


def _rejected(error, match, y0, t_eval=TS, **options):
    f = _Counted()
    with pytest.raises(error, match=match):
        nde.solve(f, y0, t_eval, **options)
    assert f.calls == 0, "the vector field was called before the input was rejected"


@pytest.mark.parametrize(
    ("t_eval", "match"),
    [
        (torch.tensor([0.0, 1.0, 0.5]), "strictly monotonic"),
        (torch.tensor([0.0, 1.0, 1.0]), r"repeats 1 \(at indices 1, 2\).*torch.unique_consecutive"),
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


@pytest.mark.parametrize("per_sample", [False, True])
def test_an_empty_state_is_rejected_with_what_to_do(per_sample):
    if per_sample:
        _rejected(
            ValueError,
            r"empty batch.*Skip the call when y0.shape\[0\] == 0",
            torch.zeros(0, 2),
            per_sample=True,
        )
    else:
        _rejected(ValueError, r"shape \(0, 2\), with no elements.*y0.numel\(\) == 0", torch.zeros(0, 2))
    _rejected(ValueError, r"no elements", (torch.ones(2), torch.zeros(0)))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_nonfinite_state_is_rejected_naming_the_entries(bad):
    y0 = torch.ones(3, 2)
    y0[1, 0] = y0[2, 1] = bad
    _rejected(ValueError, r"y0 is NaN or infinite at index \(1, 0\), \(2, 1\).*torch.isfinite", y0)
    _rejected(ValueError, r"at sample\(s\) 1, 2.*drop those samples", y0, per_sample=True)
    _rejected(ValueError, r"at index 3 of the parts concatenated", (torch.ones(2), torch.tensor([1.0, bad])))
    _rejected(ValueError, r"NaN or infinite", y0, throw=False)  # bad input, not a solve failure


def test_a_finite_state_passes_the_check():
    sol = nde.solve(_decay, torch.ones(2), TS)
    assert sol.success and torch.allclose(sol.ys[-1], torch.full((2,), math.exp(-1.0)), rtol=1e-5)


def test_a_finite_state_whose_sum_overflows_passes_the_check():
    """The check sums the state first; a sum that overflows falls back to entry by entry."""
    y0 = torch.full((4,), 3e38)  # finite in float32, the sum is not
    sol = nde.solve(_decay, y0, TS, solver="euler", dt=0.1)
    assert sol.success and bool(torch.isfinite(sol.ys).all())


@pytest.mark.parametrize(
    ("t_eval", "match"),
    [
        (
            torch.tensor([0.0, 0.5, 0.5, 1.0, 1.0]),
            r"repeats 0.5 \(at indices 1, 2\), 1 \(at indices 3, 4\).*unique_consecutive",
        ),
        (torch.tensor([1.0, 0.5, 0.5, 0.0]), r"repeats 0.5.*torch.unique_consecutive\(t_eval\)"),
        (
            torch.tensor([0.0, 1.0, 0.5, 1.0]),
            r"not monotonic and repeats 1 \(at indices 1, 3\).*torch.unique\(t_eval\)",
        ),
    ],
)
def test_repeated_output_times_are_named_with_how_to_remove_them(t_eval, match):
    _rejected(ValueError, match, torch.ones(2), t_eval)
    assert "sort it" not in _message(torch.ones(2), t_eval)


def test_repeated_times_in_a_per_sample_row_name_the_row():
    rows = torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.5, 0.5]])
    _rejected(ValueError, r"row\(s\) 1: t_eval repeats 0.5", torch.ones(2, 1), rows, per_sample=True)


def test_the_suggested_fix_for_repeats_solves():
    t_eval = torch.tensor([0.0, 0.5, 0.5, 1.0])
    sol = nde.solve(_decay, torch.ones(1), torch.unique_consecutive(t_eval))
    assert sol.ys.shape == (3, 1)


def _message(y0, t_eval, **options):
    with pytest.raises(ValueError) as info:
        nde.solve(_decay, y0, t_eval, **options)
    return str(info.value)


def test_a_complex_state_is_told_how_to_split_it_not_to_drop_the_imaginary_part():
    f = _Counted()
    with pytest.raises(TypeError) as info:
        nde.solve(f, torch.ones(2, dtype=torch.complex64), TS)
    msg = str(info.value)
    assert "torch.view_as_real" in msg and "torch.view_as_complex" in msg
    assert "float32" not in msg and ".real" not in msg.replace("view_as_real", "")
    assert f.calls == 0


def test_the_suggested_split_of_a_complex_state_solves_it():
    """dz/dt = i z from z0 = 1 is exp(i t): solved as its real and imaginary parts, as the
    error message says."""
    z0 = torch.tensor([1.0 + 0.0j], dtype=torch.complex128)
    ts = torch.linspace(0, 2, 5, dtype=torch.float64)

    def f(t, y):
        return torch.view_as_real(1j * torch.view_as_complex(y))

    sol = nde.solve(f, torch.view_as_real(z0), ts, rtol=1e-10, atol=1e-12)
    z = torch.view_as_complex(sol.ys.contiguous())
    assert torch.allclose(z[:, 0], torch.exp(1j * ts), atol=1e-8)
