"""Fully implicit Runge–Kutta methods (Radau IIA, Gauss–Legendre, implicit midpoint) and the
fixed-step ESDIRK tableaux of torchdiffeq (trapezoid, SDIRK2, TR-BDF2): their orders, stiff
stability, gradients, per-sample steps and explicit state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchnde as nde
from torchnde.solvers import FIRKTableau, FullyImplicitRK, ImplicitState, resolve_solver

FIRK = ["implicit_midpoint", "gl4", "gl6", "radauiia3", "radauiia5"]
ESDIRK_FIXED = ["trapezoid", "sdirk2", "trbdf2"]
NEW = FIRK + ESDIRK_FIXED
L_STABLE = ["radauiia3", "radauiia5", "sdirk2", "trbdf2"]
A_STABLE_ONLY = ["implicit_midpoint", "gl4", "gl6", "trapezoid"]
ORDERS = {"implicit_midpoint": 2, "gl4": 4, "gl6": 6, "radauiia3": 3, "radauiia5": 5,
          "trapezoid": 2, "sdirk2": 2, "trbdf2": 2}  # fmt: skip


def _nonlinear_rotation(t, y):
    """``y' = w(t, y) J y`` with ``w = 3 (1 + |y|^2 cos(t) / 2)``: ``|y|`` is conserved, so the
    angle is ``3 (t + |y0|^2 sin(t) / 2)`` in closed form."""
    w = 3.0 * (1.0 + 0.5 * (y * y).sum() * torch.cos(t))
    return w * torch.stack([-y[1], y[0]])


def _rotation_exact(t: float, y0: torch.Tensor) -> torch.Tensor:
    angle = 3.0 * (t + 0.5 * float((y0 * y0).sum()) * np.sin(t))
    c, s = np.cos(angle), np.sin(angle)
    return torch.stack([c * y0[0] - s * y0[1], s * y0[0] + c * y0[1]])


@pytest.mark.parametrize("name", NEW)
def test_global_error_slope_on_a_nonlinear_problem_is_the_declared_order(name):
    """The nonlinear rotation on [0, 2] against its closed form, dt = 2^-k for four k where the
    error is asymptotic and above round-off; Newton tolerances tight enough not to limit it."""
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    ts = torch.tensor([0.0, 2.0], dtype=torch.float64)
    exact = _rotation_exact(2.0, y0)
    # (the ESDIRK engine does not retry a failed step with a fresh Jacobian: evaluate it every step)
    newton = nde.Newton(rtol=1e-12, atol=1e-14, max_iters=20, reuse_jacobian=name in FIRK)
    solver = type(resolve_solver(name))(newton=newton)
    assert solver.order == ORDERS[name]
    first = {2: 6, 3: 6, 4: 5, 5: 4, 6: 4}[solver.order]
    hs = [2.0 * 2.0**-k for k in range(first, first + 4)]
    errs = [
        float((nde.solve(_nonlinear_rotation, y0, ts, solver, dt=h).ys[-1] - exact).abs().max()) for h in hs
    ]
    slope = float(np.polyfit(np.log(hs), np.log(errs), 1)[0])
    assert abs(slope - solver.order) <= 0.2, f"{name}: slope {slope:.3f}, errors {errs}"


def _stiff(t, y):
    return -1000.0 * (y - torch.cos(t))


def _stiff_exact(t, y0):
    """Exact solution of ``y' = -1000 (y - cos t)``."""
    lam = 1000.0
    particular = lam * (lam * torch.cos(t) + torch.sin(t)) / (lam**2 + 1)
    return particular + (y0 - lam**2 / (lam**2 + 1)) * torch.exp(-lam * t)


@pytest.mark.parametrize("name", L_STABLE)
def test_l_stable_methods_damp_a_stiff_transient_at_dt_0_1(name):
    """dt = 0.1 is 100 times the fast time scale: the L-stable methods damp the transient from
    y0 = 0 at once and follow the slow solution to 1e-4."""
    ts = torch.linspace(0, 2, 5, dtype=torch.float64)
    y0 = torch.zeros(1, dtype=torch.float64)
    sol = nde.solve(_stiff, y0, ts, name, dt=0.1)
    err = (sol.ys[1:, 0] - _stiff_exact(ts[1:], 0.0)).abs().max()
    assert sol.status == nde.Status.SUCCESS and float(err) < 1e-4, float(err)


@pytest.mark.parametrize("name", A_STABLE_ONLY)
def test_a_stable_methods_stay_bounded_on_a_stiff_problem_at_dt_0_1(name):
    """A-stable but not L-stable: a transient is not damped (|R(-100)| is near 1) but stays
    bounded; started on the slow solution they follow it to 5e-3 (the implicit midpoint rule,
    of stage order 1, loses most to order reduction)."""
    ts = torch.linspace(0, 2, 5, dtype=torch.float64)
    transient = nde.solve(_stiff, torch.zeros(1, dtype=torch.float64), ts, name, dt=0.1)
    assert float(transient.ys.abs().max()) <= 2.0
    y0 = torch.full((1,), 1e6 / (1e6 + 1), dtype=torch.float64)  # on the slow solution
    smooth = nde.solve(_stiff, y0, ts, name, dt=0.1)
    assert float((smooth.ys[:, 0] - _stiff_exact(ts, float(y0))).abs().max()) < 5e-3


def test_explicit_rk4_blows_up_on_the_stiff_problem_at_dt_0_1():
    ts = torch.linspace(0, 2, 5, dtype=torch.float64)
    sol = nde.solve(_stiff, torch.zeros(1, dtype=torch.float64), ts, "rk4", dt=0.1)
    assert not bool(torch.isfinite(sol.ys).all()) or float(sol.ys.abs().max()) > 1e10


@pytest.mark.parametrize("name", NEW)
def test_gradients_through_a_stiff_solve_pass_gradcheck(name):
    """The implicit-function step makes the converged stages differentiable: gradients of a
    solve w.r.t. y0 and a weight matrix equal finite differences."""
    gen = torch.Generator().manual_seed(0)
    w = (0.3 * torch.randn(3, 3, dtype=torch.float64, generator=gen)).requires_grad_()
    y0 = torch.randn(3, dtype=torch.float64, generator=gen).requires_grad_()
    lam = torch.tensor([-1.0, -100.0, -1000.0], dtype=torch.float64)
    ts = torch.linspace(0, 0.5, 3, dtype=torch.float64)
    solver = type(resolve_solver(name))(newton=nde.Newton(rtol=1e-12, atol=1e-14, max_iters=20))

    def outputs(y0, w):
        field = lambda t, y: lam * y + torch.tanh(y @ w) * torch.cos(t)  # noqa: E731
        return nde.solve(field, y0, ts, solver, dt=0.05).ys

    assert torch.autograd.gradcheck(outputs, (y0, w), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", FIRK)
def test_per_sample_steps_equal_each_sample_alone(name):
    """Per-sample step sizes [B] (here: different time spans) give what each sample gives alone."""
    f = lambda t, y: torch.stack([y[..., 1], 2.0 * (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], -1)  # noqa: E731
    y0 = torch.tensor([[2.0, 0.0], [1.0, 0.5]], dtype=torch.float64)
    ts = torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.7, 1.3]], dtype=torch.float64)
    solver = type(resolve_solver(name))(newton=nde.Newton(rtol=1e-12, atol=1e-14))
    batch = nde.solve(f, y0, ts, solver, dt=0.05, per_sample=True)
    for i in range(2):
        alone = nde.solve(f, y0[i], ts[i], solver, dt=0.05)
        assert torch.allclose(batch.ys[:, i], alone.ys, rtol=1e-7, atol=1e-9)


def test_per_sample_gradients_pass_gradcheck():
    gen = torch.Generator().manual_seed(1)
    w = (0.3 * torch.randn(3, 3, dtype=torch.float64, generator=gen)).requires_grad_()
    y0 = torch.randn(2, 3, dtype=torch.float64, generator=gen).requires_grad_()
    lam = torch.tensor([-1.0, -10.0, -100.0], dtype=torch.float64)
    ts = torch.linspace(0, 0.3, 3, dtype=torch.float64)
    solver = nde.RadauIIA5(newton=nde.Newton(rtol=1e-12, atol=1e-14, max_iters=20))

    def outputs(y0, w):
        field = lambda t, y: lam * y + torch.tanh(y @ w) * torch.cos(t)  # noqa: E731
        return nde.solve(field, y0, ts, solver, dt=0.05, per_sample=True).ys

    assert torch.autograd.gradcheck(outputs, (y0, w), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_a_step_reuses_the_jacobian_from_its_state_and_leaves_the_state_unchanged():
    solver = nde.RadauIIA5()
    f = lambda t, y: torch.stack([y[1], 10.0 * (1 - y[0] ** 2) * y[1] - y[0]])  # noqa: E731
    y0 = torch.tensor([2.0, 0.0], dtype=torch.float64)
    state = solver.init_state(nde.ConstantStep(1e-3))
    assert isinstance(state, ImplicitState) and state.jacobian is None
    first = solver.step(f, 0.0, y0, f(0.0, y0), 1e-3, False, state)
    assert first.converged is True and state.jacobian is None
    mid = first.state
    assert mid.jacobian is not None and mid.factor is not None and mid.factor[1] == 1e-3
    fields = tuple(mid)
    a = solver.step(f, 1e-3, first.y1, f(1e-3, first.y1), 1e-3, False, mid)
    b = solver.step(f, 1e-3, first.y1, f(1e-3, first.y1), 1e-3, False, mid)
    assert tuple(mid) == fields and torch.equal(a.y1, b.y1)
    assert a.state.jacobian is mid.jacobian  # reused while Newton converges fast


def test_a_failed_newton_solve_is_not_converged_and_drops_the_jacobian():
    solver = nde.GaussLegendre4(nde.Newton(max_iters=1))
    f = lambda t, y: torch.stack([y[1], 1000.0 * (1 - y[0] ** 2) * y[1] - y[0]])  # noqa: E731
    y0 = torch.tensor([2.0, 0.0], dtype=torch.float64)
    ok = solver.step(f, 0.0, y0, f(0.0, y0), 1e-9, False, solver.init_state(nde.ConstantStep(1e-9)))
    assert ok.converged is True and ok.state.jacobian is not None
    failed = solver.step(f, 1e-9, ok.y1, f(1e-9, ok.y1), 1.0, False, ok.state)
    assert failed.converged is False and failed.state.jacobian is None
    with pytest.raises(nde.SolveError):
        nde.solve(f, y0, torch.tensor([0.0, 100.0], dtype=torch.float64), solver, dt=50.0)


def test_dense_output_is_the_cubic_hermite_interpolant():
    f = lambda t, y: -y  # noqa: E731
    y0 = torch.tensor([1.0], dtype=torch.float64)
    ts = torch.tensor([0.0, 0.03, 0.1], dtype=torch.float64)
    for name in NEW:
        assert resolve_solver(name).dense_order <= 3
        sol = nde.solve(f, y0, ts, name, dt=0.1)
        assert abs(float(sol.ys[1, 0]) - np.exp(-0.03)) < 1e-4, name


def test_tableaux_are_validated_and_the_radau_methods_stiffly_accurate():
    with pytest.raises(ValueError, match="sums to"):
        FIRKTableau(c=(0.5,), a=((0.4,),), b=(1.0,))
    with pytest.raises(ValueError, match="invertible"):
        FIRKTableau(c=(0.0, 1.0), a=((0.0, 0.0), (0.5, 0.5)), b=(0.5, 0.5))
    assert nde.RadauIIA3.tableau.stiffly_accurate and nde.RadauIIA5.tableau.stiffly_accurate
    assert not nde.GaussLegendre4.tableau.stiffly_accurate
    for name in FIRK:
        solver = resolve_solver(name)
        assert isinstance(solver, FullyImplicitRK) and solver.implicit
        assert solver.adaptive == (name == "radauiia5")  # the others: fixed steps
    with pytest.raises(ValueError, match="dense"):
        nde.RadauIIA5(nde.Newton(linear_solver="gmres"))


def test_registry_names_cover_torchdiffeqs_implicit_methods():
    for spelling in (
        "radauIIA3",
        "radauIIA5",
        "gl4",
        "gl6",
        "implicit_midpoint",
        "trapezoid",
        "sdirk2",
        "trbdf2",
    ):
        assert resolve_solver(spelling).name == spelling.lower()


def test_a_stale_jacobian_is_replaced_before_a_constant_step_fails():
    """Reused across steps, the Jacobian of the nonlinear rotation goes stale and Newton diverges
    at dt = 1/16; the step retries with a fresh one instead of failing the constant-step solve,
    and lands where evaluating the Jacobian at every step does."""
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    ts = torch.tensor([0.0, 2.0], dtype=torch.float64)
    reused = nde.RadauIIA3(nde.Newton(rtol=1e-12, atol=1e-14, max_iters=20))
    fresh = nde.RadauIIA3(nde.Newton(rtol=1e-12, atol=1e-14, max_iters=20, reuse_jacobian=False))
    a = nde.solve(_nonlinear_rotation, y0, ts, reused, dt=2.0**-4)
    b = nde.solve(_nonlinear_rotation, y0, ts, fresh, dt=2.0**-4)
    assert a.status == nde.Status.SUCCESS and a.stats.steps == 32
    assert torch.allclose(a.ys, b.ys, rtol=0, atol=1e-10)


def _robertson(t, y):
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    return torch.stack([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2, 3e7 * y2**2], -1)


def test_adaptive_radau_iia5_solves_robertson_to_1e_4_of_scipys_radau():
    """The embedded estimate drives the PID controller through Robertson's stiff transient; the
    batch takes each sample's own steps."""
    from scipy.integrate import solve_ivp

    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    ts = torch.tensor([0.0, 1e3], dtype=torch.float64)
    ref = solve_ivp(
        lambda t, y: _robertson(t, torch.from_numpy(y)).numpy(), (0.0, 1e3), y0.numpy(), method="Radau",
        rtol=1e-10, atol=1e-14,
    ).y[:, -1]  # fmt: skip
    sol = nde.solve(_robertson, y0, ts, "radauiia5", rtol=1e-6, atol=1e-10)
    assert sol.status == nde.Status.SUCCESS and sol.stats.steps < 200
    assert np.abs(sol.ys[-1].numpy() - ref).max() / np.abs(ref).max() < 1e-4
    batch = nde.solve(
        _robertson, torch.stack([y0, y0]), ts, "radauiia5", rtol=1e-6, atol=1e-10, per_sample=True
    )
    assert batch.stats.steps.tolist() == [sol.stats.steps] * 2
    assert np.abs(batch.ys[-1, 0].numpy() - ref).max() / np.abs(ref).max() < 1e-4


def test_adaptive_radau_iia5_error_falls_with_the_tolerance():
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    ts = torch.tensor([0.0, 2.0], dtype=torch.float64)
    exact = _rotation_exact(2.0, y0)
    errs = []
    for tol in (1e-4, 1e-6, 1e-8):
        sol = nde.solve(_nonlinear_rotation, y0, ts, "radauiia5", rtol=tol, atol=tol * 1e-2)
        errs.append(float((sol.ys[-1] - exact).abs().max()))
        assert errs[-1] < 30 * tol, (tol, errs)
    assert errs[0] > 10 * errs[1] > 100 * errs[2]
