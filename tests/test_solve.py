"""The solve contract: shapes, tuples, dtypes, direction, saving and dense output."""

from __future__ import annotations

import math

import pytest
import torch

import torchnde as nde

from .helpers import ADAPTIVE_SOLVERS, GENERAL_SOLVERS


def _decay(t, y):
    return -y


@pytest.mark.parametrize("name", GENERAL_SOLVERS)
def test_every_solver_solves_exponential_decay(name):
    y0 = torch.tensor([1.0, 2.0], dtype=torch.float64)
    ts = torch.linspace(0, 1, 5, dtype=torch.float64)
    kw = {"rtol": 1e-8, "atol": 1e-10} if name in ADAPTIVE_SOLVERS else {"dt": 1e-3}
    sol = nde.solve(_decay, y0, ts, name, **kw, max_steps=100_000)
    exact = y0 * torch.exp(-ts)[:, None]
    tol = {"euler": 1e-3, "midpoint": 1e-6, "ralston": 1e-6, "heun": 1e-6, "fehlberg2": 2e-6,
           "reversible_heun": 1e-6, "implicit_euler": 1e-3,
           # large steps of a 5th-order method, read between them by the cubic Hermite interpolant
           "kvaerno5": 1e-6, "rodas5p": 1e-6,
           # steps of 0.56 of an 8th-order method, read between them by its 5th-order extension
           "rk87pd": 1e-6}.get(name, 1e-7)  # fmt: skip
    assert torch.allclose(sol.ys, exact, atol=tol, rtol=0)
    assert sol.status == nde.Status.SUCCESS


def test_output_is_time_first_for_any_state_shape():
    y0 = torch.randn(4, 3, 5)
    sol = nde.solve(_decay, y0, torch.linspace(0, 1, 7))
    assert sol.ys.shape == (7, 4, 3, 5)
    assert torch.equal(sol.ys[0], y0)


def test_scalar_state_is_supported():
    sol = nde.solve(_decay, torch.tensor(1.0, dtype=torch.float64), torch.tensor([0.0, 1.0]))
    assert sol.ys.shape == (2,)
    assert math.isclose(float(sol.ys[-1]), math.exp(-1), rel_tol=1e-5)


def test_tuple_state_round_trips_structure_and_values():
    def oscillator(t, y):
        x, v = y
        return v, -x

    y0 = (torch.tensor([1.0], dtype=torch.float64), torch.tensor([[0.0, 0.0]], dtype=torch.float64)[0, :1])
    ts = torch.linspace(0, math.pi, 5, dtype=torch.float64)
    sol = nde.solve(oscillator, y0, ts, rtol=1e-10, atol=1e-12)
    assert isinstance(sol.ys, tuple) and len(sol.ys) == 2
    assert sol.ys[0].shape == (5, 1)
    assert torch.allclose(sol.ys[0][:, 0], torch.cos(ts), atol=1e-8)
    assert torch.allclose(sol.ys[1][:, 0], -torch.sin(ts), atol=1e-8)


def test_tuple_state_with_different_shapes():
    def f(t, y):
        a, b = y
        return -a, -2 * b

    y0 = (torch.ones(2, 3, dtype=torch.float64), torch.ones(4, dtype=torch.float64))
    sol = nde.solve(f, y0, torch.tensor([0.0, 1.0]), rtol=1e-10, atol=1e-12)
    assert sol.ys[0].shape == (2, 2, 3) and sol.ys[1].shape == (2, 4)
    assert torch.allclose(sol.ys[0][-1], torch.full((2, 3), math.exp(-1), dtype=torch.float64), atol=1e-9)
    assert torch.allclose(sol.ys[1][-1], torch.full((4,), math.exp(-2), dtype=torch.float64), atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("per_sample", [False, True])
def test_state_dtype_is_preserved(dtype, per_sample):
    seen = []

    def f(t, y):
        seen.append((t.dtype, y.dtype))
        return -y

    sol = nde.solve(f, torch.ones(3, 2, dtype=dtype), torch.linspace(0, 1, 4), per_sample=per_sample)
    assert sol.ys.dtype == dtype
    assert all(td == dtype and yd == dtype for td, yd in seen)


def test_time_is_kept_in_float64_internally_for_float32_states():
    """A long float32 solve still lands exactly on float64 output times."""
    ts = torch.tensor([0.0, 1e3 + 0.1], dtype=torch.float64)  # float32 sums of 0.1 drift by ~0.1 here
    sol = nde.solve(lambda t, y: torch.zeros_like(y), torch.ones(1), ts, dt=0.1, max_steps=20_000)
    assert sol.stats.steps == 10_001


@pytest.mark.parametrize("name", ["dopri5", "tsit5", "rk4"])
def test_backward_in_time_matches_the_exact_solution(name):
    ts = torch.linspace(2, 0, 5, dtype=torch.float64)
    y0 = torch.tensor([1.0, -1.0], dtype=torch.float64)
    kw = {"dt": 1e-3} if name == "rk4" else {"rtol": 1e-9, "atol": 1e-11}
    sol = nde.solve(lambda t, y: -y * t, y0, ts, name, **kw)
    exact = y0 * torch.exp(-(ts**2 - 4) / 2)[:, None]
    assert torch.allclose(sol.ys, exact, rtol=1e-7, atol=0)


def test_backward_solve_retraces_forward_solve():
    f = lambda t, y: torch.sin(t) * y - 0.3 * y**3  # noqa: E731
    y0 = torch.tensor([0.7], dtype=torch.float64)
    fwd = nde.solve(f, y0, torch.tensor([0.0, 3.0]), rtol=1e-11, atol=1e-13)
    back = nde.solve(f, fwd.ys[-1], torch.tensor([3.0, 0.0]), rtol=1e-11, atol=1e-13)
    assert torch.allclose(back.ys[-1], y0, atol=1e-9)


def test_last_step_lands_exactly_on_the_final_time():
    """No interpolating back from past the end: the final output is the step's own state."""
    sol = nde.solve(_decay, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 1.0]), "dopri8",
                    rtol=1e-12, atol=1e-14, save_steps=True)  # fmt: skip
    assert float(sol.step_ts[-1]) == 1.0
    assert torch.equal(sol.ys[-1], sol.step_ys[-1])


def test_outputs_do_not_shorten_steps():
    ts_few = torch.tensor([0.0, 5.0], dtype=torch.float64)
    ts_many = torch.linspace(0, 5, 200, dtype=torch.float64)
    few = nde.solve(_decay, torch.ones(2, dtype=torch.float64), ts_few, rtol=1e-6, atol=1e-9)
    many = nde.solve(_decay, torch.ones(2, dtype=torch.float64), ts_many, rtol=1e-6, atol=1e-9)
    assert few.stats.steps == many.stats.steps
    assert torch.allclose(many.ys[:, 0], torch.exp(-ts_many), atol=1e-6)


def test_save_steps_returns_every_accepted_step():
    sol = nde.solve(_decay, torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 1.0]), save_steps=True)
    assert sol.step_ts.shape == (sol.stats.accepted,)
    assert sol.step_ys.shape == (sol.stats.accepted, 2)
    assert torch.all(sol.step_ts.diff() > 0)
    assert torch.allclose(sol.step_ys[:, 0], torch.exp(-sol.step_ts), rtol=1e-5)


@pytest.mark.parametrize("per_sample", [False, True])
def test_dense_output_evaluates_anywhere_in_the_interval(per_sample):
    y0 = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    sol = nde.solve(
        _decay, y0, torch.tensor([0.0, 2.0]), dense=True, rtol=1e-9, atol=1e-11, per_sample=per_sample
    )
    t = torch.tensor([0.0, 0.123, 1.0, 1.77, 2.0], dtype=torch.float64)
    out = sol.evaluate(t)
    exact = torch.exp(-t)[:, None, None] * y0 if not per_sample else (y0 * torch.exp(-t)).unsqueeze(-1)
    assert out.shape == exact.shape
    assert torch.allclose(out, exact, rtol=1e-7)


def test_dense_evaluate_without_dense_flag_says_how_to_enable_it():
    sol = nde.solve(_decay, torch.ones(1), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="dense=True"):
        sol.evaluate(0.5)


def test_step_ts_are_stepped_onto_exactly():
    stops = [0.25, 0.5, 0.8]
    ctrl = nde.PIDController(rtol=1e-6, atol=1e-8, step_ts=stops)
    sol = nde.solve(
        _decay, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 1.0]), controller=ctrl, save_steps=True
    )
    for s in stops:
        assert s in sol.step_ts.tolist()


def test_jump_ts_restore_accuracy_at_a_discontinuity():
    """f jumps at t = 0.5; with jump_ts the solver steps onto it and re-evaluates f after it."""

    def f(t, y):
        return torch.where(t < 0.5, torch.ones_like(y), -torch.ones_like(y)) * 3.0

    y0 = torch.zeros(1, dtype=torch.float64)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with_jump = nde.solve(f, y0, ts, controller=nde.PIDController(rtol=1e-8, atol=1e-10, jump_ts=[0.5]))
    without = nde.solve(f, y0, ts, rtol=1e-8, atol=1e-10)
    assert abs(float(with_jump.ys[-1])) < 1e-12
    assert with_jump.stats.steps < without.stats.steps


def test_constant_step_counts_are_exact():
    sol = nde.solve(_decay, torch.ones(1), torch.linspace(0, 1, 3), "rk4", dt=0.1)
    assert sol.stats.steps == 10
    assert sol.stats.nfe == 4 * 10  # f(t1, y1) is evaluated once, as the next step's first stage


def test_stats_count_rejections_and_nfe_consistently():
    sol = nde.solve(lambda t, y: 50 * torch.cos(50 * t) * y, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 3.0]),
                    "dopri5", rtol=1e-8, atol=1e-10)  # fmt: skip
    st = sol.stats
    assert st.steps == st.accepted + st.rejected
    assert st.rejected > 0
    assert st.nfe == 6 * st.steps + 2  # FSAL: 6 per step, plus f(t0) and the initial-step probe


def test_progress_bar_writes_to_stderr(capsys):
    nde.solve(_decay, torch.ones(1), torch.tensor([0.0, 1.0]), progress=True)
    err = capsys.readouterr().err
    assert "100.0%" in err


def test_default_max_steps_is_finite():
    with pytest.raises(nde.MaxStepsReached):
        nde.solve(_decay, torch.ones(1), torch.tensor([0.0, 1e6]), dt=1.0)
