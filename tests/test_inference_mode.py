"""Solves under ``torch.inference_mode`` leave nothing behind that breaks a later solve that
records a graph: the solvers' cached constants (tableau rows, interpolation matrices, scalar
tolerances) are created outside inference mode whatever the first solve ran under."""

from __future__ import annotations

import pytest
import torch

import torchnde as nde
from torchnde._loop import error_norm
from torchnde.solvers import explicit_rk

from .helpers import GENERAL_SOLVERS, PAIR_SOLVERS


def _clear_constant_caches(solver: nde.solvers.AbstractSolver) -> None:
    explicit_rk._COEFFICIENTS.clear()
    explicit_rk._EXTRA.clear()
    error_norm.scalar.cache_clear()
    try:
        poly = solver.dense_polynomial
    except NotImplementedError:  # reversible_heun steps onto its outputs
        poly = None
    for name in ("_matrix_cache", "_matrix_t_cache"):
        if poly is not None:
            poly.__dict__.pop(name, None)
    getattr(solver, "_rows", {}).clear()


def _field() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    lin = torch.nn.Linear(2, 2).double()
    with torch.no_grad():
        lin.weight.mul_(0.5)
    return lin, torch.randn(3, 2, dtype=torch.float64)


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("name", GENERAL_SOLVERS)
def test_a_solve_with_grad_works_after_the_first_solve_ran_in_inference_mode(name, per_sample):
    solver = nde.solvers.resolve_solver(name)
    if per_sample and not solver.supports_per_sample:
        pytest.skip(f"{name} runs in the global layout only")
    _clear_constant_caches(solver)
    lin, y0 = _field()
    ts = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    options = {"dt": 0.05} if not solver.adaptive else {"rtol": 1e-6, "atol": 1e-8}
    with torch.inference_mode():
        reference = nde.solve(lambda t, y: lin(y), y0, ts, solver, per_sample=per_sample, **options).ys
    sol = nde.solve(lambda t, y: lin(y), y0, ts, solver, per_sample=per_sample, **options)
    sol.ys.sum().backward()
    assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()
    # implicit solves take other Newton/Jacobian paths when recording: equal to the tolerance
    torch.testing.assert_close(sol.ys.detach(), reference.clone(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", PAIR_SOLVERS)
def test_separable_pair_solvers_work_with_grad_after_inference_mode(name):
    solver = nde.solvers.resolve_solver(name)
    _clear_constant_caches(solver)
    k = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    q0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    p0 = torch.tensor([0.0, 1.0], dtype=torch.float64)
    ts = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)

    def f(t, y):
        q, p = y
        return p, -k * q

    with torch.inference_mode():
        nde.solve(f, (q0, p0), ts, solver, dt=0.05)
    q, p = nde.solve(f, (q0, p0), ts, solver, dt=0.05).ys
    (q.sum() + p.sum()).backward()
    assert k.grad is not None and torch.isfinite(k.grad)
