"""AugmentedNeuralODE: zero and input-layer augmentation, readout, shapes and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchnde.models import AugmentedNeuralODE, NeuralODE


def test_zero_augmentation_appends_zero_channels():
    model = AugmentedNeuralODE(nn.Linear(5, 5), augment_dims=3)
    h0 = model.augment(torch.randn(4, 2))
    assert h0.shape == (4, 5) and torch.equal(h0[:, 2:], torch.zeros(4, 3))


def test_images_are_augmented_along_the_channel_axis():
    field = nn.Conv2d(3 + 2, 3 + 2, 3, padding=1)
    model = AugmentedNeuralODE(field, augment_dims=2, dim=1, solver="rk4", dt=0.5)
    assert model(torch.randn(2, 3, 6, 6)).shape == (2, 5, 6, 6)


def test_without_augmentation_it_is_the_plain_neural_ode():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    x = torch.randn(6, 2, dtype=torch.float64)
    plain = NeuralODE(net, rtol=1e-9, atol=1e-9)(x)
    torch.testing.assert_close(AugmentedNeuralODE(net, rtol=1e-9, atol=1e-9)(x), plain)


def test_augmented_dimension_lets_the_flow_cross_in_one_dimension():
    # The rotation field on (x, a) by pi maps (±1, 0) to (∓1, 0): with the extra dimension the
    # two trajectories go around each other, impossible for a 1-D flow.
    rot = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        rot.weight.copy_(torch.tensor([[0.0, -torch.pi], [torch.pi, 0.0]]))
    readout = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        readout.weight.copy_(torch.tensor([[1.0, 0.0]]))
    model = AugmentedNeuralODE(rot, augment_dims=1, readout=readout, solver="dopri8", rtol=1e-12, atol=1e-12)
    x = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    torch.testing.assert_close(model(x), -x, rtol=1e-9, atol=1e-9)


def test_input_layer_augmentation_lifts_with_a_learned_layer():
    model = AugmentedNeuralODE(nn.Linear(6, 6), input_layer=nn.Linear(2, 6), readout=nn.Linear(6, 1))
    out = model(torch.randn(3, 2))
    out.sum().backward()
    assert out.shape == (3, 1) and model.input_layer.weight.grad is not None


def test_readout_applies_to_every_saved_time():
    model = AugmentedNeuralODE(nn.Linear(3, 3), augment_dims=2, readout=nn.Linear(3, 4))
    assert model(torch.randn(7, 1), torch.linspace(0, 1, 5)).shape == (5, 7, 4)


def test_zero_and_input_layer_augmentation_together_are_rejected():
    with pytest.raises(ValueError, match="either augment_dims"):
        AugmentedNeuralODE(nn.Linear(3, 3), augment_dims=1, input_layer=nn.Linear(2, 3))
    with pytest.raises(ValueError, match=">= 0"):
        AugmentedNeuralODE(nn.Linear(3, 3), augment_dims=-1)
