"""How the implicit solvers get df/dy: autograd (one backward pass per row through the engine
for tiny states, one vectorised pass beyond), or ``jacobian="fd"``, forward differences of ``f``
(scipy's default).

Autograd's two ways give the same matrix. The forward-difference one agrees with autograd's to
the order of the square root of the unit roundoff, costs ``N`` evaluations of ``f`` (``N + 1``
without a known ``f(t, y)``), and a solve with it takes the autograd solve's steps to within
its tolerance; unknown names are errors that list the valid ones.
"""

from __future__ import annotations

import pytest
import torch

import torchnde as nde
from torchnde.solvers import jacobian as jacobian_module
from torchnde.solvers.jacobian import ROW_BY_ROW, finite_difference_jacobian, jacobians

F64 = torch.float64


def robertson(t, y):
    a, b, c = y.unbind(-1)
    return torch.stack([-0.04 * a + 1e4 * b * c, 0.04 * a - 1e4 * b * c - 3e7 * b * b, 3e7 * b * b], -1)


def _counted(f):
    calls = [0]

    def g(t, y):
        calls[0] += 1
        return f(t, y)

    return g, calls


@pytest.mark.parametrize("n", [2, 3, 5])
def test_row_by_row_and_vectorised_autograd_jacobians_agree(n, monkeypatch):
    gen = torch.Generator().manual_seed(n)
    w = torch.randn(n, n, dtype=F64, generator=gen)
    y = torch.randn(n, dtype=F64, generator=gen)
    t = torch.tensor(0.5, dtype=F64)

    def f(t, y):
        return torch.tanh(w @ y) * torch.cos(t) - y**3

    exact = torch.diag(-3 * y**2) + (1 - torch.tanh(w @ y) ** 2)[:, None] * w * torch.cos(t)
    got, _ = jacobians(f, t, y, batched=False)  # row by row up to ROW_BY_ROW = 3, else vectorised
    monkeypatch.setattr(jacobian_module, "ROW_BY_ROW", 0)  # vectorised at every size
    vectorised, _ = jacobians(f, t, y, batched=False)
    assert ROW_BY_ROW == 3
    torch.testing.assert_close(got, exact, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(vectorised, exact, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("y", [[0.9, 1e-5, 0.1], [0.02, 7e-8, 0.98], [1.0, 0.0, 0.0]])
def test_forward_differences_agree_with_autograd_to_sqrt_eps(y):
    y = torch.tensor(y, dtype=F64)
    t = torch.tensor(0.0, dtype=F64)
    exact, _ = jacobians(robertson, t, y, batched=False)
    f, calls = _counted(robertson)
    fd = finite_difference_jacobian(f, t, y, robertson(t, y), batched=False)
    assert calls[0] == 3  # one evaluation per column, f(t, y) given
    error = float((fd - exact).abs().max() / exact.abs().max())
    assert 0 < error < 1e-6  # differences (not the exact matrix), of order sqrt(eps) = 1.5e-8


def test_per_sample_forward_differences_are_one_matrix_per_sample():
    y = torch.tensor([[0.9, 1e-5, 0.1], [0.5, 2e-6, 0.5]], dtype=F64)
    t = torch.zeros(2, dtype=F64)
    f, calls = _counted(robertson)
    fd = finite_difference_jacobian(f, t, y, batched=True)
    assert fd.shape == (2, 3, 3) and calls[0] == 4  # f(t, y) too: not given
    for i in range(2):
        exact, _ = jacobians(robertson, t[i], y[i], batched=False)
        torch.testing.assert_close(fd[i], exact, rtol=1e-6, atol=1e-6 * float(exact.abs().max()))


@pytest.mark.parametrize("cls", [nde.solvers.Rodas5P, nde.solvers.Kvaerno5])
def test_a_solve_with_fd_jacobians_matches_the_autograd_solve(cls):
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    ts = torch.tensor([0.0, 1.0, 1e3, 1e5], dtype=F64)
    kw = dict(rtol=1e-6, atol=1e-10)
    auto = nde.solve(robertson, y0, ts, cls(), **kw)
    fd = nde.solve(robertson, y0, ts, cls(jacobian="fd"), **kw)
    assert fd.stats.steps == auto.stats.steps and fd.stats.rejected == auto.stats.rejected
    torch.testing.assert_close(fd.ys, auto.ys, rtol=1e-6, atol=1e-10)  # within the solve's tolerance


def test_rodas5p_fd_costs_two_more_evaluations_per_jacobian_on_a_3_state():
    """Autograd's Jacobian evaluates f once (with its graph); forward differences reuse the
    step's f(t0, y0) and evaluate f once per column: 3 - 1 more for each Jacobian."""
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    ts = torch.tensor([0.0, 1e5], dtype=F64)
    auto = nde.solve(robertson, y0, ts, nde.solvers.Rodas5P(), rtol=1e-6, atol=1e-10)
    fd = nde.solve(robertson, y0, ts, nde.solvers.Rodas5P(jacobian="fd"), rtol=1e-6, atol=1e-10)
    assert fd.stats.nfe - auto.stats.nfe == 2 * auto.stats.accepted  # a Jacobian per step start


def test_per_sample_rodas5p_with_fd_matches_autograd():
    y0 = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.0, 0.1]], dtype=F64)
    ts = torch.tensor([0.0, 10.0, 1e3], dtype=F64)
    kw = dict(rtol=1e-6, atol=1e-10, per_sample=True)
    auto = nde.solve(robertson, y0, ts, nde.solvers.Rodas5P(), **kw)
    fd = nde.solve(robertson, y0, ts, nde.solvers.Rodas5P(jacobian="fd"), **kw)
    assert torch.equal(fd.stats.steps, auto.stats.steps)
    torch.testing.assert_close(fd.ys, auto.ys, rtol=1e-6, atol=1e-10)


def test_autograd_by_name_is_the_default():
    assert nde.solvers.Rodas5P(jacobian="autograd").jacobian is None
    assert nde.solvers.Kvaerno5(jacobian="autograd").jacobian is None


def test_an_unknown_jacobian_name_is_an_error_that_lists_the_valid_ones():
    with pytest.raises(
        ValueError, match=r"Rodas5P\(jacobian=...\) must be 'autograd'.*'fd'.*Did you mean 'fd'"
    ):
        nde.solvers.Rodas5P(jacobian="fdd")
    with pytest.raises(ValueError, match=r"Kvaerno5\(jacobian=...\).*got 'analytic'"):
        nde.solvers.Kvaerno5(jacobian="analytic")
