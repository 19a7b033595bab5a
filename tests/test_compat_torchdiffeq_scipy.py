"""compat.torchdiffeq's ``method="scipy_solver"`` against torchdiffeq 0.2.5 itself."""

from __future__ import annotations

import sys

import pytest
import torch
import torchdiffeq

from torchnde.compat.torchdiffeq import odeint, odeint_adjoint

A = torch.tensor([[-0.1, 1.0], [-1.0, -0.1]], dtype=torch.float64)
Y0 = torch.tensor([[1.0, 0.5], [0.2, -0.3]], dtype=torch.float64)


def forced(t, y):
    return y @ A.T + torch.sin(t)


def pair(t, y):
    q, p = y
    return p, -torch.sin(q) - 0.1 * p


def _within(got, want, rtol, atol, factor=10.0):
    assert got.shape == want.shape and got.dtype == want.dtype
    bound = factor * (atol + rtol * want.abs())
    assert bool(((got - want).abs() <= bound).all()), float((got - want).abs().max())


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("solver", ["RK45", "LSODA", "DOP853", "Radau", "BDF"])
def test_scipy_solver_agrees_with_torchdiffeq(solver, reverse):
    t = torch.linspace(0.0, 3.0, 7, dtype=torch.float64)
    t = t.flip(0) if reverse else t
    kwargs = {"rtol": 1e-6, "atol": 1e-8, "method": "scipy_solver", "options": {"solver": solver}}
    got, want = odeint(forced, Y0, t, **kwargs), torchdiffeq.odeint(forced, Y0, t, **kwargs)
    _within(got, want, 1e-6, 1e-8)
    exact = torchdiffeq.odeint(forced, Y0, t, method="dopri8", rtol=1e-12, atol=1e-12)
    _within(got, exact, 1e-6, 1e-8, factor=100.0)  # and it is a solution to the tolerance


def test_scipy_solver_defaults_options_and_tuple_states():
    y0 = (torch.tensor([1.0, 0.3], dtype=torch.float64), torch.tensor([0.0, -0.2], dtype=torch.float64))
    t = torch.linspace(0.0, 2.0, 5, dtype=torch.float64)
    options = {"max_step": 0.1, "min_step": 0.0}
    got = odeint(pair, y0, t, method="scipy_solver", options=options)  # LSODA by default
    want = torchdiffeq.odeint(pair, y0, t, method="scipy_solver", options=options)
    assert isinstance(got, tuple) and len(got) == 2
    for g, w in zip(got, want):
        _within(g, w, 1e-7, 1e-9)


def test_scipy_solver_float32_and_a_single_time():
    y0 = Y0.float()
    t = torch.linspace(0.0, 1.0, 3)
    f = lambda t, y: y @ A.T.float()  # noqa: E731
    got = odeint(f, y0, t, method="scipy_solver", options={"solver": "RK45"}, rtol=1e-5, atol=1e-6)
    want = torchdiffeq.odeint(
        f, y0, t, method="scipy_solver", options={"solver": "RK45"}, rtol=1e-5, atol=1e-6
    )
    _within(got, want, 1e-5, 1e-6)
    one = odeint(f, y0, t[:1], method="scipy_solver")
    assert one.shape == (1, *y0.shape) and torch.equal(one[0], y0)


def test_scipy_solver_gives_no_gradients_and_rejects_what_it_cannot_do():
    y0 = Y0.clone().requires_grad_()
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert not odeint(forced, y0, t, method="scipy_solver").requires_grad  # as in torchdiffeq
    with pytest.raises(ValueError, match="not supported for method 'scipy_solver'"):
        odeint(forced, Y0, t, method="scipy_solver", options={"step_size": 0.1})
    with pytest.raises(ValueError, match="no gradients"):
        odeint_adjoint(forced, Y0, t, method="scipy_solver", adjoint_params=())
    with pytest.raises(ValueError, match="events"):
        odeint(forced, Y0, t, method="scipy_solver", event_fn=lambda t, y: y[0, 0])


def test_a_missing_scipy_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.integrate", None)  # import scipy.integrate fails
    with pytest.raises(ImportError, match=r'pip install "torchnde\[experiments\]"'):
        odeint(forced, Y0, torch.tensor([0.0, 1.0], dtype=torch.float64), method="scipy_solver")
