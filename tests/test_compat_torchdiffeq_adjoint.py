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
                       method="rk4", adjoint_options={"perturb": True})  # fmt: skip


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
