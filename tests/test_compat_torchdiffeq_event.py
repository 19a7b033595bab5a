"""``compat.torchdiffeq.odeint_event``: the event time and the state there, differentiable by the
implicit function theorem, through ``odeint`` and ``odeint_adjoint``, with any method; torchdiffeq
0.2.5 is the oracle."""

from __future__ import annotations

import math

import pytest
import torch
import torchdiffeq

from torchnde.compat import torchdiffeq as compat


class Field(torch.nn.Module):
    """A small network plus a constant pull, so the second component falls through its levels."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        self.double()

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y) + torch.tensor([0.0, -1.0], dtype=y.dtype)


def _event_and_gradients(lib, interface: str, reverse: bool, method: str = "dopri5", options=None):
    func = Field()
    y0 = torch.tensor([0.3, 1.0], dtype=torch.float64, requires_grad=True)
    level = 1.8 if reverse else 0.2  # the field falls forwards in time, rises backwards
    event_t, ys = lib.odeint_event(
        func, y0, torch.tensor(0.0, dtype=torch.float64), event_fn=lambda t, y: y[1] - level,
        reverse_time=reverse, odeint_interface=getattr(lib, interface), method=method, options=options,
        rtol=1e-10, atol=1e-12,
    )  # fmt: skip
    loss = 2.0 * event_t + ys[-1].square().sum()
    return event_t.detach(), ys.detach(), torch.autograd.grad(loss, (y0, *func.parameters()))


@pytest.mark.parametrize("reverse", [False, True], ids=["forwards", "backwards"])
@pytest.mark.parametrize("interface", ["odeint", "odeint_adjoint"])
def test_odeint_event_time_state_and_gradients_agree_with_torchdiffeq(interface, reverse):
    want_t, want_ys, want_grads = _event_and_gradients(torchdiffeq, interface, reverse)
    got_t, got_ys, got_grads = _event_and_gradients(compat, interface, reverse)
    assert abs(float(got_t - want_t)) < 1e-8
    torch.testing.assert_close(got_ys, want_ys, rtol=1e-8, atol=1e-9)
    for got, want in zip(got_grads, want_grads):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("interface", ["odeint", "odeint_adjoint"])
def test_odeint_event_with_a_fixed_grid_method_has_the_exact_event_time_gradient(interface):
    """y' = -y from y0 hits 0.3 at t* = log(y0 / 0.3): dt*/dy0 = 1 / y0, and y(t*) = 0.3 for
    every y0, so its gradient vanishes (to the accuracy of the grid's interpolant, h = 0.01)."""
    y0 = torch.tensor([1.5], dtype=torch.float64, requires_grad=True)
    decay = torch.nn.Module()
    decay.forward = lambda t, y: -y
    event_t, ys = compat.odeint_event(
        decay, y0, torch.tensor(0.0, dtype=torch.float64), event_fn=lambda t, y: y.sum() - 0.3,
        odeint_interface=getattr(compat, interface), method="rk4", options=dict(step_size=0.01),
        **({"adjoint_params": ()} if interface == "odeint_adjoint" else {}),
    )  # fmt: skip
    assert abs(float(event_t.detach()) - math.log(1.5 / 0.3)) < 2e-5
    (dt_dy0,) = torch.autograd.grad(event_t, y0, retain_graph=True)
    assert abs(float(dt_dy0) - 1 / 1.5) < 2e-5
    (dstate,) = torch.autograd.grad(ys[-1].sum(), y0)
    assert abs(float(dstate)) < 2e-5


def test_odeint_event_differentiates_the_parameters_of_event_fn():
    """Beyond torchdiffeq (which gives them none): the level ``c`` of ``y - c = 0`` for y' = -y
    has dt*/dc = -1/c; checked against the closed form and a central difference."""
    level = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)

    def hit(c: torch.Tensor) -> torch.Tensor:
        event_t, _ = compat.odeint_event(
            lambda t, y: -y, torch.ones(1, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64),
            event_fn=lambda t, y: y.sum() - c, rtol=1e-11, atol=1e-13,
        )  # fmt: skip
        return event_t

    (grad,) = torch.autograd.grad(hit(level), level)
    with torch.no_grad():
        eps = 1e-5
        central = (hit(level + eps) - hit(level - eps)) / (2 * eps)
    assert abs(float(grad) + 1 / 0.4) < 1e-7
    assert abs(float(grad - central)) < 1e-5


def test_odeint_event_tuple_states_keep_their_structure():
    def ball(t, y):
        height, speed = y
        return speed, -9.81 * torch.ones_like(height)

    height = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    y0 = (height, torch.zeros(1, dtype=torch.float64))
    event_t, (hs, vs) = compat.odeint_event(ball, y0, torch.tensor(0.0, dtype=torch.float64),
                                           event_fn=lambda t, y: y[0].sum(), rtol=1e-10, atol=1e-12)  # fmt: skip
    assert hs.shape == (2, 1) and vs.shape == (2, 1)
    assert abs(float(event_t.detach()) - math.sqrt(4 / 9.81)) < 1e-8
    (grad,) = torch.autograd.grad(event_t, height)  # t* = sqrt(2 h / g): dt*/dh = 1 / (g t*)
    assert abs(float(grad) - 1 / (9.81 * math.sqrt(4 / 9.81))) < 1e-7


def test_odeint_event_rejects_a_foreign_interface():
    with pytest.raises(ValueError, match="odeint or odeint_adjoint"):
        compat.odeint_event(lambda t, y: -y, torch.ones(1), torch.tensor(0.0),
                            event_fn=lambda t, y: y.sum() - 0.5, odeint_interface=torchdiffeq.odeint)  # fmt: skip
