"""Stiff problems: the implicit solvers against scipy's Radau at rtol 1e-10 (Robertson,
Van der Pol with mu = 1000, HIRES), Newton failures handled as rejections, gradients by the
implicit function theorem, and the explicit solvers' stiffness hint."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import torchnde as nde


def robertson(t, y):
    y1, y2, y3 = y[0], y[1], y[2]
    return torch.stack([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2, 3e7 * y2**2])


def van_der_pol(t, y, mu=1000.0):
    return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])


def hires(t, y):
    y1, y2, y3, y4, y5, y6, y7, y8 = y
    return torch.stack(
        [
            -1.71 * y1 + 0.43 * y2 + 8.32 * y3 + 0.0007,
            1.71 * y1 - 8.75 * y2,
            -10.03 * y3 + 0.43 * y4 + 0.035 * y5,
            8.32 * y2 + 1.71 * y3 - 1.12 * y4,
            -1.745 * y5 + 0.43 * y6 + 0.43 * y7,
            -280.0 * y6 * y8 + 0.69 * y4 + 1.71 * y5 - 0.43 * y6 + 0.69 * y7,
            280.0 * y6 * y8 - 1.81 * y7,
            -280.0 * y6 * y8 + 1.81 * y7,
        ]
    )


# name -> (f, y0, t1, atol)
PROBLEMS = {
    "robertson": (robertson, [1.0, 0.0, 0.0], 1e5, 1e-10),
    "van_der_pol": (van_der_pol, [2.0, 0.0], 3000.0, 1e-8),
    "hires": (hires, [1.0, 0, 0, 0, 0, 0, 0, 0.0057], 321.8122, 1e-10),
}


@functools.cache
def reference(name: str) -> np.ndarray:
    """y(t1) from scipy's Radau at rtol 1e-10 (atol 1e-4 of the test's)."""
    f, y0, t1, atol = PROBLEMS[name]

    def f_np(t, y):
        return f(t, torch.from_numpy(y)).numpy()

    sol = solve_ivp(f_np, (0.0, t1), y0, method="Radau", rtol=1e-10, atol=atol * 1e-4)
    assert sol.success
    return sol.y[:, -1]


def _solve(name, solver, **kw):
    f, y0, t1, atol = PROBLEMS[name]
    ts = torch.tensor([0.0, t1], dtype=torch.float64)
    return nde.solve(f, torch.tensor(y0, dtype=torch.float64), ts, solver, rtol=1e-6, atol=atol, **kw)


@pytest.mark.parametrize("solver", ["kvaerno5", "rodas5p"])
@pytest.mark.parametrize("name", list(PROBLEMS))
def test_stiff_solvers_match_radau_to_1e_4_relative(name, solver):
    sol = _solve(name, solver, max_steps=20_000)
    ref = reference(name)
    atol = PROBLEMS[name][3]
    rel = np.abs(sol.ys[-1].numpy() - ref) / np.maximum(np.abs(ref), atol)
    assert rel.max() <= 1e-4, rel


def test_kvaerno5_steps_on_robertson_within_1_3x_diffrax():
    """diffrax 0.7's Kvaerno5 takes 694 steps on Robertson at rtol 1e-6, atol 1e-10."""
    sol = _solve("robertson", "kvaerno5")
    assert sol.stats.steps <= 1.3 * 694, sol.stats


def test_rodas5p_steps_on_robertson_within_2x_radau():
    """scipy's Radau takes 188 steps on Robertson at rtol 1e-6, atol 1e-10."""
    sol = _solve("robertson", "rodas5p")
    assert sol.stats.steps <= 2 * 188, sol.stats


@pytest.mark.parametrize("name", ["kvaerno3", "kvaerno4"])
def test_lower_order_esdirk_methods_solve_robertson(name):
    sol = _solve("robertson", name)
    ref = reference("robertson")
    rel = np.abs(sol.ys[-1].numpy() - ref) / np.abs(ref)
    assert rel.max() <= 1e-4, rel


@pytest.mark.parametrize("name", ["robertson", "hires", "van_der_pol"])
def test_dopri5_fails_fast_with_the_stiffness_hint(name):
    with pytest.raises(
        nde.MaxStepsReached, match=r"solver='rodas5p' for a small.*solver='kvaerno5' for a large"
    ):
        _solve(name, "dopri5", max_steps=2_000)  # each needs far more: the hint, not the count, is tested


def test_newton_failure_rejects_and_shrinks_the_step():
    """A first step far too large for Newton from a stiff start: the step is rejected (not
    accepted unconverged) and the solve still succeeds."""
    f, y0, _, _ = PROBLEMS["van_der_pol"]
    ctrl = nde.PIDController(1e-6, 1e-8, dt0=50.0)
    solver = nde.Kvaerno5(newton=nde.Newton(max_iters=3))
    sol = nde.solve(f, torch.tensor(y0, dtype=torch.float64), torch.tensor([0.0, 100.0], dtype=torch.float64),
                    solver, controller=ctrl)  # fmt: skip
    assert sol.status == nde.Status.SUCCESS and sol.stats.rejected > 0


def test_newton_failure_with_constant_steps_is_an_error():
    f, y0, _, _ = PROBLEMS["van_der_pol"]
    solver = nde.Kvaerno5(newton=nde.Newton(max_iters=2))
    with pytest.raises(nde.ConvergenceFailure, match="smaller dt"):
        nde.solve(f, torch.tensor(y0, dtype=torch.float64), torch.tensor([0.0, 100.0], dtype=torch.float64),
                  solver, dt=50.0)  # fmt: skip


def _stiff_linear(w, rates=(-1.0, -100.0, -1000.0)):
    """A stiff linear-plus-nonlinear field with a trainable matrix."""
    lam = torch.tensor(rates, dtype=torch.float64)

    def f(t, y):
        return lam * y + torch.tanh(y @ w) * torch.cos(t)

    return f


@pytest.mark.parametrize(
    ("solver", "per_sample"),
    [
        *[(name, False) for name in ("implicit_euler", "kvaerno3", "kvaerno4", "kvaerno5", "rodas5p")],
        ("kvaerno5", True),
        ("rodas5p", True),
    ],
)
def test_gradients_of_implicit_solves_pass_gradcheck(solver, per_sample):
    gen = torch.Generator().manual_seed(0)
    w = (0.3 * torch.randn(3, 3, dtype=torch.float64, generator=gen)).requires_grad_()
    y0 = torch.randn(2, 3, dtype=torch.float64, generator=gen).requires_grad_()
    ts = torch.linspace(0, 1, 4, dtype=torch.float64)

    def outputs(y0, w):
        return nde.solve(_stiff_linear(w), y0, ts, solver, dt=0.05, per_sample=per_sample).ys

    assert torch.autograd.gradcheck(outputs, (y0, w), eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize("gradient", ["checkpoint", "adjoint"])
def test_every_gradient_strategy_works_with_kvaerno5(gradient):
    """Checkpoint replays the implicit steps exactly. The adjoint re-solves y backwards in time,
    which is unstable for the fast modes of a stiff system (the classic limit of backsolve
    adjoints; with rates down to -1000 its gradient is off by 5%, whatever the solver), so it is
    checked on a mildly stiff field."""
    gen = torch.Generator().manual_seed(1)
    w = (0.3 * torch.randn(3, 3, dtype=torch.float64, generator=gen)).requires_grad_()
    y0 = torch.randn(2, 3, dtype=torch.float64, generator=gen).requires_grad_()
    ts = torch.linspace(0, 1, 4, dtype=torch.float64)
    grads = {}
    for name in ("backprop", gradient):
        strategy = nde.Adjoint(params=[w]) if name == "adjoint" else name
        rates = (-1.0, -100.0, -1000.0) if gradient == "checkpoint" else (-1.0, -5.0, -10.0)
        field = _stiff_linear(w, rates)
        tight = {"rtol": 1e-9, "atol": 1e-11} if gradient == "adjoint" else {"rtol": 1e-6, "atol": 1e-8}
        sol = nde.solve(field, y0, ts, "kvaerno5", **tight, gradient=strategy)  # replay: exact at any tol
        grads[name] = torch.autograd.grad(sol.ys.square().sum(), (y0, w))
    tol = 1e-10 if gradient == "checkpoint" else 1e-5
    for got, want in zip(grads[gradient], grads["backprop"]):
        assert float((got - want).abs().max() / want.abs().max()) < tol


def test_no_implicit_function_step_without_gradients():
    """Without anything requiring grad, no Jacobian is spent on the implicit-function step:
    the same solve under no_grad and with grad enabled takes the same evaluations."""
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    ts = torch.tensor([0.0, 10.0], dtype=torch.float64)
    with torch.no_grad():
        a = nde.solve(robertson, y0, ts, "kvaerno5", rtol=1e-6, atol=1e-10)
    b = nde.solve(robertson, y0, ts, "kvaerno5", rtol=1e-6, atol=1e-10)
    assert a.stats == b.stats and torch.equal(a.ys, b.ys)


def _robertson_rows(t, y):
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    return torch.stack([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2, 3e7 * y2**2], -1)


@pytest.mark.parametrize("solver", ["rodas5p", "kvaerno5", "kvaerno3"])
def test_per_sample_stiff_solve_equals_each_sample_alone(solver):
    """Per-sample Jacobians [B, N, N] and batched factorisations: every sample takes the steps
    it takes alone (with its own time span)."""
    y0 = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.0, 0.1], [0.5, 1e-5, 0.5]], dtype=torch.float64)
    ts = torch.tensor([[0.0, 10.0, 1e3], [0.0, 1.0, 40.0], [0.0, 5.0, 1e4]], dtype=torch.float64)
    batch = nde.solve(_robertson_rows, y0, ts, solver, rtol=1e-6, atol=1e-10, per_sample=True)
    for i in range(3):  # (per-sample ESDIRK re-evaluates Jacobians every step; global mode reuses them)
        alone = nde.solve(_robertson_rows, y0[i : i + 1], ts[i : i + 1], solver, rtol=1e-6, atol=1e-10,
                          per_sample=True)  # fmt: skip
        assert int(batch.stats.steps[i]) == int(alone.stats.steps[0])
        assert torch.allclose(batch.ys[:, i], alone.ys[:, 0], rtol=1e-10, atol=1e-13)
    ref = reference_robertson_at(1e3)
    assert np.abs(batch.ys[-1, 0].numpy() - ref).max() / np.abs(ref).max() < 1e-4


def reference_robertson_at(t1: float) -> np.ndarray:
    def f_np(t, y):
        return robertson(t, torch.from_numpy(y)).numpy()

    return solve_ivp(f_np, (0.0, t1), [1.0, 0.0, 0.0], method="Radau", rtol=1e-10, atol=1e-14).y[:, -1]


def test_per_sample_newton_failure_rejects_only_that_sample():
    """Van der Pol batch with one sample forced into a far-too-large first step."""
    f = lambda t, y: torch.stack([y[..., 1], 1000.0 * (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], -1)  # noqa: E731
    y0 = torch.tensor([[2.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    ts = torch.tensor([0.0, 50.0], dtype=torch.float64)
    solver = nde.Kvaerno5(newton=nde.Newton(max_iters=3))
    sol = nde.solve(f, y0, ts, solver, controller=nde.PIDController(1e-6, 1e-8, dt0=20.0), per_sample=True)
    assert bool((sol.status == 0).all()) and bool((sol.stats.rejected > 0).all())
    assert torch.allclose(sol.ys[-1, 0], sol.ys[-1, 1])


def test_rodas5p_uses_the_exact_time_derivative():
    """A non-autonomous stiff problem y' = -1000 (y - cos t) - sin t, exact y = cos t."""
    y0 = torch.tensor([1.0], dtype=torch.float64)
    ts = torch.tensor([0.0, 2.0], dtype=torch.float64)
    sol = nde.solve(
        lambda t, y: -1000.0 * (y - torch.cos(t)) - torch.sin(t), y0, ts, "rodas5p", rtol=1e-8, atol=1e-10
    )
    assert abs(float(sol.ys[-1, 0]) - float(torch.cos(ts[-1]))) < 1e-7


def test_esdirk_tableaux_are_validated():
    from torchnde.solvers import ESDIRKTableau

    with pytest.raises(ValueError, match="sums to"):
        ESDIRKTableau(c=(0.0, 1.0), a=((0.4, 0.5),), b=(0.0, 1.0), e=(-0.5, 0.5))
    with pytest.raises(ValueError, match="one diagonal value"):
        ESDIRKTableau(
            c=(0.0, 0.5, 1.0), a=((0.25, 0.25), (0.3, 0.3, 0.4)), b=(0.3, 0.3, 0.4), e=(0.1, -0.1, 0.0)
        )
    for name in ("implicit_euler", "kvaerno3", "kvaerno4", "kvaerno5"):
        assert nde.solvers.resolve_solver(name).tableau.stiffly_accurate


@pytest.mark.parametrize("name", ["implicit_euler", "kvaerno3", "kvaerno4", "kvaerno5", "rodas5p"])
def test_implicit_methods_converge_at_their_order_on_a_nonlinear_problem(name):
    """Forced Van der Pol (mu = 2) on [0, 2] against a DOP853 reference at rtol 1e-13; Newton
    tolerances tight enough not to limit the accuracy."""

    def f(t, y):
        return torch.stack([y[1], 2.0 * (1 - y[0] ** 2) * y[1] - y[0] + torch.sin(t)])

    y0 = torch.tensor([2.0, 0.0], dtype=torch.float64)
    ts = torch.tensor([0.0, 2.0], dtype=torch.float64)
    exact = nde.solve(f, y0, ts, "dopri8", rtol=1e-13, atol=1e-15).ys[-1]
    solver = nde.solvers.resolve_solver(name)
    if name != "rodas5p":
        solver = type(solver)(newton=nde.Newton(rtol=1e-13, atol=1e-15, max_iters=20))
    first = {1: 6, 3: 5, 4: 5, 5: 4}[solver.order]  # finest steps stay above round-off
    hs = [2.0 * 2.0**-k for k in range(first, first + 4)]
    errs = [float((nde.solve(f, y0, ts, solver, dt=h).ys[-1] - exact).abs().max()) for h in hs]
    slope = float(np.polyfit(np.log(hs), np.log(errs), 1)[0])
    assert abs(slope - solver.order) <= 0.3, f"{name}: slope {slope:.2f}, errors {errs}"


def test_matrix_free_newton_krylov_matches_the_dense_solver():
    """A stiff 1-D reaction-diffusion problem: GMRES with finite-difference Jacobian-vector
    products gives the dense solver's solution and (through the transposed GMRES solve of the
    implicit-function step) its gradient."""
    n = 40
    dx = 1.0 / (n + 1)
    w = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)

    def f(t, u):
        padded = torch.nn.functional.pad(u, (1, 1))
        return (padded[2:] - 2 * u + padded[:-2]) / dx**2 - w * u**3

    x = torch.linspace(dx, 1 - dx, n, dtype=torch.float64)
    u0 = torch.sin(torch.pi * x) + 0.5 * torch.sin(3 * torch.pi * x)
    ts = torch.tensor([0.0, 0.1], dtype=torch.float64)
    out = {}
    for linear_solver in ("dense", "gmres"):
        solver = nde.Kvaerno5(newton=nde.Newton(linear_solver=linear_solver))
        sol = nde.solve(f, u0, ts, solver, rtol=1e-8, atol=1e-10)
        out[linear_solver] = (sol.ys[-1].detach(), torch.autograd.grad(sol.ys[-1].sum(), w)[0], sol.stats)
    assert torch.allclose(out["gmres"][0], out["dense"][0], rtol=0, atol=1e-7)
    assert abs(float(out["gmres"][1] / out["dense"][1]) - 1) < 1e-5
    with pytest.raises(ValueError, match="gmres"):
        nde.Newton(linear_solver="cg")


def test_a_long_explicit_solve_of_a_stiff_problem_advises_an_implicit_solver():
    f, y0, _, _ = PROBLEMS["van_der_pol"]
    sol = nde.solve(f, torch.tensor(y0, dtype=torch.float64), torch.tensor([0.0, 2.0], dtype=torch.float64),
                    "dopri5", rtol=1e-6, atol=1e-9)  # fmt: skip
    assert sol.success and sol.stats.steps >= 1000
    assert sol.advice is not None and "kvaerno5" in sol.advice
    calm = nde.solve(
        lambda t, y: -y, torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 1.0]), rtol=1e-10
    )
    assert calm.advice is None
    slow = nde.solve(lambda t, y: torch.cos(200 * t) * torch.ones_like(y), torch.zeros(1, dtype=torch.float64),
                     torch.tensor([0.0, 3.0], dtype=torch.float64), "dopri5", rtol=1e-9, atol=1e-11)  # fmt: skip
    assert slow.stats.steps >= 1000 and slow.advice is None  # many steps for accuracy, not stiffness


def test_a_long_solve_of_a_0d_state_gets_its_stiffness_check():
    """Issue 13, bug 1: the stiffness check after a solve of >= 1000 steps viewed the norm of a 0-d
    state with an empty size and raised a TypeError."""
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    sol = nde.solve(lambda t, y: -y, torch.tensor(1.0, dtype=torch.float64), t, "heun", rtol=1e-9)
    assert sol.success and sol.stats.steps >= 1000 and sol.advice is None
    assert sol.ys.shape == (2,) and abs(float(sol.ys[-1]) - 0.36787944117144233) < 1e-7
    stiff = nde.solve(lambda t, y: -1e4 * (y - torch.cos(t)), torch.tensor(0.0, dtype=torch.float64),
                      torch.tensor([0.0, 1.0], dtype=torch.float64), "dopri5", rtol=1e-6)  # fmt: skip
    assert stiff.stats.steps >= 1000 and "kvaerno5" in stiff.advice
    with pytest.raises(nde.MaxStepsReached, match="looks stiff"):  # the failure's check, too
        nde.solve(lambda t, y: -1e4 * (y - torch.cos(t)), torch.tensor(0.0, dtype=torch.float64),
                  torch.tensor([0.0, 10.0], dtype=torch.float64), "dopri5", max_steps=2000)  # fmt: skip
