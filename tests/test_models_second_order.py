"""SecondOrderNeuralODE: it integrates x'' = a(x, v), with given, zero or learned v0."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from torchnde.models import SecondOrderNeuralODE


def _damped_law() -> nn.Linear:
    layer = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(
            torch.tensor([[-1.01, -0.2]], dtype=torch.float64)
        )  # a = -(γ²+ω²) x - 2γ v, γ = 0.1, ω = 1
    return layer


def test_integrates_the_damped_oscillator_exactly():
    model = SecondOrderNeuralODE(_damped_law(), solver="dopri8", rtol=1e-12, atol=1e-12)
    t = torch.linspace(0, 10, 11, dtype=torch.float64)
    x0 = torch.tensor([[1.0]], dtype=torch.float64)
    xs, vs = model(x0, t, v0=torch.zeros_like(x0), return_velocity=True)
    g, w = 0.1, 1.0
    exact = torch.exp(-g * t) * (torch.cos(w * t) + g / w * torch.sin(w * t))
    torch.testing.assert_close(xs[:, 0, 0], exact, rtol=1e-9, atol=1e-10)
    exact_v = -torch.exp(-g * t) * (w + g**2 / w) * torch.sin(w * t)
    torch.testing.assert_close(vs[:, 0, 0], exact_v, rtol=1e-9, atol=1e-10)


def test_initial_velocity_defaults_to_zero_and_can_be_learned_from_x0():
    x0 = torch.randn(4, 1, dtype=torch.float64)
    model = SecondOrderNeuralODE(_damped_law(), rtol=1e-9, atol=1e-9)
    _, v = model(x0, torch.tensor([0.0, 1e-9], dtype=torch.float64), return_velocity=True)
    assert torch.allclose(v[0], torch.zeros_like(x0))
    learned = SecondOrderNeuralODE(_damped_law(), velocity=nn.Linear(1, 1).double())
    out = learned(x0, torch.linspace(0, 1, 3, dtype=torch.float64))
    out.sum().backward()
    assert learned.velocity.weight.grad is not None and learned.velocity.weight.grad.abs() > 0


def test_final_position_is_returned_without_times():
    model = SecondOrderNeuralODE(
        _damped_law(), t_span=(0.0, math.pi), solver="dopri8", rtol=1e-12, atol=1e-12
    )
    x = model(torch.ones(1, 1, dtype=torch.float64))
    expected = math.exp(-0.1 * math.pi) * (math.cos(math.pi) + 0.1 * math.sin(math.pi))
    assert x.shape == (1, 1) and x.item() == pytest.approx(expected, rel=1e-9)


def test_acceleration_network_gets_gradients():
    net = nn.Sequential(nn.Linear(2, 8), nn.ELU(), nn.Linear(8, 1))
    model = SecondOrderNeuralODE(net, solver="dopri5", rtol=1e-4, atol=1e-5)
    model(torch.randn(6, 1), torch.linspace(0, 2, 5)).pow(2).mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    assert model.nfe > 0


def test_mismatched_v0_is_rejected():
    model = SecondOrderNeuralODE(_damped_law())
    with pytest.raises(ValueError, match="v0 must have"):
        model(torch.zeros(3, 1, dtype=torch.float64), v0=torch.zeros(3, 2, dtype=torch.float64))
