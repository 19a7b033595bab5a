"""Per-sample mode: every sample is its own problem, and the batch changes nothing."""

from __future__ import annotations

import pytest
import torch

import torchnde as nde

from .helpers import piecewise_jump_exact

RATES = torch.tensor([0.1, 1.0, 10.0, 40.0], dtype=torch.float64)


def _decay(t, y):
    return -RATES.view(-1, *([1] * (y.ndim - 1)))[: y.shape[0]] * y


@pytest.mark.parametrize("name", ["dopri5", "tsit5", "bosh3", "dopri8", "heun"])
def test_batched_solve_equals_each_sample_alone(name):
    """Same steps, same stats and the same values (to round-off) as solving each sample alone."""
    y0 = torch.tensor([[1.0, 2.0], [0.5, -1.0], [3.0, 0.1], [1.0, 1.0]], dtype=torch.float64)

    def f(t, y):
        return torch.sin(t) * y - 0.2 * y**3

    ts = torch.linspace(0, 3, 6, dtype=torch.float64)
    tol = (
        {"rtol": 1e-5, "atol": 1e-7} if name == "heun" else {"rtol": 1e-7, "atol": 1e-9}
    )  # 2nd order: fewer steps
    batch = nde.solve(f, y0, ts, name, **tol, per_sample=True)
    for i in range(len(y0)):
        alone = nde.solve(f, y0[i : i + 1], ts, name, **tol, per_sample=True)
        assert torch.allclose(batch.ys[:, i], alone.ys[:, 0], rtol=1e-12, atol=1e-13)
        assert int(batch.stats.steps[i]) == int(alone.stats.steps[0])
        assert int(batch.stats.nfe[i]) == int(alone.stats.nfe[0])


def test_samples_take_different_numbers_of_steps():
    y0 = torch.ones(4, 1, dtype=torch.float64)
    sol = nde.solve(_decay, y0, torch.tensor([0.0, 1.0]), per_sample=True)
    steps = sol.stats.steps.tolist()
    assert steps == sorted(steps) and steps[0] < steps[-1]
    assert torch.allclose(sol.ys[-1, :, 0], torch.exp(-RATES), rtol=1e-4, atol=1e-8)


def test_per_sample_time_spans():
    y0 = torch.ones(3, 2, dtype=torch.float64)
    ts = torch.tensor([[0.0, 0.5, 1.0], [1.0, 2.0, 4.0], [-1.0, 0.0, 0.1]], dtype=torch.float64)
    sol = nde.solve(lambda t, y: -y, y0, ts, per_sample=True, rtol=1e-9, atol=1e-11)
    exact = torch.exp(-(ts - ts[:, :1])).T.unsqueeze(-1).expand(3, 3, 2)
    assert torch.allclose(sol.ys, exact, rtol=1e-7)


def test_time_is_passed_per_sample_and_broadcasts_like_a_scalar():
    """f written for a scalar t works per sample: t arrives as [B, 1, ..., 1]."""
    shapes = []

    def f(t, y):
        shapes.append(tuple(t.shape))
        return torch.cos(t) * y

    y0 = torch.ones(3, 2, 2, dtype=torch.float64)
    sol = nde.solve(f, y0, torch.tensor([0.0, 1.0]), per_sample=True, rtol=1e-9, atol=1e-11)
    assert shapes[0] == (3, 1, 1)
    assert torch.allclose(sol.ys[-1], torch.full_like(y0, torch.e ** torch.sin(torch.tensor(1.0)).item()))


def test_image_shaped_states_work_per_sample():
    y0 = torch.randn(5, 3, 8, 8)
    sol = nde.solve(lambda t, y: -y, y0, torch.linspace(0, 1, 4), per_sample=True)
    assert sol.ys.shape == (4, 5, 3, 8, 8)
    assert torch.allclose(sol.ys[-1], y0 * torch.exp(torch.tensor(-1.0)), rtol=1e-4, atol=1e-6)


def test_tuple_states_work_per_sample():
    def f(t, y):
        x, v = y
        return v, -x

    y0 = (torch.tensor([[1.0], [2.0]], dtype=torch.float64), torch.zeros(2, 1, dtype=torch.float64))
    sol = nde.solve(f, y0, torch.tensor([0.0, 1.0]), per_sample=True, rtol=1e-10, atol=1e-12)
    assert torch.allclose(
        sol.ys[0][-1, :, 0],
        torch.tensor([1.0, 2.0], dtype=torch.float64) * torch.cos(torch.tensor(1.0, dtype=torch.float64)),
    )


def test_a_failing_sample_does_not_stop_the_others():
    def f(t, y):
        blow = torch.tensor([1.0, 0.0, 1.0], dtype=y.dtype).view(3, 1)
        return blow * y**2 - (1 - blow) * y  # samples 0 and 2 blow up at t = 1

    y0 = torch.ones(3, 1, dtype=torch.float64)
    sol = nde.solve(f, y0, torch.tensor([0.0, 0.5, 2.0]), per_sample=True, throw=False)
    status = sol.status.tolist()
    assert status[1] == nde.Status.SUCCESS
    assert status[0] != nde.Status.SUCCESS and status[2] != nde.Status.SUCCESS
    assert torch.isclose(sol.ys[-1, 1, 0], torch.exp(torch.tensor(-2.0, dtype=torch.float64)), rtol=1e-5)
    assert torch.isnan(sol.ys[-1, 0, 0]) and torch.isclose(
        sol.ys[1, 0, 0], torch.tensor(2.0, dtype=torch.float64)
    )


def test_per_sample_stats_are_tensors_of_the_batch_size():
    sol = nde.solve(_decay, torch.ones(4, 1, dtype=torch.float64), torch.tensor([0.0, 1.0]), per_sample=True)
    for value in sol.stats.as_dict().values():
        assert isinstance(value, torch.Tensor) and value.shape == (4,)
    assert torch.equal(sol.stats.steps, sol.stats.accepted + sol.stats.rejected)


def test_fixed_step_per_sample_matches_global():
    y0 = torch.randn(4, 3, dtype=torch.float64)
    ts = torch.linspace(0, 1, 5, dtype=torch.float64)
    a = nde.solve(lambda t, y: -y * t, y0, ts, "rk4", dt=0.01)
    b = nde.solve(lambda t, y: -y * t, y0, ts, "rk4", dt=0.01, per_sample=True)
    assert torch.allclose(a.ys, b.ys, rtol=1e-13, atol=1e-14)


def test_save_steps_per_sample_is_padded_with_nan():
    sol = nde.solve(
        _decay,
        torch.ones(4, 1, dtype=torch.float64),
        torch.tensor([0.0, 1.0]),
        per_sample=True,
        save_steps=True,
    )
    assert sol.step_ts.shape[1] == 4
    valid = ~torch.isnan(sol.step_ts)
    assert valid.sum(0).tolist() == sol.stats.accepted.tolist()


def test_finished_samples_leave_the_batch():
    """Once at most half the samples still run, f is called on those alone; the results are
    those of solving each sample alone."""
    batches = []

    def f(t, y):
        batches.append(y.shape[0])
        return torch.cos(t) * y - 0.1 * y**3

    y0 = torch.linspace(0.5, 1.5, 8, dtype=torch.float64).view(8, 1)
    ends = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 4.0, 4.0], dtype=torch.float64)
    ts = torch.stack([torch.linspace(0, 1, 5, dtype=torch.float64) * e for e in ends])
    sol = nde.solve(f, y0, ts, per_sample=True, rtol=1e-9, atol=1e-11)
    assert batches[0] == 8 and min(batches) <= 2
    for i in (0, 6, 7):
        alone = nde.solve(f, y0[i : i + 1], ts[i : i + 1], per_sample=True, rtol=1e-9, atol=1e-11)
        assert torch.allclose(sol.ys[:, i], alone.ys[:, 0], rtol=1e-12, atol=1e-14)
        assert int(sol.stats.nfe[i]) == int(alone.stats.nfe[0])
        assert int(sol.stats.steps[i]) == int(alone.stats.steps[0])


def test_a_field_with_per_sample_parameters_keeps_the_full_batch():
    """f closing over per-sample tensors cannot run on a sub-batch: the solve notices and keeps
    every row, so the answer stays right."""
    rates = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 3.0, 5.0], dtype=torch.float64).view(8, 1)
    batches = []

    def f(t, y):
        batches.append(y.shape[0])
        return -rates[: y.shape[0]] * y  # silently wrong on a sub-batch: caught by the check

    ends = torch.tensor([0.5] * 6 + [4.0, 4.0], dtype=torch.float64)
    ts = torch.stack([torch.linspace(0, 1, 3, dtype=torch.float64) * e for e in ends])
    sol = nde.solve(f, torch.ones(8, 1, dtype=torch.float64), ts, per_sample=True, rtol=1e-9, atol=1e-11)
    assert set(batches[1:]) <= {8, 2}  # the one verifying call on the sub-batch, then full batches
    assert torch.allclose(sol.ys[-1, :, 0], torch.exp(-rates[:, 0] * ends), rtol=1e-7)


def test_step_ts_and_jump_ts_work_per_sample():
    """f jumps at t = 0.5 for every sample; with jump_ts each sample steps onto it and
    re-evaluates f after it, so piecewise-constant dynamics are integrated exactly."""

    def f(t, y):
        return torch.where(t < 0.5, torch.ones_like(y), -torch.ones_like(y)) * 3.0

    y0 = torch.zeros(3, 1, dtype=torch.float64)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)
    ctrl = nde.PIDController(rtol=1e-8, atol=1e-10, jump_ts=[0.5], step_ts=[0.25])
    sol = nde.solve(f, y0, ts, controller=ctrl, per_sample=True, save_steps=True)
    assert sol.ys[-1].abs().max() < 1e-12
    for i in range(3):
        stepped = sol.step_ts[:, i][~torch.isnan(sol.step_ts[:, i])].tolist()
        assert 0.25 in stepped and any(abs(t - 0.5) < 1e-15 for t in stepped)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backwards", [False, True])
def test_jump_ts_save_evaluations_per_sample_in_both_dtypes(dtype, backwards):
    """Issue 13, bug 3: the step before a jump ended at the jump's float64 neighbour, which
    rounds onto the jump in float32 (f saw its far side, the step was rejected again and again);
    the ends are now the jump's neighbours in the state's dtype."""
    calls = [0]

    def f(t, y):
        calls[0] += 1
        return torch.where(t < 0.1, 1.0, -1.0).to(y.dtype) + 0.1 * y

    y0 = torch.ones(3, 2, dtype=dtype)
    ts = torch.tensor([1.0, 0.0] if backwards else [0.0, 1.0], dtype=dtype)
    evaluations, ends = [], []
    for jumps in (None, [0.1]):
        calls[0] = 0
        ctrl = nde.PIDController(rtol=1e-7, atol=1e-9, jump_ts=jumps)
        ends.append(nde.solve(f, y0, ts, "dopri5", controller=ctrl, per_sample=True).ys[-1])
        evaluations.append(calls[0])
    assert evaluations[1] < evaluations[0] / 2, evaluations
    exact = piecewise_jump_exact(0.1, backwards)
    assert torch.allclose(ends[1].double(), torch.full_like(ends[1], exact, dtype=torch.float64),
                          rtol=1e-5 if dtype == torch.float32 else 1e-7)  # fmt: skip
