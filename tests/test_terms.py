"""Terms: a callable is the ODE term, a term is lowered once per solve, and a solver that does
not accept a term is rejected before solving, naming the solvers that do."""

from __future__ import annotations

import pytest
import torch

import torchnde as nde
from torchnde.solvers import accepting

DTYPE = torch.float64
TS = torch.linspace(0, 1, 5, dtype=DTYPE)


def _decay(t, y):
    return -y


def test_a_callable_is_the_ode_term():
    y0 = torch.tensor([1.0, 2.0], dtype=DTYPE)
    plain = nde.solve(_decay, y0, TS, rtol=1e-8, atol=1e-10)
    term = nde.solve(nde.ODETerm(_decay), y0, TS, rtol=1e-8, atol=1e-10)
    assert torch.equal(plain.ys, term.ys) and plain.stats == term.stats


def test_a_term_is_lowered_once_per_solve():
    lowered = [0]

    class Counting(nde.ODETerm):
        def lower(self):
            lowered[0] += 1
            return super().lower()

    sol = nde.solve(Counting(_decay), torch.ones(2, dtype=DTYPE), TS, rtol=1e-8, atol=1e-10)
    assert lowered[0] == 1 and sol.stats.nfe > 10


def test_an_ode_term_differentiates_its_modules_parameters_with_the_adjoint():
    net = torch.nn.Linear(2, 2).double()
    term = nde.ODETerm(lambda t, y: net(y))
    y0 = torch.ones(2, dtype=DTYPE)
    sol = nde.solve(term, y0, TS, gradient="adjoint")
    grads = torch.autograd.grad(sol.ys.sum(), list(net.parameters()))
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


class _Other(nde.AbstractTerm):
    kind = "SDE"

    def lower(self):
        return _decay


def test_a_solver_rejects_a_term_it_does_not_accept_and_names_those_that_do():
    with pytest.raises(
        ValueError, match=r"'tsit5' does not accept an SDE term \(_Other\); solvers that do: none"
    ):
        nde.solve(_Other(), torch.ones(1), TS)
    assert "tsit5" in accepting(nde.ODETerm(_decay)) and accepting(_Other()) == []


def test_every_registered_solver_accepts_the_ode_term():
    term = nde.ODETerm(_decay)
    assert sorted(accepting(term)) == sorted(nde.solvers.names())


def test_terms_are_checked_at_construction():
    with pytest.raises(TypeError, match="callable"):
        nde.ODETerm(3.0)
    with pytest.raises(TypeError, match="callable"):
        nde.solve(3.0, torch.ones(1), TS)
