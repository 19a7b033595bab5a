"""compat.torchdiffeq's fixed-grid Adams methods against torchdiffeq 0.2.5 itself (the oracle)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchdiffeq

from torchnde.compat.torchdiffeq import odeint, odeint_adjoint

A = torch.tensor([[-0.1, 1.0], [-1.0, -0.1]], dtype=torch.float64)
Y0 = torch.tensor([[1.0, 0.5], [0.2, -0.3]], dtype=torch.float64)
METHODS = ["explicit_adams", "implicit_adams", "fixed_adams"]


def forced(t, y):
    return y @ A.T + torch.sin(t)


def pair(t, y):
    q, p = y
    return p, -torch.sin(q) - 0.1 * p + 0.2 * torch.cos(t)


class Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()

    def forward(self, t, y):
        return self.net(y)


def _close(got, want, rtol=1e-10):
    if isinstance(want, tuple):
        for g, w in zip(got, want):
            _close(g, w, rtol)
        return
    scale = want.abs().max()
    assert float((got - want).abs().max()) <= rtol * float(scale), float((got - want).abs().max() / scale)


def _both(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 0.2.5's corrector often stops unconverged: both warn
        return odeint(*args, **kwargs), torchdiffeq.odeint(*args, **kwargs)


CASES = {
    "outputs_as_grid": (torch.linspace(0.0, 2.0, 21, dtype=torch.float64), {}),
    "step_size_linear": (torch.tensor([0.0, 0.37, 1.3, 2.0], dtype=torch.float64), {"step_size": 0.05}),
    "step_size_cubic": (
        torch.tensor([0.0, 0.37, 1.3, 2.0], dtype=torch.float64),
        {"step_size": 0.05, "interp": "cubic"},
    ),
    "short_last_step": (torch.tensor([0.0, 1.0, 2.03], dtype=torch.float64), {"step_size": 0.1}),
    "perturb": (torch.linspace(0.0, 2.0, 11, dtype=torch.float64), {"step_size": 0.1, "perturb": True}),
    "max_order": (torch.linspace(0.0, 2.0, 5, dtype=torch.float64), {"step_size": 0.05, "max_order": 6}),
    "max_iters": (torch.linspace(0.0, 2.0, 5, dtype=torch.float64), {"step_size": 0.05, "max_iters": 2}),
}


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("method", METHODS)
def test_odeint_agrees_with_torchdiffeq(method, case, reverse):
    t, options = CASES[case]
    if reverse:
        t = t.flip(0)
    got, want = _both(forced, Y0, t, method=method, options=dict(options))
    _close(got, want)


@pytest.mark.parametrize("method", METHODS)
def test_tuple_states_agree_with_torchdiffeq(method):
    y0 = (torch.tensor([1.0, 0.3], dtype=torch.float64), torch.tensor([0.0, -0.2], dtype=torch.float64))
    # 0.2.5's 11-step Adams–Bashforth grows round-off differences on this field (by ~30 per 0.2
    # in t): a short interval keeps the comparison at round-off
    t = torch.linspace(0.0, 0.6, 4, dtype=torch.float64)
    got, want = _both(pair, y0, t, method=method, options={"step_size": 0.01}, rtol=1e-9, atol=1e-11)
    assert isinstance(got, tuple) and len(got) == 2
    _close(got, want)


@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
def test_odeint_adjoint_agrees_with_torchdiffeq(method):
    """The forward solve and the gradients to round-off: each output interval's adjoint solve
    starts its Adams history afresh on the interval's own grid, as 0.2.5's does."""
    t = torch.linspace(0.0, 1.0, 4, dtype=torch.float64)

    def run(interface):
        f = Mlp()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ys = interface(f, Y0, t, method=method, options={"step_size": 0.02}, rtol=1e-9, atol=1e-11)
            ys.pow(2).sum().backward()
        return ys.detach(), torch.cat([p.grad.flatten() for p in f.parameters()])

    got, got_grad = run(odeint_adjoint)
    want, want_grad = run(torchdiffeq.odeint_adjoint)
    _close(got, want)
    _close(got_grad, want_grad)


def test_fixed_adams_is_implicit_adams():
    t = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    a = odeint(forced, Y0, t, method="fixed_adams", options={"step_size": 0.05})
    b = odeint(forced, Y0, t, method="implicit_adams", options={"step_size": 0.05})
    assert torch.equal(a, b)


def test_unknown_adams_options_raise():
    with pytest.raises(ValueError, match="not supported for method 'explicit_adams'"):
        odeint(forced, Y0, torch.tensor([0.0, 1.0], dtype=torch.float64), method="explicit_adams",
               options={"first_step": 0.1})  # fmt: skip
    with pytest.raises(ValueError, match="max_order"):
        odeint(forced, Y0, torch.tensor([0.0, 1.0], dtype=torch.float64), method="explicit_adams",
               options={"max_order": 13})  # fmt: skip
