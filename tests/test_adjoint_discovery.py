"""With ``params=None`` and an ``f`` that is not an ``nn.Module``, ``Adjoint`` and ``Reversible``
differentiate the tensors ``f`` uses, found from one evaluation of ``f``: closed-over networks,
plain tensors and non-leaf tensors get the gradients of central finite differences (of an
accurate fixed-step solve) and of ``Backprop``."""

from __future__ import annotations

import math

import pytest
import torch

import torchnde as nde
from torchnde.compat.torchdiffeq import odeint_adjoint

from .helpers import central_difference

TIGHT = {"rtol": 1e-10, "atol": 1e-10}
ADJOINT = nde.Adjoint(**TIGHT)
TS = torch.tensor([0.0, 0.4, 0.7, 1.0], dtype=torch.float64)


def _mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()


def _loss(ys: torch.Tensor) -> torch.Tensor:
    weights = torch.linspace(-1.0, 1.0, ys.numel(), dtype=ys.dtype).view_as(ys)
    return ys.square().sum() + (weights * ys).sum()


def _reference(f, y0) -> torch.Tensor:
    """An accurate solve that is smooth in its inputs (fixed steps of an eighth-order method),
    for finite differences."""
    return nde.solve(f, y0, TS, "dopri8", dt=0.02).ys


def _finite_differences(loss, tensor: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(tensor)
    for index in torch.cartesian_prod(*(torch.arange(n) for n in tensor.shape)).reshape(-1, tensor.ndim):
        out[tuple(index.tolist())] = central_difference(loss, tensor, tuple(index.tolist()), eps=1e-5)
    return out


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


def test_adjoint_differentiates_a_module_a_lambda_closes_over():
    net = _mlp()
    y0 = torch.tensor([0.6, -0.4], dtype=torch.float64, requires_grad=True)
    sol = nde.solve(lambda t, y: net(y), y0, TS, "dopri5", gradient=ADJOINT, **TIGHT)
    tensors = [y0, *net.parameters()]
    grads = torch.autograd.grad(_loss(sol.ys), tensors)

    def loss():
        return _loss(_reference(lambda t, y: net(y), y0))

    for got, tensor in zip(grads, tensors):
        assert _relative(got, _finite_differences(loss, tensor)) < 1e-6


@pytest.mark.parametrize("solver", ["dopri5", "kvaerno5"])
def test_adjoint_differentiates_a_closed_over_tensor(solver):
    a = torch.tensor([[-0.5, 1.0, 0.2], [-1.0, -0.3, 0.4], [0.1, -0.6, -0.8]], dtype=torch.float64)
    a.requires_grad_(True)
    y0 = torch.tensor([1.0, 0.5, -0.5], dtype=torch.float64)
    sol = nde.solve(lambda t, y: torch.tanh(a @ y), y0, TS, solver, gradient=ADJOINT, **TIGHT)
    (got,) = torch.autograd.grad(_loss(sol.ys), a)
    want = _finite_differences(lambda: _loss(_reference(lambda t, y: torch.tanh(a @ y), y0)), a)
    assert _relative(got, want) < 1e-6


def test_a_closed_over_non_leaf_tensor_passes_its_gradient_to_the_leaf():
    base = torch.tensor([[-0.5, 1.0], [-1.0, -0.3]], dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([[1.5, 0.5], [2.0, 1.0]], dtype=torch.float64)  # saved by W's graph
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)

    def loss(gradient=None):
        w = base * scale  # computed outside f: f closes over a non-leaf tensor
        f = lambda t, y: torch.tanh(w @ y)  # noqa: E731
        ys = (
            _reference(f, y0)
            if gradient is None
            else nde.solve(f, y0, TS, "dopri5", gradient=gradient, **TIGHT).ys
        )
        return _loss(ys) + w.square().sum()  # w is also used outside the solve

    (got,) = torch.autograd.grad(loss(ADJOINT), base)
    assert _relative(got, _finite_differences(loss, base)) < 1e-6


def test_per_sample_adjoint_with_a_closure_matches_backprop():
    net = _mlp(1)
    omega = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([[0.6, -0.4], [0.1, 0.9], [-1.0, 0.3]], dtype=torch.float64, requires_grad=True)
    ts = torch.stack([TS, TS * 0.5 + 0.2, TS * 1.5 - 0.1])  # each sample's own times

    def f(t, y):  # t: [B, 1]
        return net(y) + torch.cos(omega * t) * y.flip(-1)

    tensors = [y0, omega, *net.parameters()]
    grads = {}
    for name, gradient in (("backprop", "backprop"), ("adjoint", ADJOINT)):
        sol = nde.solve(f, y0, ts, "tsit5", per_sample=True, gradient=gradient, **TIGHT)
        grads[name] = torch.autograd.grad(_loss(sol.ys), tensors)
    for got, want in zip(grads["adjoint"], grads["backprop"]):
        assert _relative(got, want) < 1e-7


def test_reversible_with_a_closure_over_a_module_equals_backprop():
    net = _mlp(2)
    y0 = torch.tensor([0.6, -0.4], dtype=torch.float64, requires_grad=True)
    tensors = [y0, *net.parameters()]
    grads = {}
    for name in ("backprop", "reversible"):
        sol = nde.solve(lambda t, y: net(y), y0, TS, "reversible_heun", dt=0.05, gradient=name)
        grads[name] = torch.autograd.grad(_loss(sol.ys), tensors)
    for got, want in zip(grads["reversible"], grads["backprop"]):
        assert _relative(got, want) < 1e-10


def test_a_closure_over_y0_itself_gets_both_contributions():
    y0 = torch.tensor([0.6, -0.4], dtype=torch.float64, requires_grad=True)
    f = lambda t, y: torch.sin(y0) - y  # noqa: E731
    grads = [
        torch.autograd.grad(_loss(nde.solve(f, y0, TS, "dopri5", gradient=g, **TIGHT).ys), y0)[0]
        for g in ("backprop", ADJOINT)
    ]
    assert _relative(grads[1], grads[0]) < 1e-7


def test_discovery_costs_one_evaluation_and_only_while_grad_is_recording():
    a = torch.tensor([[-0.5, 1.0], [-1.0, -0.3]], dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    calls = [0]

    def f(t, y):
        calls[0] += 1
        return a @ y

    with torch.no_grad():
        sol = nde.solve(f, y0, TS, "dopri5", gradient="adjoint")
    assert calls[0] == int(sol.stats.nfe) and not sol.ys.requires_grad
    calls[0] = 0
    sol = nde.solve(f, y0, TS, "dopri5", gradient="adjoint")
    assert calls[0] == int(sol.stats.nfe) + 1 and sol.ys.requires_grad


@pytest.mark.parametrize("gradient", ["adjoint", "reversible"])
def test_nothing_to_differentiate_names_what_to_pass(gradient):
    """The adjoint asked for while nothing requires grad: say so at the solve, not in backward."""
    a = torch.tensor([[-0.5, 1.0], [-1.0, -0.3]], dtype=torch.float64)  # does not require grad
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    solver, kw = ("reversible_heun", {"dt": 0.01}) if gradient == "reversible" else ("dopri5", {})
    with pytest.raises(ValueError, match=r"nothing to differentiate.*params=\[\.\.\.\]"):
        nde.solve(lambda t, y: a @ y, y0, TS, solver, gradient=gradient, **kw)
    with torch.no_grad():  # no gradient wanted: no error
        sol = nde.solve(lambda t, y: a @ y, y0, TS, solver, gradient=gradient, **kw)
    assert torch.isfinite(sol.ys).all() and not sol.ys.requires_grad
    sol = nde.solve(lambda t, y: a @ y, y0, TS, solver, **kw)  # backprop: outputs without grad
    assert not sol.ys.requires_grad


class _Opaque(torch.autograd.Function):
    """``y * sum(w)`` computed without any torch operation on ``w`` (as an extension kernel
    might): no torch function ever sees ``w``."""

    @staticmethod
    def forward(ctx, w_sum: float, w_shape: tuple, w, y):
        ctx.save_for_backward(y)
        ctx.w_sum, ctx.w_shape = w_sum, w_shape
        return y * w_sum

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return None, None, (grad * y).sum().expand(ctx.w_shape), grad * ctx.w_sum


def test_an_unidentifiable_outside_tensor_asks_for_params():
    base = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    w = base * 2
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    w_sum = float(w.detach().sum())

    def f(t, y):
        return _Opaque.apply(w_sum, (2,), w, y)

    with pytest.raises(
        ValueError, match=r"computed outside f .*MulBackward0.*pass Adjoint\(params=\[\.\.\.\]\)"
    ):
        nde.solve(f, y0, TS, "dopri5", gradient="adjoint")
    sol = nde.solve(f, y0, TS, "dopri5", gradient=nde.Adjoint(params=[w], **TIGHT), **TIGHT)
    (got,) = torch.autograd.grad(sol.ys[-1].sum(), base)  # y(1) = y0 exp(sum(w)), w = 2 base
    want = torch.full((2,), 2 * float(y0.sum()) * math.exp(w_sum), dtype=torch.float64)
    assert torch.allclose(got, want, rtol=1e-8)


@pytest.mark.parametrize("shape", [(), (3,)])
@pytest.mark.parametrize("api", ["solve", "per_sample", "odeint_adjoint"])
def test_adjoint_of_a_field_depending_on_neither_state_nor_parameters(shape, api):
    # y(t) = y0 + sin(t), so d/dy0 of sum(y(1)^2) = 2 (y0 + sin(1)) (issue 13, bug 2)
    if api == "per_sample":
        shape = (2, *shape)
    y0 = torch.full(shape, 0.5, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0.0, 1.0, 3, dtype=torch.float64)
    if api == "odeint_adjoint":
        ys = odeint_adjoint(lambda t, y: torch.cos(t) * torch.ones_like(y), y0, t, adjoint_params=())
    else:
        sol = nde.solve(lambda t, y: torch.cos(t).expand_as(y), y0, t, "dopri5", gradient="adjoint",
                        per_sample=api == "per_sample")  # fmt: skip
        ys = sol.ys
    (got,) = torch.autograd.grad(ys[-1].square().sum(), y0)
    assert torch.allclose(got, torch.full(shape, 2 * (0.5 + math.sin(1.0)), dtype=torch.float64), rtol=1e-6)
