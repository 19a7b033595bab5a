"""compat.torchdiffeq.odeint_adjoint against torchdiffeq 0.2.5's odeint_adjoint (the oracle):
gradients with respect to y0, the parameters and the times agree to 1e-5."""

from __future__ import annotations

import pytest
import torch
import torchdiffeq

import torchnde as nde
from torchnde.compat.torchdiffeq import odeint_adjoint


class Field(torch.nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)
        ).double()
        self.omega = torch.nn.Parameter(torch.tensor(1.3, dtype=torch.float64))

    def forward(self, t, y):
        return self.net(y) + self.omega * torch.sin(t) * y.flip(-1)


def _grads(fn, func, method, options, adjoint_options, with_times):
    y0 = torch.tensor([[1.0, 0.5], [0.2, -0.3], [2.0, 0.0]], dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 2, 5, dtype=torch.float64, requires_grad=with_times)
    kw = {
        "rtol": 1e-9,
        "atol": 1e-11,
        "method": method,
        "options": options,
        "adjoint_options": adjoint_options,
    }
    ys = fn(func, y0, t, **kw)
    loss = (ys * torch.linspace(-1, 1, ys.numel(), dtype=torch.float64).view_as(ys)).sum() + ys.square().sum()
    inputs = [y0, *func.parameters()] + ([t] if with_times else [])
    return ys, torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize(
    ("method", "options", "adjoint_options"),
    [
        ("dopri5", None, None),
        ("dopri5", None, {"norm": "seminorm"}),
        ("dopri8", None, None),
        ("bosh3", None, {"norm": "seminorm"}),
        ("rk4", {"step_size": 0.005}, None),
    ],
)
def test_gradients_agree_with_torchdiffeq(method, options, adjoint_options):
    func = Field()
    with_times = options is None  # fixed grids differentiate the times through the grid itself
    want_ys, want = _grads(torchdiffeq.odeint_adjoint, func, method, options, adjoint_options, with_times)
    got_ys, got = _grads(odeint_adjoint, func, method, options, adjoint_options, with_times)
    assert float((got_ys - want_ys).detach().abs().max() / want_ys.detach().abs().max()) < 1e-5
    for g, w in zip(got, want):
        assert float((g - w).abs().max() / w.abs().max().clamp_min(1e-12)) < 1e-5


def test_explicit_adjoint_params_and_closures():
    w = torch.tensor([[0.0, 1.0], [-1.0, -0.2]], dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    grads = []
    for fn in (torchdiffeq.odeint_adjoint, odeint_adjoint):
        ys = fn(lambda t, y: w @ y, y0, t, rtol=1e-10, atol=1e-12, adjoint_params=(w,))
        grads.append(torch.autograd.grad(ys.sum(), (y0, w)))
    for g, want in zip(*grads):
        assert torch.allclose(g, want, rtol=1e-6, atol=1e-9)


def test_torchdiffeq_argument_rules_are_kept():
    y0, t = torch.ones(2), torch.linspace(0, 1, 3)
    with pytest.raises(ValueError, match=r"nn\.Module"):
        odeint_adjoint(lambda t, y: -y, y0, t)
    with pytest.raises(ValueError, match="adjoint_options"):
        odeint_adjoint(Field(), y0.double(), t.double(), method="dopri5", options={"first_step": 0.1},
                       adjoint_method="rk4")  # fmt: skip
    with pytest.raises(ValueError, match="seminorm"):
        odeint_adjoint(Field(), y0.double(), t.double(), adjoint_options={"norm": "l2"})


class JumpField(Field):
    """Field whose sign flips at t = 0.7: a known discontinuity for jump_t."""

    def forward(self, t, y):
        return torch.where(t < 0.7, 1.0, -1.0).to(y.dtype) * super().forward(t, y)


@pytest.mark.parametrize(
    ("method", "options", "adjoint_options"),
    [
        ("dopri5", {"jump_t": torch.tensor([0.7])}, None),  # inherited by the adjoint
        ("dopri5", {"jump_t": torch.tensor([0.7])}, {"jump_t": [0.7], "step_t": [0.3], "first_step": 0.01}),
        (
            "dopri5",
            {"jump_t": torch.tensor([0.7])},
            {"jump_t": [0.7], "safety": 0.8, "ifactor": 5.0, "dfactor": 0.3, "norm": "seminorm"},
        ),
        ("rk4", {"step_size": 0.005}, {"step_size": 0.005, "perturb": False, "interp": "linear"}),
    ],
)
def test_adjoint_options_accepted_and_applied_as_in_torchdiffeq(method, options, adjoint_options):
    """Issue 13, bug 4: odeint_adjoint accepts what odeint accepts in adjoint_options. (Not the
    times' gradients: torchdiffeq integrates df/dt, which misses the jump's contribution.)"""
    func = JumpField()
    want_ys, want = _grads(torchdiffeq.odeint_adjoint, func, method, options, adjoint_options, False)
    got_ys, got = _grads(odeint_adjoint, func, method, options, adjoint_options, False)
    assert float((got_ys - want_ys).detach().abs().max() / want_ys.detach().abs().max()) < 1e-5
    for g, w in zip(got, want):
        assert float((g - w).abs().max() / w.abs().max().clamp_min(1e-12)) < 1e-5


def test_adjoint_jump_ts_save_backward_evaluations():
    func = JumpField()
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    ctrl = nde.PIDController(1e-8, 1e-10, jump_ts=[0.7])
    nfe = []
    for jumps in (None, [0.7]):
        sol = nde.solve(func, y0, t, controller=ctrl, gradient=nde.Adjoint(jump_ts=jumps, params=func))
        sol.ys[-1].sum().backward()
        nfe.append(sol.backward_stats.nfe)
    assert nfe[1] < nfe[0], nfe


def test_adjoint_controller_options_are_checked():
    with pytest.raises(ValueError, match="cannot set"):
        nde.Adjoint(controller_options={"rtol": 1e-3})
    with pytest.raises(TypeError):
        nde.Adjoint(controller_options={"first_step": 0.1})
    with pytest.raises(ValueError, match="safety"):
        nde.Adjoint(controller_options={"safety": 2.0})
    with pytest.raises(ValueError, match="perturb"):
        odeint_adjoint(Field(), torch.ones(2, dtype=torch.float64), torch.linspace(0, 1, 3, dtype=torch.float64),
                       adjoint_options={"perturb": True})  # fmt: skip
    with pytest.raises(ValueError, match="from t\\[0\\] to t\\[-1\\]"):  # each interval's grid is checked
        odeint_adjoint(Field(), torch.ones(2, dtype=torch.float64), torch.linspace(0, 1, 3, dtype=torch.float64),
                       method="rk4", adjoint_options={"grid_constructor": lambda f, y, t: t[:1]})  # fmt: skip


class Switched(torch.nn.Module):
    """A field that jumps at t = 0.5, a grid point: which side a step's end sees is perturb's."""

    def __init__(self) -> None:
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(0.7, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.tensor(0.4, dtype=torch.float64))

    def forward(self, t, y):
        return -self.k * y * torch.where(t < 0.5, 1.0, 3.0) + self.b * torch.where(t <= 0.5, 0.0, 1.0)


@pytest.mark.parametrize("backwards", [False, True], ids=["forwards", "backwards"])
@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_perturb_applies_to_the_adjoint_solve_as_in_torchdiffeq(method, backwards):
    """perturb=True (inherited from options) makes each adjoint step see the field inside the
    step, as torchdiffeq's adjoint does: the gradients of y0 and of b (whose channel depends on
    the adjoint state only) agree with 0.2.5's to round-off, and differ without perturb."""
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    t = t.flip(0) if backwards else t
    grads = {}
    for key, fn, perturb in [("oracle", torchdiffeq.odeint_adjoint, True), ("on", odeint_adjoint, True),
                             ("off", odeint_adjoint, False)]:  # fmt: skip
        func = Switched()
        y0 = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
        options = {"step_size": 0.25, "perturb": perturb}
        adjoint_options = None if key != "off" else {"step_size": 0.25}
        ys = fn(func, y0, t, method=method, options=options, adjoint_options=adjoint_options)
        grads[key] = torch.autograd.grad(ys.square().sum(), (y0, func.b))
    for got, want in zip(grads["on"], grads["oracle"]):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert float((grads["off"][0] - grads["on"][0]).abs().max()) > 1e-2


def _max_norm(log):
    def norm(parts):
        log.append(tuple(p.shape for p in parts))
        return torch.stack([p.abs().max() for p in parts]).max()

    return norm


def _state_only_norm(parts):  # a seminorm by hand: t, y, adj_y only
    return torch.stack([p.abs().max() for p in parts[:3]]).max()


@pytest.mark.parametrize("norm", ["max", "state_only"])
def test_callable_adjoint_norm_agrees_with_torchdiffeq(norm):
    """Issue 13: adjoint_options={'norm': callable} gets torchdiffeq's tuple (t, y, adj_y,
    *adj_params) of scaled errors."""
    func = Field()
    logs, results = [], []
    for fn in (torchdiffeq.odeint_adjoint, odeint_adjoint):
        logs.append([])
        chosen = _max_norm(logs[-1]) if norm == "max" else _state_only_norm
        results.append(_grads(fn, func, "dopri5", None, {"norm": chosen}, False))
    (want_ys, want), (got_ys, got) = results
    assert float((got_ys - want_ys).detach().abs().max() / want_ys.detach().abs().max()) < 1e-5
    for g, w in zip(got, want):
        assert float((g - w).abs().max() / w.abs().max().clamp_min(1e-12)) < 1e-5
    if norm == "max":
        assert logs[1] and set(logs[1]) == set(logs[0])  # the same shapes as torchdiffeq's


def test_callable_adjoint_norm_with_tuple_states():
    lin = torch.nn.Linear(2, 2).double()
    log = []

    class Pair(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, t, y):
            x, v = y
            return v, self.lin(x) - 0.1 * v

    x0 = torch.tensor([[1.0, 0.5], [0.2, -0.3], [2.0, 0.0]], dtype=torch.float64, requires_grad=True)
    y0 = (x0, torch.zeros(3, 2, dtype=torch.float64))
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    grads = []
    for fn in (torchdiffeq.odeint_adjoint, odeint_adjoint):
        log.clear()
        ys = fn(Pair(), y0, t, rtol=1e-9, atol=1e-11, adjoint_options={"norm": _max_norm(log)})
        grads.append(torch.autograd.grad(sum(y.square().sum() for y in ys), (x0, *lin.parameters())))
        shapes = set(log)
    assert shapes == {((), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2,))}
    for g, w in zip(*grads):
        assert float((g - w).abs().max() / w.abs().max()) < 1e-5


class AdjointLogged(Field):
    """``Field`` without its time dependence (torchdiffeq's adjoint integrates a time channel
    that enters its error norm; torchnde has none, so only an autonomous field steps alike),
    with torchdiffeq's adjoint callbacks, logging (kind, t0, dt, augmented shapes)."""

    def __init__(self):
        super().__init__()
        self.log = []

    def forward(self, t, y):
        return self.net(y) + self.omega * y.flip(-1)

    def _entry(self, kind, t0, y0, dt):
        self.log.append((kind, float(t0), float(dt), tuple(tuple(p.shape) for p in y0)))

    def callback_step_adjoint(self, t0, y0, dt):
        self._entry("step", t0, y0, dt)

    def callback_accept_step_adjoint(self, t0, y0, dt):
        self._entry("accept", t0, y0, dt)

    def callback_reject_step_adjoint(self, t0, y0, dt):
        self._entry("reject", t0, y0, dt)


@pytest.mark.parametrize(
    ("method", "options", "backwards"),
    [("dopri5", None, False), ("dopri5", None, True), ("bosh3", None, False), ("rk4", {"step_size": 0.1}, False),
     ("rk4", {"step_size": 0.1}, True)],
)  # fmt: skip
def test_adjoint_callbacks_are_called_as_in_torchdiffeq(method, options, backwards):
    """The ``callback_*_adjoint`` twins are called during the backward solve, with the
    augmented state ``(t, y, adj_y, *adj_params)`` and in the user's time, once per step
    (``callback_step_adjoint``) and once per verdict (adaptive methods). Fixed grids: the same
    calls as torchdiffeq 0.2.5. Adaptive methods: 0.2.5's steps (each output interval started
    afresh, each interval's last step past its end); the step sizes agree to 1e-4 and the times
    to 1e-6 (bosh3's error estimate, a small difference of stages, carries round-off of 1e-7; a
    restart's first step, from Hairer's difference quotient, feels the forward outputs').
    torchdiffeq passes the negated time when ``t`` decreases; torchnde the user's time, as for
    the forward callbacks."""
    t = torch.tensor([1.0, 0.0] if backwards else [0.0, 1.0], dtype=torch.float64)
    y0 = torch.tensor([[1.0, 0.5], [0.2, -0.3]], dtype=torch.float64, requires_grad=True)
    logs = []
    for fn in (torchdiffeq.odeint_adjoint, odeint_adjoint):
        func = AdjointLogged()
        # a tight forward solve: both adjoint solves start from the same state to 1e-10
        ys = fn(func, y0, t, rtol=1e-10, atol=1e-12, method=method, options=options, adjoint_rtol=1e-6,
                adjoint_atol=1e-8)  # fmt: skip
        assert func.log == []  # the forward solve does not call them
        ys.square().sum().backward()
        logs.append(func.log)
    want, got = logs
    count = lambda log, kind: sum(e[0] == kind for e in log)  # noqa: E731
    shapes = ((), (2, 2), (2, 2), *(tuple(p.shape) for p in Field().parameters()))
    assert all(e[3] == shapes for e in got) and want[0][3] == shapes  # torchdiffeq's augmented tuple
    if method == "rk4":
        assert count(got, "step") == count(want, "step") == len(got) == 10
        for g, w in zip(got, want):
            assert g[0] == w[0] and abs(g[1] - abs(w[1])) < 1e-12 and abs(g[2] - w[2]) < 1e-12
        return
    kinds = [e[0] for e in got]
    assert kinds[::2] == ["step"] * (len(got) // 2) and set(kinds[1::2]) <= {"accept", "reject"}
    for step, verdict in zip(got[::2], got[1::2]):
        assert verdict[1:] == step[1:]  # the verdict names its step
    assert got[0][1] == float(t[-1]) and abs(want[0][1]) == float(t[-1])  # it starts at the last time
    assert [e[0] for e in got] == [e[0] for e in want]  # the same steps and verdicts
    for g, w in zip(got, want):
        assert abs(g[1] - abs(w[1])) < 1e-6 and abs(g[2] - w[2]) < 1e-4 * w[2]
    accepted = sum(e[2] for e in got if e[0] == "accept")  # the last step passes t[0], as in 0.2.5
    assert accepted > 1.0 and accepted - got[-1][2] < 1.0


def test_adjoint_callbacks_cost_nothing_unused():
    """Without adjoint callbacks (and without ``first_step``) nothing observes 0.2.5's restart of
    each output interval: the strategy has no controller hook (the step size carries over) and
    the solver is the plain one (no callback in the backward loop)."""
    from torchnde.compat import torchdiffeq as compat

    seen = []
    original = compat.solve

    def spy(*args, **kwargs):
        seen.append(kwargs["gradient"])
        return original(*args, **kwargs)

    compat.solve = spy
    try:
        odeint_adjoint(
            Field(), torch.ones(2, dtype=torch.float64), torch.linspace(0, 1, 3, dtype=torch.float64)
        )
    finally:
        compat.solve = original
    assert isinstance(seen[0], nde.Adjoint) and seen[0].controller_hook is None
    assert "step" not in vars(seen[0].solver)  # the solver's own step, not a hook


def test_per_part_adjoint_tolerances_agree_with_torchdiffeq():
    """torchdiffeq's tensor adjoint_rtol/adjoint_atol: one tolerance per part of the augmented
    tuple (t, y, adj_y, *params); a tight one on adj_y alone is what sets the gradient's accuracy."""
    func = Field()
    n_parts = 3 + len(list(func.parameters()))
    rtol = torch.full((n_parts,), 1e-3, dtype=torch.float64)
    atol = torch.full((n_parts,), 1e-3, dtype=torch.float64)
    rtol[2], atol[2] = 1e-9, 1e-11
    results = []
    for fn in (torchdiffeq.odeint_adjoint, odeint_adjoint):
        y0 = torch.tensor([[1.0, 0.5], [0.2, -0.3]], dtype=torch.float64, requires_grad=True)
        t = torch.linspace(0, 2, 3, dtype=torch.float64)
        ys = fn(func, y0, t, rtol=1e-9, atol=1e-11, adjoint_rtol=rtol, adjoint_atol=atol)
        results.append(torch.autograd.grad(ys.square().sum(), (y0, *func.parameters())))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="one tolerance per part"):
        odeint_adjoint(func, torch.ones(2, dtype=torch.float64), torch.linspace(0, 1, 2, dtype=torch.float64),
                       adjoint_rtol=torch.full((2,), 1e-6, dtype=torch.float64))  # fmt: skip


def test_adjoint_tensor_tolerances_are_per_element_of_the_augmented_state():
    w = torch.tensor([[-1.0, 0.3], [0.0, -0.5]], dtype=torch.float64, requires_grad=True)
    y0 = torch.ones(2, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    tight = nde.Adjoint(rtol=torch.full((8,), 1e-10, dtype=torch.float64), atol=1e-12, params=[w])
    ys = nde.solve(lambda t, y: w @ y, y0, t, gradient=tight, rtol=1e-10, atol=1e-12).ys
    got = torch.autograd.grad(ys.sum(), (y0, w))
    ys = nde.solve(lambda t, y: w @ y, y0, t, rtol=1e-10, atol=1e-12).ys
    want = torch.autograd.grad(ys.sum(), (y0, w))
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e, rtol=1e-7, atol=1e-9)
    wrong = nde.Adjoint(rtol=torch.full((5,), 1e-8, dtype=torch.float64), params=[w])
    ys = nde.solve(lambda t, y: w @ y, y0, t, gradient=wrong).ys
    with pytest.raises(ValueError, match="8 elements"):
        ys.sum().backward()
    with pytest.raises(ValueError, match="1-D"):
        nde.Adjoint(rtol=torch.full((2, 2), 1e-8))
    with pytest.raises(ValueError, match="positive"):
        nde.Adjoint(atol=torch.tensor([1e-8, -1.0]))


class _Counting(Field):
    """``Field`` counting its evaluations during the backward pass only."""

    def __init__(self) -> None:
        super().__init__()
        self.backward_calls = 0

    def forward(self, t, y):
        self.backward_calls += torch.is_grad_enabled()  # the forward solve runs without a graph
        return super().forward(t, y)


@pytest.mark.parametrize("first_step", [None, 0.01])
def test_the_adjoint_carries_its_step_size_over_output_times_unless_first_step_asks_for_restarts(first_step):
    """0.2.5 starts every output interval of the adjoint afresh. Nothing observes that without
    adjoint callbacks, so the drop-in carries the step size over: the same gradients (to 1e-6
    here, at rtol 1e-8) with fewer evaluations. A ``first_step`` in ``adjoint_options`` is the
    first step of every interval, as in 0.2.5: then the evaluations are 0.2.5's."""
    calls, grads = [], []
    for fn in (torchdiffeq.odeint_adjoint, odeint_adjoint):
        func = _Counting()
        y0 = torch.tensor([[1.0, 0.5], [0.2, -0.3]], dtype=torch.float64, requires_grad=True)
        t = torch.linspace(0, 1, 21, dtype=torch.float64)  # short intervals, as in ode_demo
        options = None if first_step is None else {"first_step": first_step}
        ys = fn(func, y0, t, rtol=1e-8, atol=1e-10, adjoint_options=options)
        grads.append(torch.autograd.grad(ys.square().sum(), (y0, *func.parameters())))
        calls.append(func.backward_calls)
    for g, w in zip(*grads[::-1]):
        assert float((g - w).abs().max() / w.abs().max()) < 1e-6
    if first_step is None:
        assert calls[1] < 0.75 * calls[0], calls  # 255 against 364
    else:
        assert calls[1] == calls[0], calls
