"""The fixed-point root-finders (``torchnde.solvers.FixedPoint``): each method reaches its
tolerance, the result reports the truth about the solve, the fallback takes over, and a map
without a fixed point is reported as warned, raised or ignored."""

from __future__ import annotations

import warnings

import pytest
import torch

from torchnde.solvers import FixedPoint, FixedPointError, FixedPointWarning, relative_residual

D64 = torch.float64


def _tanh_layer(dim: int = 24, batch: int = 6, gain: float = 0.8):
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(dim, dim, generator=gen, dtype=D64) * gain / dim**0.5
    x = torch.randn(batch, dim, generator=gen, dtype=D64)
    return (lambda z: torch.tanh(z @ W.T + x)), torch.zeros(batch, dim, dtype=D64)


@pytest.mark.parametrize("method", ["anderson", "broyden", "damped"])
def test_each_method_reaches_the_tolerance_and_reports_the_true_residual(method):
    f, z0 = _tanh_layer()
    result = FixedPoint(method, tol=1e-8, max_iter=300, fallback=None).solve(f, z0)
    recomputed = relative_residual(f(result.z), result.z)
    assert result.converged and result.method == method
    assert float(recomputed.max()) <= 1e-8
    torch.testing.assert_close(result.residuals, recomputed)
    assert result.residual == pytest.approx(float(recomputed.max()))
    assert len(result.history) == result.iterations and result.history[-1] <= 1e-8


def test_anderson_and_broyden_need_fewer_evaluations_than_damped_iteration():
    f, z0 = _tanh_layer(gain=0.95)
    counts = {
        m: FixedPoint(m, tol=1e-8, max_iter=500, fallback=None).solve(f, z0).iterations
        for m in ("anderson", "broyden", "damped")
    }
    assert counts["anderson"] < counts["damped"] / 2 and counts["broyden"] < counts["damped"] / 2


def test_a_linear_map_has_its_closed_form_fixed_point():
    A = torch.tensor([[0.5, 0.2], [-0.1, 0.3]], dtype=D64)
    b = torch.tensor([[1.0, 2.0], [-1.0, 0.5]], dtype=D64)
    exact = torch.linalg.solve(torch.eye(2, dtype=D64) - A, b.T).T
    for method in ("anderson", "broyden"):
        result = FixedPoint(method, tol=1e-12).solve(lambda z: z @ A.T + b, torch.zeros(2, 2, dtype=D64))
        torch.testing.assert_close(result.z, exact, rtol=1e-10, atol=1e-10)


def test_the_fallback_continues_from_the_best_estimate_when_the_method_runs_out():
    f, z0 = _tanh_layer()
    result = FixedPoint("anderson", tol=1e-8, max_iter=2, fallback="damped", fallback_iter=400).solve(f, z0)
    assert result.method == "anderson+damped" and result.converged
    assert result.iterations > 2 and result.residual <= 1e-8


def test_a_map_without_a_fixed_point_is_reported_not_converged():
    shift = lambda z: z + 1.0  # noqa: E731  (no fixed point)
    z0 = torch.zeros(3, 2, dtype=D64)
    solver = FixedPoint("broyden", tol=1e-6, max_iter=10, fallback="anderson", on_failure="ignore")
    result = solver.solve(shift, z0)
    assert not result.converged and result.iterations == 20 and result.method == "broyden+anderson"
    assert result.residual == pytest.approx(float(relative_residual(shift(result.z), result.z).max()))
    assert result.residual > 1e-6
    with pytest.warns(FixedPointWarning, match="did not converge.*max_iter"):
        FixedPoint(tol=1e-6, max_iter=5).solve(shift, z0)
    with pytest.raises(FixedPointError, match="relative residual") as info:
        FixedPoint(tol=1e-6, max_iter=5, on_failure="raise").solve(shift, z0)
    assert not info.value.result.converged
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FixedPoint(tol=1e-6, max_iter=5, on_failure="ignore").solve(shift, z0)


def test_non_finite_iterates_stop_the_method_and_keep_the_last_finite_estimate():
    explode = lambda z: 1e300 * (z + 1.0)  # noqa: E731
    result = FixedPoint("damped", tol=1e-6, max_iter=50, fallback=None, on_failure="ignore").solve(
        explode, torch.zeros(2, 3, dtype=D64)
    )
    assert not result.converged and torch.isfinite(result.z).all() and result.iterations < 50


def test_unknown_methods_and_bad_options_are_errors_that_name_the_valid_ones():
    with pytest.raises(ValueError, match="Did you mean 'anderson'"):
        FixedPoint("andersen")
    with pytest.raises(ValueError, match="anderson, broyden, damped"):
        FixedPoint(fallback="newton")
    with pytest.raises(ValueError, match="on_failure"):
        FixedPoint(on_failure="panic")
    with pytest.raises(TypeError):
        FixedPoint(window=3)  # type: ignore[call-arg]
    for bad in ({"tol": 0.0}, {"max_iter": 0}, {"memory": 0}, {"damping": 1.5}, {"ridge": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            FixedPoint(**bad)
    with pytest.raises(ValueError, match="batch"):
        FixedPoint().solve(lambda z: z, torch.zeros(()))
