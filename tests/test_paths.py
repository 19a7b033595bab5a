"""Paths from data (``torchnde.interpolation``): exactness, the natural spline against scipy,
missing values against torchcde 0.2.5 (a test oracle), causality, per-sample times, gradients
and the preprocessing helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.interpolate
import torch
import torchcde

import torchnde as nde

F64 = torch.float64
PATHS = [nde.LinearPath, nde.HermitePath, nde.CubicSplinePath]


def _irregular_times(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.cumsum(0.1 + torch.rand(n, generator=g, dtype=F64), 0)


def _grid(t: torch.Tensor, m: int = 41) -> torch.Tensor:
    return torch.linspace(float(t[0]), float(t[-1]), m, dtype=F64)


@pytest.mark.parametrize("cls", [*PATHS, nde.RectilinearPath])
def test_every_path_reproduces_a_line_and_its_slope(cls):
    t = _irregular_times(9)
    x = torch.stack([3 * t - 1, -0.5 * t + 2], -1).expand(2, -1, -1)  # [2, 9, 2]
    path = cls(x, t)
    grid = _grid(t)
    if cls is nde.RectilinearPath:  # lines are held, then moved: exact at the knots only
        values = torch.stack([path.evaluate(s) for s in t])
        assert torch.allclose(values.transpose(0, 1), x, atol=1e-12)
        return
    assert torch.allclose(path.values(grid), torch.stack([3 * grid - 1, -0.5 * grid + 2], -1), atol=1e-12)
    assert torch.allclose(
        path.values(grid, derivative=True), torch.tensor([3.0, -0.5], dtype=F64), atol=1e-12
    )


def test_linear_path_is_piecewise_linear_between_knots_and_exact_at_them():
    t = _irregular_times(6)
    x = torch.randn(3, 6, 2, dtype=F64)
    path = nde.LinearPath(x, t)
    mid = (t[2] + t[3]) / 2
    assert torch.allclose(path.evaluate(mid), (x[:, 2] + x[:, 3]) / 2, atol=1e-13)
    for i in range(6):
        assert torch.allclose(path.evaluate(t[i]), x[:, i], atol=1e-13)
    slope = (x[:, 3] - x[:, 2]) / (t[3] - t[2])
    assert torch.allclose(path.derivative(mid), slope, atol=1e-12)


def test_natural_cubic_spline_equals_scipy_to_1e_10():
    t = _irregular_times(12, seed=3)
    x = torch.randn(4, 12, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    path = nde.CubicSplinePath(x, t)
    spline = scipy.interpolate.CubicSpline(t.numpy(), x.numpy(), axis=1, bc_type="natural")
    grid = _grid(t, 101)
    for order, values in ((0, path.values(grid)), (1, path.values(grid, derivative=True))):
        np.testing.assert_allclose(values.numpy(), spline(grid.numpy(), order), atol=1e-10, rtol=0)


def test_natural_cubic_spline_is_twice_continuously_differentiable_at_the_knots():
    t = _irregular_times(7)
    x = torch.randn(7, 2, dtype=F64)
    path = nde.CubicSplinePath(x, t)
    c = path.coeffs  # [pieces, 4, channels] in powers of (t - t_i)
    h = (t[1:] - t[:-1]).view(-1, 1)
    left_second = 2 * c[:-1, 2] + 6 * c[:-1, 3] * h[:-1]
    assert torch.allclose(left_second, 2 * c[1:, 2], atol=1e-10)  # X'' continuous
    assert torch.allclose(c[0, 2], torch.zeros(2, dtype=F64), atol=1e-12)  # natural at the start
    assert torch.allclose(c[-1, 2] + 3 * c[-1, 3] * h[-1], torch.zeros(2, dtype=F64), atol=1e-10)


def test_hermite_slopes_at_the_knots_are_the_backward_differences():
    t = _irregular_times(6)
    x = torch.randn(6, 2, dtype=F64)
    path = nde.HermitePath(x, t)
    for i in range(1, 5):
        backward = (x[i] - x[i - 1]) / (t[i] - t[i - 1])
        just_before = t[i] - 1e-9
        assert torch.allclose(path.derivative(t[i]), backward, atol=1e-12)
        assert torch.allclose(path.derivative(just_before), backward, atol=1e-6)  # C1 across the knot


def test_hermite_path_up_to_a_knot_does_not_change_when_later_data_changes():
    t = _irregular_times(8)
    x = torch.randn(2, 8, 3, dtype=F64)
    later = x.clone()
    later[:, 5:] += torch.randn(2, 3, 3, dtype=F64)  # change everything after knot 4
    before, after = nde.HermitePath(x, t), nde.HermitePath(later, t)
    grid = torch.linspace(float(t[0]), float(t[4]), 50, dtype=F64)
    assert torch.equal(before.values(grid), after.values(grid))
    assert torch.equal(before.values(grid, derivative=True), after.values(grid, derivative=True))
    past = torch.linspace(float(t[4]) + 1e-3, float(t[-1]), 5, dtype=F64)
    assert not torch.allclose(before.values(past), after.values(past))  # the change is seen later


def test_rectilinear_path_moves_time_first_and_holds_the_last_observation():
    t = torch.tensor([0.0, 1.0, 3.0], dtype=F64)
    x = nde.with_time_channel(torch.tensor([[1.0], [math.nan], [4.0]], dtype=F64), t)
    path = nde.RectilinearPath(x, t, time_channel=0)
    assert torch.allclose(path.evaluate(0.5), torch.tensor([1.0, 1.0], dtype=F64))  # time at the midpoint
    assert torch.allclose(path.evaluate(1.0), torch.tensor([1.0, 1.0], dtype=F64))  # NaN held
    assert torch.allclose(path.evaluate(2.0), torch.tensor([3.0, 1.0], dtype=F64))  # time first
    assert torch.allclose(path.evaluate(2.5), torch.tensor([3.0, 2.5], dtype=F64))  # then the value
    assert torch.allclose(path.evaluate(3.0), torch.tensor([3.0, 4.0], dtype=F64))
    assert torch.equal(path.jump_ts, torch.tensor([0.5, 1.0, 2.0], dtype=F64))


def test_rectilinear_path_is_causal_at_the_knots():
    t = _irregular_times(7)
    x = torch.randn(7, 2, dtype=F64)
    x[2, 1] = math.nan
    later = x.clone()
    later[4:] = torch.randn(3, 2, dtype=F64)
    a, b = nde.RectilinearPath(x, t), nde.RectilinearPath(later, t)
    grid = torch.linspace(float(t[0]), float(t[3]), 30, dtype=F64)
    assert torch.equal(a.values(grid), b.values(grid))


def _missing(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[0, 0, 0] = x[0, 1, 0] = math.nan  # leading, in one channel
    x[0, 4, 1] = math.nan  # interior
    x[1, 6:, 0] = math.nan  # trailing
    x[1, 2:5, 1] = math.nan  # an interior run
    x[2, :, 1] = math.nan  # never observed
    x[3, 3, :] = math.nan  # a whole time step
    return x


@pytest.mark.parametrize(
    ("cls", "oracle"),
    [
        (
            nde.LinearPath,
            lambda x, t: torchcde.LinearInterpolation(torchcde.linear_interpolation_coeffs(x, t), t),
        ),
        (nde.CubicSplinePath, lambda x, t: torchcde.CubicSpline(torchcde.natural_cubic_coeffs(x, t), t)),
        (
            nde.HermitePath,
            lambda x, t: torchcde.CubicSpline(
                torchcde.hermite_cubic_coefficients_with_backward_differences(x, t), t
            ),
        ),
    ],
)
def test_missing_values_are_interpolated_per_channel_as_torchcde_does(cls, oracle):
    t = _irregular_times(8, seed=2)
    x = _missing(torch.randn(4, 8, 2, dtype=F64, generator=torch.Generator().manual_seed(4)))
    ours, theirs = cls(x, t), oracle(x, t)
    for s in _grid(t, 37)[:-1]:  # torchcde's linear derivative at the last knot reads past the end
        assert torch.allclose(ours.evaluate(s), theirs.evaluate(s), atol=1e-12)
        assert torch.allclose(ours.derivative(s), theirs.derivative(s), atol=1e-11)
    assert torch.equal(ours.evaluate(t[3])[2, 1], torch.tensor(0.0, dtype=F64))  # never observed: zero


def test_the_spline_through_missing_values_passes_through_each_channels_observations_only():
    t = _irregular_times(9)
    x = torch.randn(9, 2, dtype=F64)
    x[[2, 5], 0] = math.nan
    path = nde.CubicSplinePath(x, t)
    keep = [i for i in range(9) if i not in (2, 5)]
    spline = scipy.interpolate.CubicSpline(t[keep].numpy(), x[keep, 0].numpy(), bc_type="natural")
    grid = _grid(t)
    np.testing.assert_allclose(path.values(grid)[:, 0].numpy(), spline(grid.numpy()), atol=1e-10)


@pytest.mark.parametrize("cls", PATHS)
def test_per_sample_times_give_each_sample_its_own_path(cls):
    t = torch.stack([_irregular_times(6, seed=s) for s in range(3)])  # [3, 6]
    x = torch.randn(3, 6, 2, dtype=F64)
    batched = cls(x, t)
    s = torch.stack([t[0, 2] + 0.05, t[1, 4] - 0.05, t[2, 1]])  # one time per sample
    for b in range(3):
        alone = cls(x[b], t[b])
        assert torch.allclose(batched.evaluate(s)[b], alone.evaluate(s[b]), atol=1e-12)
        assert torch.allclose(batched.derivative(s)[b], alone.derivative(s[b]), atol=1e-12)
        assert torch.allclose(batched.evaluate(s[1])[b], alone.evaluate(s[1]), atol=1e-12)


@pytest.mark.parametrize("cls", PATHS)
def test_paths_are_differentiable_with_respect_to_the_data(cls):
    t = _irregular_times(5)
    x = torch.randn(2, 5, 2, dtype=F64, requires_grad=True)
    s = torch.tensor([0.7, 1.3], dtype=F64)

    def both(x):
        path = cls(x, t)
        return path.evaluate(s), path.derivative(t[2] + 0.01)

    assert torch.autograd.gradcheck(both, (x,))


def test_which_knots_the_solver_must_land_on_follows_the_smoothness():
    t = _irregular_times(5)
    x = torch.randn(5, 1, dtype=F64)
    assert torch.equal(nde.LinearPath(x, t).jump_ts, t[1:-1])
    assert nde.LinearPath(x, t).step_ts is None
    assert torch.equal(nde.HermitePath(x, t).step_ts, t[1:-1])
    assert nde.HermitePath(x, t).jump_ts is None
    spline = nde.CubicSplinePath(x, t)
    assert spline.step_ts is None and spline.jump_ts is None


def test_evaluation_outside_the_data_extends_the_end_pieces():
    t = torch.tensor([0.0, 1.0, 2.0], dtype=F64)
    path = nde.LinearPath(torch.tensor([[0.0], [1.0], [3.0]], dtype=F64), t)
    assert torch.allclose(path.evaluate(-1.0), torch.tensor([-1.0], dtype=F64))
    assert torch.allclose(path.evaluate(3.0), torch.tensor([5.0], dtype=F64))


def test_helpers_add_time_counts_and_fill_forward():
    t = torch.tensor([0.0, 0.5, 2.0])
    x = torch.tensor([[[math.nan, 1.0], [2.0, math.nan], [math.nan, 3.0]]])
    timed = nde.with_time_channel(x, t)
    assert timed.shape == (1, 3, 3) and torch.equal(timed[0, :, 0], t)
    counts = nde.with_observation_counts(x)[0, :, 2:]
    assert torch.equal(counts, torch.tensor([[0.0, 1.0], [1.0, 1.0], [1.0, 2.0]]))
    filled = nde.forward_fill(x)[0]
    assert torch.isnan(filled[0, 0]) and filled[1, 0] == 2.0 and filled[2, 0] == 2.0
    assert torch.equal(filled[:, 1], torch.tensor([1.0, 1.0, 3.0]))


@pytest.mark.parametrize(
    ("x", "t", "kwargs", "match"),
    [
        (torch.zeros(5), None, {}, "shape \\[\\*batch, time, channels\\]"),
        (torch.zeros(1, 2), None, {}, "at least two observations"),
        (torch.zeros(3, 2), torch.tensor([0.0, 2.0, 1.0]), {}, "strictly increasing"),
        (torch.zeros(3, 2), torch.tensor([0.0, 1.0]), {}, "t must have shape"),
        (torch.zeros(3, 2, dtype=torch.int64), None, {}, "floating tensor"),
    ],
)
def test_bad_data_is_rejected_with_a_message_naming_the_fix(x, t, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        nde.LinearPath(x, t, **kwargs)


def test_rectilinear_rejects_a_time_channel_out_of_range():
    with pytest.raises(ValueError, match="time_channel"):
        nde.RectilinearPath(torch.zeros(3, 2), time_channel=5)


def test_per_sample_evaluation_needs_the_batch_shape():
    path = nde.LinearPath(torch.zeros(4, 3, 2))
    with pytest.raises(ValueError, match="batch shape"):
        path.evaluate(torch.zeros(3))


@pytest.mark.parametrize("cls", [*PATHS, nde.RectilinearPath])
def test_a_float_time_evaluates_the_same_piece_as_a_tensor_time(cls):
    # floats (the loop's host times) find their piece by bisection on the host, tensors by
    # searchsorted: the same values at knots, between them and outside the grid
    t = _irregular_times(7, seed=4)
    x = torch.randn(3, 7, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    path = cls(x, t)
    times = [float(t[0]) - 0.3, *t.tolist(), *((t[:-1] + t[1:]) / 2).tolist(), float(t[-1]) + 0.4]
    for s in times:
        tensor_time = torch.tensor(s, dtype=F64)
        assert torch.allclose(path.derivative(s), path.derivative(tensor_time), rtol=0, atol=1e-13), s
        assert torch.allclose(path.evaluate(s), path.evaluate(tensor_time), rtol=0, atol=1e-13), s


def test_a_float_time_on_per_sample_grids_evaluates_each_sample_on_its_own_grid():
    t = torch.stack([_irregular_times(5, seed=1), _irregular_times(5, seed=2)])  # [2, 5]
    x = torch.randn(2, 5, 1, dtype=F64, generator=torch.Generator().manual_seed(3))
    path = nde.LinearPath(x, t)
    s = float(t[:, 2].max()) + 0.01
    alone = [nde.LinearPath(x[b], t[b]).derivative(s) for b in range(2)]
    assert torch.allclose(path.derivative(s), torch.stack(alone), rtol=0, atol=1e-14)


def test_knots_are_every_samples_interior_knots_sorted_once():
    t = torch.tensor([[0.0, 1.0, 2.5, 4.0], [0.0, 2.5, 3.0, 4.0]], dtype=F64)
    path = nde.CubicSplinePath(torch.randn(2, 4, 1, dtype=F64), t)
    assert path.knots.tolist() == [1.0, 2.5, 3.0]
    assert path.knots.dtype == F64 and path.knots.device.type == "cpu"
    assert nde.HermitePath(torch.randn(4, 1, dtype=F64), t[0]).step_ts.tolist() == [1.0, 2.5]
