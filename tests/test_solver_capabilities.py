"""Solvers declare what they are (class attributes, never probed), and whatever changes during a
solve is explicit state passed into and out of ``step``: no solver object is mutated."""

from __future__ import annotations

import copy

import pytest
import torch

import torchnde as nde
from torchnde.solvers import (
    ImplicitState,
    Newton,
    ReversibleState,
    RosenbrockState,
    accepting,
    resolve_solver,
)
from torchnde.terms import AbstractTerm, ODETerm

from .helpers import ALL_SOLVERS, EXPLICIT_SOLVERS

IMPLICIT_SOLVERS = [n for n in ALL_SOLVERS if resolve_solver(n).implicit]
ESDIRK_SOLVERS = [n for n in IMPLICIT_SOLVERS if n != "rodas5p"]


def _van_der_pol(mu: float = 1000.0):
    def f(t, y):
        x, v = y.unbind(-1)
        return torch.stack([v, mu * (1 - x * x) * v - x], -1)

    return f


def _y0() -> torch.Tensor:
    return torch.tensor([2.0, 0.0], dtype=torch.float64)


@pytest.mark.parametrize("name", ALL_SOLVERS)
def test_every_registered_solver_declares_its_capabilities_as_class_attributes(name):
    solver = resolve_solver(name)
    cls = type(solver)
    for flag in ("implicit", "reversible", "supports_per_sample", "separable_pair"):
        assert type(getattr(cls, flag)) is bool, flag  # declared on the class, a real bool
    assert isinstance(cls.terms, tuple) and cls.terms
    assert all(isinstance(t, type) and issubclass(t, AbstractTerm) for t in cls.terms)
    assert type(cls.order) is int and cls.order >= 1
    assert cls.error_order is None or type(cls.error_order) is int
    assert solver.adaptive == (cls.error_order is not None)
    # the ad-hoc attributes and the mutable-copy protocol are gone
    for old in ("per_sample", "bind", "snapshot", "restore", "init", "forward", "reverse"):
        assert not hasattr(solver, old), old


def test_implicit_and_reversible_solvers_are_the_expected_ones():
    assert set(IMPLICIT_SOLVERS) == {
        *("implicit_euler", "kvaerno3", "kvaerno4", "kvaerno5", "rodas5p"),
        *("trapezoid", "sdirk2", "trbdf2"),  # fixed-step ESDIRK tableaux
        *("implicit_midpoint", "gl4", "gl6", "radauiia3", "radauiia5"),  # fully implicit
    }
    assert [n for n in ALL_SOLVERS if resolve_solver(n).reversible] == ["reversible_heun"]
    # the multistep methods' order would differ between samples: global layout only
    assert [n for n in ALL_SOLVERS if not resolve_solver(n).supports_per_sample] == [
        "adams_bashforth",
        "adams_moulton",
    ]


def test_every_solver_accepts_an_ode_term_and_none_accepts_an_unknown_term():
    class Other(AbstractTerm):
        kind = "other"

        def lower(self):
            return lambda t, y: y

    assert accepting(ODETerm(lambda t, y: -y)) == nde.solvers.names()
    assert accepting(Other()) == []
    assert accepting(lambda t, y: -y) == []  # a bare callable is not a term


@pytest.mark.parametrize("name", EXPLICIT_SOLVERS)
def test_explicit_steps_are_stateless(name):
    solver = resolve_solver(name)
    f = lambda t, y: -y  # noqa: E731
    y0 = _y0()
    assert solver.init_state(nde.PIDController(1e-6, 1e-9)) is None
    res = solver.step(f, 0.0, y0, f(0.0, y0), 0.1, True, None)
    assert res.state is None


@pytest.mark.parametrize("name", ESDIRK_SOLVERS)
def test_implicit_step_from_the_same_state_is_bit_identical_and_leaves_the_state_unchanged(name):
    solver = resolve_solver(name)
    f = _van_der_pol()
    y0 = _y0()
    f0 = f(0.0, y0)
    state = solver.init_state(nde.PIDController(1e-6, 1e-9))
    assert isinstance(state, ImplicitState) and state.jacobian is None and state.factor is None
    first = solver.step(f, 0.0, y0, f0, 1e-3, True, state)
    assert first.converged is True
    # a second step from the first one's state: reuses its Jacobian and factorisation
    mid = first.state
    assert mid is not state and mid.jacobian is not None and mid.factor is not None
    fields = tuple(mid)
    f1 = first.f1 if first.f1 is not None else f(1e-3, first.y1)  # fully implicit: not FSAL
    a = solver.step(f, 1e-3, first.y1, f1, 1e-3, True, mid)
    b = solver.step(f, 1e-3, first.y1, f1, 1e-3, True, mid)
    assert tuple(mid) == fields  # the input state is untouched (same objects)
    assert torch.equal(a.y1, b.y1)
    assert len(a.errors) == len(b.errors) == (1 if solver.adaptive else 0)
    assert all(torch.equal(x, y) for x, y in zip(a.errors, b.errors))
    assert a.state.eta == b.state.eta
    assert torch.equal(a.state.jacobian, b.state.jacobian)


@pytest.mark.parametrize("name", ESDIRK_SOLVERS)
def test_implicit_step_returns_a_new_state_when_it_evaluates_the_jacobian(name):
    solver = resolve_solver(name)
    f = _van_der_pol()
    y0 = _y0()
    state = solver.init_state(nde.ConstantStep(1e-3))
    res = solver.step(f, 0.0, y0, f(0.0, y0), 1e-3, True, state)
    assert res.state is not state
    assert state.jacobian is None  # not filled in place
    expected = torch.tensor([[0.0, 1.0], [-1.0, -3000.0]], dtype=torch.float64)  # df/dy at (2, 0)
    assert torch.allclose(res.state.jacobian, expected)


def test_newton_tolerances_come_from_the_options_else_the_controller():
    ctrl = nde.PIDController(1e-4, 1e-7)
    assert nde.solvers.Kvaerno5().init_state(ctrl)[:2] == (1e-4, 1e-7)
    assert nde.solvers.Kvaerno5(Newton(rtol=1e-3, atol=1e-5)).init_state(ctrl)[:2] == (1e-3, 1e-5)
    assert nde.solvers.Kvaerno5().init_state(nde.ConstantStep(0.1))[:2] == (1e-6, 1e-9)


def test_a_direct_implicit_step_without_state_uses_the_default_tolerances():
    solver = nde.solvers.Kvaerno3()
    f = _van_der_pol()
    y0 = _y0()
    f0 = f(0.0, y0)
    bare = solver.step(f, 0.0, y0, f0, 1e-3)
    default = solver.step(f, 0.0, y0, f0, 1e-3, True, ImplicitState(1e-6, 1e-9))
    assert torch.equal(bare.y1, default.y1)
    assert bare.state.rtol == 1e-6 and bare.state.atol == 1e-9


def test_a_failed_newton_solve_returns_the_state_without_its_jacobian():
    solver = nde.solvers.Kvaerno5(Newton(max_iters=1))
    f = _van_der_pol()
    y0 = _y0()
    # a tiny step converges at once and leaves a Jacobian in the state ...
    ok = solver.step(f, 0.0, y0, f(0.0, y0), 1e-9, True, solver.init_state(nde.ConstantStep(1e-9)))
    assert ok.converged is True and ok.state.jacobian is not None
    # ... which a step far too large for one Newton iteration drops, keeping the tolerances
    failed = solver.step(f, 1e-9, ok.y1, ok.f1, 1.0, True, ok.state)
    assert failed.converged is False
    assert failed.state.jacobian is None and failed.state.factor is None
    assert failed.state[:2] == ok.state[:2]
    assert ok.state.jacobian is not None  # the input state still holds it


@pytest.mark.parametrize("name", IMPLICIT_SOLVERS)
def test_a_solve_leaves_the_implicit_solver_object_unchanged(name):
    solver = resolve_solver(name)
    before = copy.copy(vars(solver))
    kw = {} if solver.adaptive else {"dt": 0.01}
    nde.solve(_van_der_pol(10.0), _y0(), torch.tensor([0.0, 1.0], dtype=torch.float64), solver, **kw)
    after = vars(solver)
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before if k != "_rows")  # _rows: cached constants


def test_rodas5p_learns_whether_f_reads_time_into_its_state():
    solver = nde.solvers.Rodas5P()
    y0 = _y0()
    autonomous = _van_der_pol(10.0)

    def forced(t, y):
        return autonomous(t, y) + torch.sin(torch.as_tensor(t, dtype=y.dtype))

    for f, expect in ((autonomous, True), (forced, False)):
        res = solver.step(f, 0.0, y0, f(0.0, y0), 1e-2, True, solver.init_state(None))
        assert isinstance(res.state, RosenbrockState) and res.state.autonomous is expect
        assert res.state.point[0] == 0.0 and res.state.point[1] is y0  # its Jacobian's point
        again = solver.step(f, 0.0, y0, f(0.0, y0), 1e-2, True, res.state)  # a retry: J reused
        assert torch.equal(again.y1, res.y1) and again.state is res.state


def _field():
    gen = torch.Generator().manual_seed(3)
    w1 = torch.randn(3, 8, dtype=torch.float64, generator=gen) / 2
    w2 = torch.randn(8, 3, dtype=torch.float64, generator=gen) / 4

    def f(t, y):
        return torch.tanh(y @ w1) @ w2 - 0.1 * y + torch.sin(torch.as_tensor(t, dtype=y.dtype))

    return f


@pytest.mark.parametrize("started", [False, True])
def test_reversible_heun_reverse_step_undoes_step_to_round_off(started):
    solver = nde.solvers.ReversibleHeun()
    f = _field()
    y0 = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    state = None
    if started:  # a state whose z differs from y
        z = y0 + 0.1
        state = ReversibleState(z, f(0.3, z))
    res = solver.step(f, 0.3, y0, f(0.3, y0), 0.05, state=state)
    assert res.errors == () and isinstance(res.state, ReversibleState)
    assert torch.equal(res.f1, res.state.fz)
    y_back, state_back = solver.reverse_step(f, 0.35, res.y1, res.state, 0.05)
    z0, fz0 = (y0, f(0.3, y0)) if state is None else state
    assert float((y_back - y0).abs().max()) < 1e-12
    assert float((state_back.z - z0).abs().max()) < 1e-12
    assert float((state_back.fz - fz0).abs().max()) < 1e-12


def test_reversible_heun_step_from_no_state_starts_with_z_equal_to_y():
    solver = nde.solvers.ReversibleHeun()
    f = _field()
    y0 = torch.randn(3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    f0 = f(0.0, y0)
    fresh = solver.step(f, 0.0, y0, f0, 0.1)
    explicit = solver.step(f, 0.0, y0, f0, 0.1, state=ReversibleState(y0, f0))
    assert torch.equal(fresh.y1, explicit.y1) and torch.equal(fresh.state.z, explicit.state.z)
