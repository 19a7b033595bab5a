"""The implicit solvers' ``jacobian`` option: a user-supplied exact df/dy replaces autograd's.

It must change nothing but the cost: the same steps and values as the autograd Jacobian, in
every layout the loop has (global, per sample, tuple states, backwards in time), with gradients
through it, and a derived system (the adjoint's) must not pick it up.
"""

from __future__ import annotations

import pytest
import torch

import torchnde as nde

F64 = torch.float64


def robertson(t, y):
    a, b, c = y.unbind(-1)
    return torch.stack([-0.04 * a + 1e4 * b * c, 0.04 * a - 1e4 * b * c - 3e7 * b * b, 3e7 * b * b], -1)


def robertson_jacobian(t, y):
    """[N, N], or [B, N, N] for a batch of states [B, N]."""
    a, b, c = y.unbind(-1)
    z = torch.zeros_like(a)
    rows = [
        torch.stack([z - 0.04, 1e4 * c, 1e4 * b], -1),
        torch.stack([z + 0.04, -1e4 * c - 6e7 * b, -1e4 * b], -1),
        torch.stack([z, 6e7 * b, z], -1),
    ]
    return torch.stack(rows, -2)


def _robertson(solver, **kw):
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    ts = torch.tensor([0.0, 1.0, 1e3, 1e5], dtype=F64)
    return nde.solve(robertson, y0, ts, solver, rtol=1e-6, atol=1e-10, **kw)


@pytest.mark.parametrize("cls", [nde.solvers.Rodas5P, nde.solvers.Kvaerno5, nde.solvers.Kvaerno3])
def test_an_analytic_jacobian_gives_the_autograd_solution(cls):
    auto = _robertson(cls())
    mine = _robertson(cls(jacobian=robertson_jacobian))
    assert mine.stats.steps == auto.stats.steps and mine.stats.rejected == auto.stats.rejected
    torch.testing.assert_close(mine.ys, auto.ys, rtol=1e-9, atol=1e-15)
    assert mine.stats.nfe < auto.stats.nfe  # autograd's Jacobian evaluates f; the user's does not


def test_rodas5p_with_an_analytic_jacobian_saves_one_evaluation_per_step_start():
    """A rejected step's retry starts from the same point and reuses its Jacobian: autograd's
    costs one evaluation per accepted step (the points the steps start from), not per step,
    and three for the check that the first one makes (``solvers.jacobian.StateCopies``)."""
    auto = _robertson(nde.solvers.Rodas5P())
    mine = _robertson(nde.solvers.Rodas5P(jacobian=robertson_jacobian))
    assert mine.stats.rejected > 0
    assert auto.stats.nfe - mine.stats.nfe == mine.stats.accepted + 3


@pytest.mark.parametrize("cls", [nde.solvers.Rodas5P, nde.solvers.Kvaerno5])
def test_per_sample_jacobian_is_one_matrix_per_sample(cls):
    y0 = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.0, 0.1], [0.5, 1e-5, 0.5]], dtype=F64)
    ts = torch.tensor([[0.0, 10.0, 1e3], [0.0, 1.0, 40.0], [0.0, 5.0, 1e4]], dtype=F64)
    kw = dict(rtol=1e-6, atol=1e-10, per_sample=True)
    auto = nde.solve(robertson, y0, ts, cls(), **kw)
    mine = nde.solve(robertson, y0, ts, cls(jacobian=robertson_jacobian), **kw)
    assert torch.equal(mine.stats.steps, auto.stats.steps)
    torch.testing.assert_close(mine.ys, auto.ys, rtol=1e-9, atol=1e-15)


def _oscillator(mu):
    """Van der Pol as a tuple state (x, v), and its Jacobian over the concatenated (x, v)."""

    def f(t, state):
        x, v = state
        return v, mu * (1 - x**2) * v - x

    def jac(t, state):
        x, v = state
        row0 = torch.cat([torch.zeros_like(x), torch.ones_like(v)])
        row1 = torch.cat([-2 * mu * x * v - 1, mu * (1 - x**2)])
        return torch.stack([row0, row1])

    return f, jac


@pytest.mark.parametrize("cls", [nde.solvers.Rodas5P, nde.solvers.Kvaerno5])
def test_tuple_state_backwards_in_time(cls):
    """The loop runs backwards in time on a negated field; the user's Jacobian is of the user's
    field, and the solver sees it negated and over the concatenated parts."""
    f, jac = _oscillator(20.0)
    y0 = (torch.tensor([2.0], dtype=F64), torch.tensor([0.0], dtype=F64))
    ts = torch.tensor([3.0, 2.0, 0.0], dtype=F64)
    auto = nde.solve(f, y0, ts, cls(), rtol=1e-7, atol=1e-9)
    mine = nde.solve(f, y0, ts, cls(jacobian=jac), rtol=1e-7, atol=1e-9)
    assert mine.stats.steps == auto.stats.steps
    for got, want in zip(mine.ys, auto.ys):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_a_time_dependent_field_still_gets_its_exact_time_derivative():
    """Rodas5P needs df/dt too: with the user's df/dy it still comes from autograd."""

    def f(t, y):
        return -1000.0 * (y - torch.cos(t)) - torch.sin(t)

    def jac(t, y):
        return torch.full((1, 1), -1000.0, dtype=y.dtype)

    sol = nde.solve(f, torch.tensor([1.0], dtype=F64), torch.tensor([0.0, 2.0], dtype=F64),
                    nde.solvers.Rodas5P(jacobian=jac), rtol=1e-8, atol=1e-10)  # fmt: skip
    assert abs(float(sol.ys[-1, 0]) - float(torch.cos(torch.tensor(2.0, dtype=F64)))) < 1e-7


def _linear_field(w, rates=(-1.0, -100.0, -1000.0)):
    rates = torch.tensor(rates, dtype=F64)

    def f(t, y):
        return rates * y + torch.tanh(y @ w)

    def jac(t, y):  # d/dy [rates * y + tanh(y @ w)] = diag(rates) + sech^2(y @ w) * w^T (rows i)
        s = 1 - torch.tanh(y @ w) ** 2
        return torch.diag(rates) + s[:, None] * w.T

    return f, jac


@pytest.mark.parametrize("cls", [nde.solvers.Rodas5P, nde.solvers.Kvaerno5])
def test_gradients_through_a_user_jacobian_match_autograd(cls):
    """Rodas5P differentiates through J itself (it depends on w): the user's torch Jacobian
    carries that graph; Kvaerno5's implicit-function step uses it at the converged stages."""
    gen = torch.Generator().manual_seed(0)
    w = (0.3 * torch.randn(3, 3, dtype=F64, generator=gen)).requires_grad_()
    y0 = torch.randn(3, dtype=F64, generator=gen).requires_grad_()
    ts = torch.linspace(0, 1, 4, dtype=F64)
    f, jac = _linear_field(w)
    grads = [
        torch.autograd.grad(nde.solve(f, y0, ts, solver, dt=0.05).ys.square().sum(), (y0, w))
        for solver in (cls(), cls(jacobian=jac))
    ]
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_the_adjoint_system_does_not_use_the_forward_jacobian():
    """The adjoint's backward solve integrates a different, augmented field: it must fall back to
    autograd, not reuse the forward field's Jacobian (which has the wrong size). Mildly stiff
    rates: a backsolve adjoint is unstable on fast modes (see test_stiff.py)."""
    gen = torch.Generator().manual_seed(1)
    w = (0.3 * torch.randn(3, 3, dtype=F64, generator=gen)).requires_grad_()
    y0 = torch.randn(3, dtype=F64, generator=gen).requires_grad_()
    ts = torch.linspace(0, 1, 4, dtype=F64)
    f, jac = _linear_field(w, (-1.0, -5.0, -10.0))
    kw = dict(rtol=1e-9, atol=1e-11)
    solver = nde.solvers.Rodas5P(jacobian=jac)
    adj = nde.solve(f, y0, ts, solver, gradient=nde.Adjoint(params=[w]), **kw)
    ref = nde.solve(f, y0, ts, nde.solvers.Rodas5P(), **kw)
    got = torch.autograd.grad(adj.ys.square().sum(), (y0, w))
    want = torch.autograd.grad(ref.ys.square().sum(), (y0, w))
    for g, r in zip(got, want):
        assert float((g - r).abs().max() / r.abs().max()) < 1e-5


def test_a_jacobian_that_is_not_callable_is_an_error_at_construction():
    with pytest.raises(
        TypeError, match=r"Rodas5P\(jacobian=...\) must be None \(autograd\), 'fd'.* or a callable"
    ):
        nde.solvers.Rodas5P(jacobian=torch.eye(3))
    with pytest.raises(TypeError, match=r"Kvaerno5\(jacobian=...\)"):
        nde.solvers.Kvaerno5(jacobian=3.0)


def test_a_jacobian_of_the_wrong_shape_names_the_expected_one():
    bad = lambda t, y: torch.zeros(3, dtype=y.dtype)  # noqa: E731
    with pytest.raises(ValueError, match=r"shape \(3, 3\).*got \(3,\)"):
        _robertson(nde.solvers.Rodas5P(jacobian=bad))
    with pytest.raises(ValueError, match=r"torch.float64 tensor.*torch.float32"):
        _robertson(nde.solvers.Kvaerno5(jacobian=lambda t, y: torch.zeros(3, 3)))


def test_explicit_solvers_have_no_jacobian_option():
    with pytest.raises(TypeError):
        nde.solvers.Tsit5(jacobian=robertson_jacobian)
