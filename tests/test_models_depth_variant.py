"""DepthVariantNeuralODE and its bases: one constant mode is the plain neural ODE, exactly."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from torchnde.models import DepthVariantNeuralODE, FourierBasis, NeuralODE, PolynomialBasis


def test_one_constant_mode_equals_the_plain_neural_ode_exactly():
    torch.manual_seed(0)
    for basis in ("fourier", "polynomial"):
        model = DepthVariantNeuralODE(2, [16, 16], basis=basis, modes=0, solver="dopri5").double()
        layers = [layer for layer in model.field.layers]
        plain_net = nn.Sequential(
            nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2)
        ).double()
        with torch.no_grad():
            for lin, gal in zip([plain_net[0], plain_net[2], plain_net[4]], layers):
                lin.weight.copy_(gal.weight[0])
                lin.bias.copy_(gal.bias[0])
        x = torch.randn(8, 2, dtype=torch.float64)
        plain = NeuralODE(plain_net, solver="dopri5")
        t = torch.linspace(0, 1, 4, dtype=torch.float64)
        assert torch.equal(model(x, t), plain(x, t))
        assert model.nfe == plain.nfe


def test_fourier_basis_values():
    s = torch.tensor(0.125, dtype=torch.float64)
    phi = FourierBasis(2, period=1.0)(s)
    w = 2 * math.pi * 0.125
    expected = torch.tensor(
        [1, math.cos(w), math.cos(2 * w), math.sin(w), math.sin(2 * w)], dtype=torch.float64
    )
    torch.testing.assert_close(phi, expected)


def test_polynomial_basis_is_legendre_on_the_span():
    s = torch.tensor(1.5, dtype=torch.float64)
    phi = PolynomialBasis(3, span=(1.0, 2.0))(s)  # x = 0
    torch.testing.assert_close(phi, torch.tensor([1.0, 0.0, -0.5, 0.0], dtype=torch.float64))
    x = 0.3
    phi = PolynomialBasis(3, span=(-1.0, 1.0))(torch.tensor(x, dtype=torch.float64))
    expected = [1, x, (3 * x**2 - 1) / 2, (5 * x**3 - 3 * x) / 2]
    torch.testing.assert_close(phi, torch.tensor(expected, dtype=torch.float64))


def test_higher_modes_make_the_field_depend_on_depth():
    torch.manual_seed(0)
    model = DepthVariantNeuralODE(2, [8], basis="fourier", modes=2).double()
    with torch.no_grad():
        for layer in model.field.layers:
            layer.weight[1:].normal_()
    y = torch.randn(3, 2, dtype=torch.float64)
    f0 = model.field(torch.tensor(0.0, dtype=torch.float64), y)
    f1 = model.field(torch.tensor(0.3, dtype=torch.float64), y)
    assert (f0 - f1).abs().max() > 1e-3


def test_coefficients_receive_gradients_and_data_control_widens_the_input():
    model = DepthVariantNeuralODE(3, [8], basis="polynomial", modes=2, data_controlled=True)
    assert model.field.layers[0].weight.shape == (3, 8, 6)
    model(torch.randn(5, 3)).sum().backward()
    assert model.field.layers[0].weight.grad[2].abs().sum() > 0


def test_unknown_basis_is_rejected():
    with pytest.raises(ValueError, match="unknown basis"):
        DepthVariantNeuralODE(2, basis="chebyshev")
