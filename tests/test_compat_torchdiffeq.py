"""compat.torchdiffeq.odeint against torchdiffeq 0.2.5 itself (the oracle)."""

from __future__ import annotations

import math

import pytest
import torch
import torchdiffeq
from torchdiffeq._impl.odeint import SOLVERS

import torchnde as nde
from torchnde.compat._steps025 import stepper
from torchnde.compat.torchdiffeq import odeint, odeint_adjoint
from torchnde.solvers import Newton, resolve_solver

from .helpers import piecewise_jump_exact

A = torch.tensor([[-0.1, 1.0], [-1.0, -0.1]], dtype=torch.float64)


def linear_forced(t, y):
    return y @ A.T + torch.sin(t)


def nonlinear(t, y):
    return torch.stack([y[..., 1], -torch.sin(y[..., 0]) - 0.1 * y[..., 1]], -1)


class Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)
        ).double()

    def forward(self, t, y):
        return self.net(y)


FIELDS = {"linear_forced": linear_forced, "pendulum": nonlinear, "mlp": Mlp()}
Y0 = torch.tensor([[1.0, 0.5], [0.2, -0.3], [2.0, 0.0]], dtype=torch.float64)


@pytest.mark.parametrize("field", list(FIELDS))
@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("euler", None),
        ("midpoint", {"step_size": 0.07}),
        ("heun2", {"step_size": 0.1}),
        ("heun3", {"step_size": 0.05, "interp": "cubic"}),
        ("rk4", None),
        ("rk4", {"step_size": 0.13}),
        ("rk4", {"step_size": 0.1, "interp": "cubic"}),
    ],
)
def test_fixed_grid_methods_agree_to_1e_10(field, method, options):
    t = torch.linspace(0, 3, 7, dtype=torch.float64)
    want = torchdiffeq.odeint(FIELDS[field], Y0, t, method=method, options=options)
    got = odeint(FIELDS[field], Y0, t, method=method, options=options)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)


def test_fixed_grid_backwards_in_time_agrees():
    t = torch.linspace(3, 0, 7, dtype=torch.float64)
    want = torchdiffeq.odeint(linear_forced, Y0, t, method="rk4", options={"step_size": 0.1})
    got = odeint(linear_forced, Y0, t, method="rk4", options={"step_size": 0.1})
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("field", list(FIELDS))
@pytest.mark.parametrize(
    ("method", "tol"),
    [(m, tol) for m in ("dopri5", "dopri8", "bosh3", "fehlberg2") for tol in (1e-5, 1e-8)]
    # adaptive_heun's tight case at 1e-7: at 1e-8 it takes tens of thousands of steps (16 s of the
    # suite for the three fields) and checks nothing the looser one and the others do not
    + [("adaptive_heun", 1e-5), ("adaptive_heun", 1e-7)],
)
def test_adaptive_methods_agree_within_10x_tolerance(field, method, tol):
    """Agreement within 10 x tol (scaled by the solution's size). Where torchdiffeq itself is
    further than that from the exact solution (its dopri8 and bosh3 interpolate outputs with a
    lower-order polynomial, and fehlberg2's first-order error estimate lets its error grow far past
    the tolerance), torchnde must instead be about as close to the exact solution: within 2x of
    torchdiffeq's own error."""
    f = FIELDS[field]
    t = torch.linspace(0, 3, 7, dtype=torch.float64)
    want = torchdiffeq.odeint(f, Y0, t, method=method, rtol=tol, atol=tol)
    got = odeint(f, Y0, t, method=method, rtol=tol, atol=tol)
    exact = torchdiffeq.odeint(f, Y0, t, method="dopri8", rtol=1e-13, atol=1e-13)
    bound = 10 * tol * (1 + exact.abs())
    torchdiffeq_ok = bool(((want - exact).abs() <= bound).all())
    if torchdiffeq_ok:
        assert bool(((got - want).abs() <= bound).all()), float((got - want).abs().max())
    else:
        assert float((got - exact).abs().max()) <= 2 * float((want - exact).abs().max())


def test_tuple_states_agree():
    def f(t, y):
        x, v = y
        return v, -x - 0.1 * v

    y0 = (torch.tensor([1.0, 0.5], dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    t = torch.linspace(0, 5, 6, dtype=torch.float64)
    want = torchdiffeq.odeint(f, y0, t, rtol=1e-8, atol=1e-8)
    got = odeint(f, y0, t, rtol=1e-8, atol=1e-8)
    assert isinstance(got, tuple) and len(got) == 2
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert torch.allclose(g, w, atol=1e-7)


def test_options_are_honoured():
    t = torch.linspace(0, 1, 4, dtype=torch.float64)
    calls = []

    def norm(x):
        calls.append(x.shape)
        return x.abs().max()

    options = {
        "first_step": 0.01,
        "max_num_steps": 1000,
        "step_t": [0.3],
        "jump_t": [0.6],
        "norm": norm,
        "dtype": torch.float64,
    }
    got = odeint(linear_forced, Y0, t, options=options)
    want = torchdiffeq.odeint(linear_forced, Y0, t, options=options)
    assert torch.allclose(got, want, atol=1e-6)
    assert calls and calls[0] == Y0.shape  # the norm sees the state's shape, as in torchdiffeq


@pytest.mark.parametrize("backwards", [False, True])
@pytest.mark.parametrize("option", ["step_t", "jump_t"])
def test_a_stop_at_the_final_time_ends_the_last_step_there_as_in_torchdiffeq(option, backwards):
    """0.2.5 cuts a step at the next step_t/jump_t, the final time included (torchcde's
    ``jump_t=X.grid_points``): its last step ends there instead of stepping past and
    interpolating back, a difference of the interpolation's error (1e-4 here)."""
    t = torch.tensor([2.0, 0.0] if backwards else [0.0, 2.0], dtype=torch.float64)
    options = {option: torch.tensor([0.7, float(t[-1])], dtype=torch.float64)}
    got = odeint(nonlinear, Y0, t, rtol=1e-3, atol=1e-5, options=options)
    want = torchdiffeq.odeint(nonlinear, Y0, t, rtol=1e-3, atol=1e-5, options=options)
    past = torchdiffeq.odeint(nonlinear, Y0, t, rtol=1e-3, atol=1e-5, options={option: options[option][:1]})
    assert torch.allclose(got, want, atol=1e-13, rtol=0)
    assert float((past[-1] - want[-1]).abs().max()) > 1e-6  # the stop changes the last step


def test_max_num_steps_is_enforced():
    with pytest.raises(RuntimeError, match="maximum number of steps"):
        odeint(linear_forced, Y0, torch.tensor([0.0, 100.0]), options={"max_num_steps": 10})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "dopri6"}, "unknown method 'dopri6'; valid methods"),
        ({"options": {"grid_constructor": None}}, r"not supported for method 'dopri5'"),
        ({"method": "rk4", "options": {"first_step": 0.1}}, r"not supported for method 'rk4'"),
    ],
)
def test_unsupported_methods_and_options_raise(kwargs, match):
    with pytest.raises((ValueError, NotImplementedError), match=match):
        odeint(linear_forced, Y0, torch.tensor([0.0, 1.0], dtype=torch.float64), **kwargs)


def test_switching_is_an_import_change():
    """The default method and tolerances match torchdiffeq's."""
    t = torch.linspace(0, 2 * math.pi, 5, dtype=torch.float64)
    want = torchdiffeq.odeint(nonlinear, Y0, t)
    got = odeint(nonlinear, Y0, t)
    assert torch.allclose(got, want, atol=1e-6)


def test_a_long_adaptive_solve_of_a_0d_state_agrees():
    """Issue 13, bug 1: 0-d states crashed in the stiffness check after >= 1000 steps."""
    y0, t = torch.tensor(1.0, dtype=torch.float64), torch.linspace(0, 1, 3, dtype=torch.float64)
    got = odeint(lambda t, y: -y, y0, t, method="adaptive_heun", rtol=1e-9)
    want = torchdiffeq.odeint(lambda t, y: -y, y0, t, method="adaptive_heun", rtol=1e-9)
    assert got.shape == want.shape == (3,)
    assert torch.allclose(got, want, atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backwards", [False, True])
@pytest.mark.parametrize("t_jump", [0.5, 0.1])
def test_jump_t_saves_evaluations_in_both_dtypes(dtype, backwards, t_jump):
    """Issue 13, bug 3: the steps around a jump ended at its float64 neighbours, which round onto
    the jump in float32, so f saw its far side and the step was rejected again and again
    (float32, jump at 0.5: 261 evaluations with jump_t, 242 without; now 33)."""
    calls = [0]

    def f(t, y):
        calls[0] += 1
        return torch.where(t < t_jump, 1.0, -1.0).to(y.dtype) + 0.1 * y

    y0 = torch.ones(2, dtype=dtype)
    t = torch.tensor([1.0, 0.0] if backwards else [0.0, 1.0], dtype=dtype)
    evaluations, ends = [], []
    for options in (None, {"jump_t": torch.tensor([t_jump], dtype=torch.float64)}):
        calls[0] = 0
        ends.append(odeint(f, y0, t, method="dopri5", options=options)[-1])
        evaluations.append(calls[0])
    assert evaluations[1] < evaluations[0] / 2, evaluations
    exact = piecewise_jump_exact(t_jump, backwards)
    assert torch.allclose(ends[1].double(), torch.full_like(ends[1], exact, dtype=torch.float64),
                          rtol=1e-5 if dtype == torch.float32 else 1e-7)  # fmt: skip


def test_tsit5_is_torchnde_tsit5():
    """torchdiffeq 0.2.5 has no tsit5 (its later releases do): the name maps to torchnde's own,
    stepped by torchdiffeq's rule like every adaptive method of the drop-in."""
    assert "tsit5" not in SOLVERS
    t = torch.linspace(0, 3, 7, dtype=torch.float64)
    got = odeint(nonlinear, Y0, t, method="tsit5", rtol=1e-8, atol=1e-8)
    ctrl = stepper("tsit5", rtol=1e-8, atol=1e-8)
    assert torch.equal(got, nde.solve(nonlinear, Y0, t, "tsit5", controller=ctrl).ys)
    exact = torchdiffeq.odeint(nonlinear, Y0, t, method="dopri8", rtol=1e-13, atol=1e-13)
    assert torch.allclose(got, exact, atol=1e-6)


def ball(t, y):
    return torch.stack([y[..., 1], -9.81 * torch.ones_like(y[..., 1]) - 0.1 * y[..., 1]], -1)


EVENT_CASES = {
    "scalar": (ball, torch.tensor([1.0, 0.5], dtype=torch.float64), lambda t, y: y[0]),
    "first_of_many": (nonlinear, Y0, lambda t, y: y[..., 1] + 0.4),
    "time_and_state": (linear_forced, Y0[0], lambda t, y: y.sum() - torch.cos(t)),
}


@pytest.mark.parametrize("case", list(EVENT_CASES))
@pytest.mark.parametrize("method", ["dopri5", "bosh3", "tsit5"])
@pytest.mark.parametrize("backwards", [False, True])
def test_event_fn_agrees_with_torchdiffeq(case, method, backwards):
    """Issue 13: odeint(event_fn=...) returns (event_t, states at [t0, event_t]) as in 0.2.5."""
    f, y0, g = EVENT_CASES[case]
    t = torch.tensor([0.0, -1.0] if backwards else [0.0, 1.0], dtype=torch.float64)
    want_t, want = torchdiffeq.odeint(f, y0, t, method="dopri5" if method == "tsit5" else method,
                                      rtol=1e-10, atol=1e-12, event_fn=g)  # fmt: skip
    got_t, got = odeint(f, y0, t, method=method, rtol=1e-10, atol=1e-12, event_fn=g)
    assert got_t.shape == want_t.shape == () and got_t.dtype == want_t.dtype
    assert abs(float(got_t - want_t)) < 1e-7  # torchdiffeq's bosh3 interpolates to lower order
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-7)


def test_event_fn_with_tuples_fixed_steps_and_an_initial_zero():
    def f(t, y):
        return y[1], -9.81 * torch.ones_like(y[1])

    y0 = (torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64))
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    exact = (0.5 + math.sqrt(0.25 + 2 * 9.81)) / 9.81
    for method, options, tol in (("dopri5", None, 1e-8), ("rk4", {"step_size": 0.01}, 1e-4)):
        want_t, want = torchdiffeq.odeint(
            f, y0, t, method=method, options=options, event_fn=lambda t, y: y[0].sum()
        )
        got_t, got = odeint(f, y0, t, method=method, options=options, event_fn=lambda t, y: y[0].sum())
        assert abs(float(got_t) - exact) < 1e-8  # torchnde finds the root on its dense output
        assert abs(float(got_t - want_t)) < tol
        assert isinstance(got, tuple) and all(a.shape == b.shape for a, b in zip(got, want))
        assert all(torch.allclose(a, b, atol=10 * tol) for a, b in zip(got, want))
    got_t, got = odeint(ball, Y0[0], t, event_fn=lambda t, y: y[0] - 1.0)
    want_t, want = torchdiffeq.odeint(ball, Y0[0], t, event_fn=lambda t, y: y[0] - 1.0)
    assert float(got_t) == float(want_t) == 0.0 and torch.equal(got, want)
    with pytest.raises(ValueError, match="len\\(t\\) == 2"):
        odeint(ball, Y0[0], torch.linspace(0, 1, 3), event_fn=lambda t, y: y[0])
    with pytest.raises(ValueError, match="step_size"):
        odeint(ball, Y0[0], t, method="rk4", event_fn=lambda t, y: y[0])


@pytest.mark.parametrize("adjoint", [False, True])
def test_event_fn_gradients_agree_with_torchdiffeq(adjoint):
    """At the fixed event time, as in torchdiffeq (the event time carries no gradient)."""
    results = []
    for fn in (torchdiffeq.odeint_adjoint, odeint_adjoint) if adjoint else (torchdiffeq.odeint, odeint):
        func = Mlp()
        y0 = torch.tensor([1.0, 0.5], dtype=torch.float64, requires_grad=True)
        t = torch.tensor([0.0, 1.0], dtype=torch.float64)
        event_t, ys = fn(func, y0, t, rtol=1e-10, atol=1e-12, event_fn=lambda t, y: 0.7 - t + 0.1 * y[0])
        assert fn in (torchdiffeq.odeint, torchdiffeq.odeint_adjoint) or not event_t.requires_grad
        results.append((event_t, ys, torch.autograd.grad(ys[-1].square().sum(), (y0, *func.parameters()))))
    (want_t, want, want_g), (got_t, got, got_g) = results
    assert abs(float(got_t - want_t)) < 1e-8 and torch.allclose(got, want, atol=1e-7)
    for g, w in zip(got_g, want_g):
        assert torch.allclose(g, w, rtol=1e-6, atol=1e-8)


class Logged(torch.nn.Module):
    """A field with torchdiffeq's solver callbacks, logging (kind, t0, dt, y0's shape)."""

    def __init__(self):
        super().__init__()
        self.log = []

    def forward(self, t, y):
        return -y + torch.sin(3 * t)

    def callback_step(self, t0, y0, dt):
        self.log.append(("step", float(t0), float(dt), y0.shape))

    def callback_accept_step(self, t0, y0, dt):
        self.log.append(("accept", float(t0), float(dt), y0.shape))

    def callback_reject_step(self, t0, y0, dt):
        self.log.append(("reject", float(t0), float(dt), y0.shape))


@pytest.mark.parametrize("backwards", [False, True])
def test_solver_callbacks_are_called_as_in_torchdiffeq(backwards):
    t = torch.tensor([1.0, 0.0] if backwards else [0.0, 1.0], dtype=torch.float64)
    logs = []
    for fn in (torchdiffeq.odeint, odeint):
        func = Logged()
        fn(func, Y0, t, rtol=1e-8, atol=1e-8, options={"first_step": 0.5})  # the first step is rejected
        logs.append(func.log)
    want, got = logs
    kinds = [entry[0] for entry in got]
    assert kinds[::2] == ["step"] * (len(got) // 2) and "reject" in kinds and "accept" in kinds
    for step, verdict in zip(got[::2], got[1::2]):
        assert verdict[1:] == step[1:] and step[3] == Y0.shape  # the verdict names its step
    assert got[0][1] == float(t[0]) and got[0][2] == 0.5  # user time, |dt|
    assert [e[:2] for e in got[:3]] == [("step", float(t[0])), ("reject", float(t[0])), ("step", float(t[0]))]
    # torchdiffeq's steps: the same calls, times and step sizes (to round-off in the error estimate)
    assert [e[0] for e in got] == [e[0] for e in want]
    for g, w in zip(got, want):
        assert abs(g[1] - w[1]) < 1e-9 and abs(g[2] - w[2]) < 1e-9 * w[2], (g, w)
    accepted = sum(e[2] for e in got if e[0] == "accept")  # the last step passes t1, as in torchdiffeq
    assert accepted > 1.0 and accepted - got[-1][2] < 1.0


def test_fixed_grid_callbacks_and_the_adjoint_twins():
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    func = Logged()
    with pytest.warns(UserWarning, match="callback_accept_step"):
        odeint(func, Y0, t, method="rk4", options={"step_size": 0.25})
    assert [(e[0], e[1]) for e in func.log] == [("step", 0.0), ("step", 0.25), ("step", 0.5), ("step", 0.75)]
    func.log.clear()
    func.callback_step_adjoint = lambda t0, y0, dt: func.log.append(("adjoint", float(t0), float(dt)))
    odeint_adjoint(
        func, Y0.clone().requires_grad_(True), t, method="rk4", options={"step_size": 0.25}
    ).sum().backward()
    adjoint = [e[1:] for e in func.log if e[0] == "adjoint"]  # torchdiffeq's grid, backwards
    assert adjoint == [(1.0, 0.25), (0.75, 0.25), (0.5, 0.25), (0.25, 0.25)]


IMPLICIT = {  # torchdiffeq's name (its releases after 0.2.5): (torchnde's solver, order, step sizes on the output grid)
    "implicit_euler": ("implicit_euler", 1, (0.02, 0.01)),
    "implicit_midpoint": ("implicit_midpoint", 2, (0.1, 0.05)),
    "trapezoid": ("trapezoid", 2, (0.1, 0.05)),
    "radauIIA3": ("radauiia3", 3, (0.1, 0.05)),
    "radauIIA5": ("radauiia5", 5, (0.25, 0.125)),
    "gl4": ("gl4", 4, (0.25, 0.125)),
    "gl6": ("gl6", 6, (1.0, 0.5)),  # below, Newton's tolerance shows
    "sdirk2": ("sdirk2", 2, (0.1, 0.05)),
    "trbdf2": ("trbdf2", 2, (0.1, 0.05)),
}


@pytest.mark.parametrize("method", list(IMPLICIT))
def test_fixed_grid_implicit_methods_have_their_order(method):
    """Issue 13: torchdiffeq's fixed-grid implicit method names, on torchnde's solvers."""
    assert method not in SOLVERS  # torchdiffeq 0.2.5 lacks them: torchnde's own solver is the reference
    _, order, sizes = IMPLICIT[method]
    t = torch.linspace(0, 2, 3, dtype=torch.float64)
    exact = torchdiffeq.odeint(linear_forced, Y0, t, method="dopri8", rtol=1e-13, atol=1e-13)
    errs = [float((odeint(linear_forced, Y0, t, method=method, options={"step_size": h}) - exact).abs().max())
            for h in sizes]  # fmt: skip
    assert abs(math.log2(errs[0] / errs[1]) - order) < 0.3, errs


@pytest.mark.parametrize("method", list(IMPLICIT))
@pytest.mark.parametrize("backwards", [False, True])
def test_fixed_grid_implicit_methods_step_torchdiffeqs_grid(method, backwards):
    """Same grid, same numbers as nde.solve with ConstantStep, forwards and backwards, for tuple
    states, through odeint and odeint_adjoint (whose gradients approach odeint's as h -> 0)."""
    # odeint's default rtol/atol are the Newton tolerances
    solver = type(resolve_solver(IMPLICIT[method][0]))(newton=Newton(rtol=1e-7, atol=1e-9))
    t = (
        torch.linspace(2, 0, 5, dtype=torch.float64)
        if backwards
        else torch.linspace(0, 2, 5, dtype=torch.float64)
    )
    want = nde.solve(linear_forced, Y0, t, solver, controller=nde.ConstantStep(0.5)).ys
    got = odeint(linear_forced, Y0, t, method=method)  # no step_size: steps from output to output
    assert float((got - want).abs().max()) < 1e-10

    def pair(t, y):
        x, v = y
        return v, -x - 0.1 * v + torch.sin(t)

    y0 = (torch.tensor([1.0, 0.5], dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    want = nde.solve(pair, y0, t, solver, controller=nde.ConstantStep(0.1)).ys
    got = odeint(pair, y0, t, method=method, options={"step_size": 0.1})
    assert isinstance(got, tuple) and all(float((g - w).abs().max()) < 1e-10 for g, w in zip(got, want))

    func = Mlp()
    grads = []
    for fn in (odeint, odeint_adjoint):
        y0 = Y0.clone().requires_grad_(True)
        ys = fn(func, y0, t, method=method, options={"step_size": 0.01})
        grads.append((ys, torch.autograd.grad(ys.square().sum(), (y0, *func.parameters()))))
    (ys_bp, g_bp), (ys_adj, g_adj) = grads
    with torch.no_grad():  # the adjoint's forward solve runs without a graph
        want = nde.solve(func, Y0, t, solver, controller=nde.ConstantStep(0.01)).ys
    assert float((ys_adj.detach() - want).abs().max()) < 1e-10
    assert float((ys_adj - ys_bp).detach().abs().max()) < 1e-8  # Newton's tolerance, with a graph or not
    for a, b in zip(g_adj, g_bp):
        assert float((a - b).abs().max() / b.abs().max()) < (1e-2 if IMPLICIT[method][1] == 1 else 1e-3)


def switching(t, y):
    """Switches at t = 0.5 and t = 1, grid points of step_size 0.25: which side a stage at a grid
    point sees is what perturb decides."""
    inside = (t > 0.5) & (t < 1.0)
    return torch.where(inside, 2.0, -1.0).to(y.dtype) * y + torch.where(t >= 1.0, 1.0, 0.0).to(y.dtype)


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun2", "heun3", "rk4"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("backwards", [False, True])
def test_perturb_agrees_with_torchdiffeq(method, dtype, backwards):
    """Issue 13: options['perturb']=True, f at the next float after a step's start and the float
    before its end (in the state's dtype), as in torchdiffeq 0.2.5."""
    y0 = torch.tensor([1.0, 0.3], dtype=dtype)
    t = torch.linspace(1.5, 0, 7, dtype=dtype) if backwards else torch.linspace(0, 1.5, 7, dtype=dtype)
    results = {}
    for perturb in (True, False):
        options = {"step_size": 0.25, "perturb": perturb}
        want = torchdiffeq.odeint(switching, y0, t, method=method, options=options)
        got = odeint(switching, y0, t, method=method, options=options)
        tol = 1e-10 if dtype == torch.float64 else 1e-6
        assert float((got - want).abs().max()) <= tol * float(want.abs().max())
        results[perturb] = got
    assert float((results[True] - results[False]).abs().max()) > 1e-3  # the perturbation matters
    got = odeint(switching, y0, t, method=method, options={"perturb": True})  # steps from output to output
    want = torchdiffeq.odeint(switching, y0, t, method=method, options={"perturb": True})
    assert float((got - want).abs().max()) <= 1e-6 * float(want.abs().max())


def test_perturb_with_the_adjoint():
    """The forward solve of odeint_adjoint honours perturb as odeint does (the adjoint solve's
    steps are in tests/test_compat_torchdiffeq_adjoint.py)."""
    func = Mlp()
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    options = {"step_size": 0.25, "perturb": True}
    ys = odeint_adjoint(func, Y0, t, method="rk4", options=options)
    assert torch.allclose(ys, odeint(func, Y0, t, method="rk4", options=options), atol=1e-12)
    with pytest.raises(ValueError, match="perturb is an option of the fixed-grid methods"):
        odeint_adjoint(func, Y0, t, adjoint_options={"perturb": True})


def squared_grid(func, y0, t):
    """A grid denser near t[0] than near t[-1] (21 points), in the user's time."""
    return t[0] + (t[-1] - t[0]) * torch.linspace(0, 1, 21, dtype=t.dtype) ** 2


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun3", "rk4"])
@pytest.mark.parametrize("interp", ["linear", "cubic"])
@pytest.mark.parametrize("backwards", [False, True])
def test_grid_constructor_agrees_with_torchdiffeq(method, interp, backwards):
    """Issue 13: options['grid_constructor'](func, y0, t) -> grid, as in torchdiffeq 0.2.5."""
    t = (
        torch.linspace(3, 0, 7, dtype=torch.float64)
        if backwards
        else torch.linspace(0, 3, 7, dtype=torch.float64)
    )
    options = {"grid_constructor": squared_grid, "interp": interp}
    want = torchdiffeq.odeint(linear_forced, Y0, t, method=method, options=options)
    got = odeint(linear_forced, Y0, t, method=method, options=options)
    assert float((got - want).abs().max()) < 1e-10
    seen = []
    odeint(
        linear_forced,
        Y0,
        t,
        method=method,
        options={"grid_constructor": lambda f, y0, t: seen.append(t) or t},
    )
    assert torch.equal(seen[0], t)  # the constructor sees the user's times


def test_grid_constructor_is_checked():
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="mutually exclusive"):
        odeint(
            linear_forced, Y0, t, method="rk4", options={"grid_constructor": squared_grid, "step_size": 0.1}
        )
    with pytest.raises(ValueError, match="from t\\[0\\] to t\\[-1\\]"):
        odeint(linear_forced, Y0, t, method="rk4", options={"grid_constructor": lambda f, y0, t: t[:-1]})
    with pytest.raises(ValueError, match="mutually exclusive"):  # per interval in the adjoint solve
        odeint_adjoint(
            Mlp(), Y0, t, method="rk4", adjoint_options={"grid_constructor": squared_grid, "step_size": 0.1}
        )
