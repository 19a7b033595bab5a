"""Controllers own their rule: one rule serves both layouts, users can write their own by
subclassing, and step_ts/jump_ts make steps land on known times."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import pytest
import torch

import torchnde as nde
from torchnde.controllers import AbstractController, clip, where

DTYPE = torch.float64
MAX_STEP = 0.05


@dataclass(frozen=True)
class MaxStep(nde.PIDController):
    """The PID rule, with every step clipped to MAX_STEP (floats or tensors alike)."""

    def adapt(self, err: Any, h: Any, memory: Any, ok: Any = True) -> tuple[Any, Any]:
        accept, dt = super().adapt(err, h, memory, ok)
        return accept, clip(dt, 0.0, MAX_STEP)


@dataclass(frozen=True)
class Doubling(AbstractController):
    """A rule written from scratch: accept at err <= 1 and double, else halve."""

    rtol: float = 1e-7
    atol: float = 1e-9
    dt_first: float = 1e-3

    def start(self, solver, func, s0, y0, f0, error_norm):
        return (torch.full_like(s0, self.dt_first) if isinstance(s0, torch.Tensor) else self.dt_first), None

    def adapt(self, err, h, memory, ok=True):
        accept = (err <= 1.0) & ok
        return accept, h * where(accept, 2.0, 0.5)


def _decay(t, y):
    return -y


def _steps_of(sol, sample=None):
    ts = sol.step_ts if sample is None else sol.step_ts[:, sample]
    ts = ts[~torch.isnan(ts)]
    return torch.cat([torch.zeros(1, dtype=ts.dtype), ts]).diff()


def test_a_user_controller_clips_the_step_in_the_global_layout():
    y0 = torch.ones(3, dtype=DTYPE)
    sol = nde.solve(_decay, y0, torch.tensor([0.0, 2.0], dtype=DTYPE), controller=MaxStep(1e-6, 1e-8),
                    save_steps=True)  # fmt: skip
    free = nde.solve(_decay, y0, torch.tensor([0.0, 2.0], dtype=DTYPE), rtol=1e-6, atol=1e-8)
    assert free.stats.accepted < 2.0 / MAX_STEP  # unclipped, steps are longer
    assert float(_steps_of(sol).max()) <= MAX_STEP * (1 + 1e-8)
    assert sol.stats.accepted >= 2.0 / MAX_STEP
    assert torch.allclose(sol.ys[-1], y0 * math.exp(-2.0), rtol=1e-6)


def test_a_user_controller_clips_the_step_per_sample():
    y0 = torch.tensor([[1.0], [2.0], [-1.0]], dtype=DTYPE)
    ts = torch.tensor([0.0, 2.0], dtype=DTYPE)
    sol = nde.solve(_decay, y0, ts, controller=MaxStep(1e-6, 1e-8), per_sample=True, save_steps=True)
    for i in range(3):
        assert float(_steps_of(sol, i).max()) <= MAX_STEP * (1 + 1e-8)
        alone = nde.solve(_decay, y0[i], ts, controller=MaxStep(1e-6, 1e-8))
        assert int(sol.stats.accepted[i]) == alone.stats.accepted
        assert torch.allclose(sol.ys[-1, i], alone.ys[-1], rtol=1e-12)


@pytest.mark.parametrize("per_sample", [False, True])
def test_a_controller_written_from_scratch_works_in_both_layouts(per_sample):
    y0 = torch.tensor([[1.0, 0.5]], dtype=DTYPE) if per_sample else torch.tensor([1.0, 0.5], dtype=DTYPE)
    sol = nde.solve(_decay, y0, torch.linspace(0, 1, 5, dtype=DTYPE), "dopri5", controller=Doubling(),
                    per_sample=per_sample)  # fmt: skip
    want = y0 * torch.exp(-torch.linspace(0, 1, 5, dtype=DTYPE)).view(-1, *([1] * y0.ndim))
    assert torch.allclose(sol.ys, want, rtol=1e-6)
    assert int(sol.stats.rejected if not per_sample else sol.stats.rejected[0]) >= 0


def test_controllers_are_checked_at_the_boundary():
    with pytest.raises(TypeError, match="AbstractController"):
        nde.solve(_decay, torch.ones(1), torch.tensor([0.0, 1.0]), controller=object())


def _jump(t, y):
    return torch.where(t < 0.5, torch.ones_like(y), -torch.ones_like(y)) * 3.0


@pytest.mark.parametrize(
    "make", [lambda **kw: nde.ConstantStep(0.3, **kw), lambda **kw: nde.PIDController(1e-8, 1e-10, **kw)]
)
def test_a_known_jump_is_solved_to_tolerance_only_when_listed(make):
    """y' = 3 before t = 0.5 and -3 after: y(1) = 0. With jump_ts the steps land on the jump and
    f is evaluated on its right side after it; without, a step straddles it."""
    y0, ts = torch.zeros(1, dtype=DTYPE), torch.tensor([0.0, 1.0], dtype=DTYPE)
    listed = nde.solve(_jump, y0, ts, "rk4" if isinstance(make(), nde.ConstantStep) else "dopri5",
                       controller=make(jump_ts=[0.5]))  # fmt: skip
    assert abs(float(listed.ys[-1])) < 1e-10
    if isinstance(make(), nde.ConstantStep):
        unlisted = nde.solve(_jump, y0, ts, "rk4", controller=make())
        assert abs(float(unlisted.ys[-1])) > 1e-2  # a step straddles the jump: first-order error
    else:
        unlisted = nde.solve(_jump, y0, ts, "dopri5", controller=make())
        assert unlisted.stats.steps > listed.stats.steps  # found only by repeated rejections


@pytest.mark.parametrize("per_sample", [False, True])
def test_step_ts_are_landed_on_in_both_layouts(per_sample):
    stops = [0.25, 0.5, 0.8]
    y0 = torch.ones(2, 1, dtype=DTYPE) if per_sample else torch.ones(1, dtype=DTYPE)
    ctrl = nde.PIDController(rtol=1e-6, atol=1e-8, step_ts=stops)
    sol = nde.solve(_decay, y0, torch.tensor([0.0, 1.0], dtype=DTYPE), controller=ctrl, save_steps=True,
                    per_sample=per_sample)  # fmt: skip
    stepped = sol.step_ts[:, 0] if per_sample else sol.step_ts
    for s in stops:
        assert s in stepped.tolist()


@dataclass(frozen=True)
class PastTheEnd(nde.PIDController):
    """The PID rule, its last step taken whole past the final time (torchdiffeq's way)."""

    land_on_end: bool = False


@pytest.mark.parametrize("backwards", [False, True])
def test_land_on_end_false_steps_past_the_final_time_and_interpolates_back(backwards):
    """The last step is the controller's, not one shortened onto t1; the outputs, t1's included,
    come from the dense output, to tolerance, and every other step is the same as landing's."""
    ts = torch.tensor([1.0, 0.3, 0.0] if backwards else [0.0, 0.7, 1.0], dtype=DTYPE)
    y0 = torch.tensor([1.0, -2.0], dtype=DTYPE)
    past = nde.solve(_decay, y0, ts, controller=PastTheEnd(1e-8, 1e-10), save_steps=True)
    landed = nde.solve(_decay, y0, ts, controller=nde.PIDController(1e-8, 1e-10), save_steps=True)
    sign = -1.0 if backwards else 1.0
    assert float(sign * (past.step_ts[-1] - ts[-1])) > 0 and float(landed.step_ts[-1]) == float(ts[-1])
    assert torch.equal(past.step_ts[:-1], landed.step_ts[:-1]) and past.stats.steps == landed.stats.steps
    exact = y0 * torch.exp(ts[0] - ts)[:, None]
    assert torch.allclose(past.ys, exact, rtol=1e-7, atol=0)
    assert not torch.equal(past.ys[-1], landed.ys[-1])  # interpolated, not stepped onto


def test_land_on_end_false_is_refused_where_the_loop_cannot_step_past_the_end():
    ts = torch.tensor([0.0, 1.0], dtype=DTYPE)
    with pytest.raises(ValueError, match="land_on_end=False"):
        nde.solve(_decay, torch.ones(2, 1, dtype=DTYPE), ts, controller=PastTheEnd(), per_sample=True)
    with pytest.raises(ValueError, match="land_on_end=False"):
        nde.solve(_decay, torch.ones(1, dtype=DTYPE), ts, controller=PastTheEnd(),
                  event=nde.Event(lambda t, y: y[0] - 0.5))  # fmt: skip


def test_on_dtmin_accept_takes_steps_of_dtmin_and_counts_them_in_both_layouts():
    ctrl = nde.PIDController(rtol=1e-13, atol=1e-13, dtmin=0.1, on_dtmin="accept")
    y0 = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    ts = torch.linspace(0, 1, 3, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match=r"10 step\(s\) were accepted at the minimum step size dtmin=0.1"):
        sol = nde.solve(lambda t, y: -y, y0, ts, solver="tsit5", controller=ctrl)
    assert sol.stats.forced == sol.stats.accepted == 10 and sol.stats.rejected == 0
    assert torch.allclose(sol.ys[-1], y0 * math.exp(-1.0), rtol=1e-5)
    with pytest.warns(RuntimeWarning, match=r"20 step\(s\)"):
        per = nde.solve(lambda t, y: -y, y0, ts, solver="tsit5", controller=ctrl, per_sample=True)
    assert per.stats.forced.tolist() == [10, 10] and per.stats.accepted.tolist() == [10, 10]
    assert torch.allclose(per.ys, sol.ys, rtol=0, atol=1e-12)
    fail = nde.solve(
        lambda t, y: -y, y0, ts, controller=dataclasses.replace(ctrl, on_dtmin="fail"), throw=False
    )
    assert fail.status == nde.Status.DT_MIN and fail.stats.forced == 0
