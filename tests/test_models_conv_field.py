"""The convolutional ODE-Net field: shapes, the time channel, parameter count, gradients against
finite differences (float64), and the same gradients from backprop and the adjoint through a
solve."""

from __future__ import annotations

import pytest
import torch

from torchnde.models import ConcatConv2d, ConvODEField, NeuralODE, group_norm


def test_the_field_keeps_the_feature_maps_shape_and_counts_evaluations():
    torch.manual_seed(0)
    field = ConvODEField(8)
    h = torch.randn(3, 8, 5, 5)
    assert field(torch.tensor(0.3), h).shape == (3, 8, 5, 5)
    field(torch.tensor(0.6), h)
    assert field.nfe == 2


def test_the_time_enters_as_a_constant_channel():
    torch.manual_seed(0)
    conv = ConcatConv2d(2, 3, 3, padding=1)
    x = torch.randn(2, 2, 4, 4)
    by_hand = conv.conv(torch.cat([torch.full((2, 1, 4, 4), 0.7), x], dim=1))
    assert torch.allclose(conv(torch.tensor(0.7), x), by_hand)
    assert not torch.allclose(conv(torch.tensor(0.0), x), by_hand)
    assert conv.conv.weight.shape == (3, 3, 3, 3)


def test_sixty_four_channels_have_the_papers_block_parameters():
    field = ConvODEField(64)
    # two 3x3 convolutions of 65 -> 64 channels with bias, three GroupNorms of 64 channels
    assert sum(p.numel() for p in field.parameters()) == 2 * (65 * 64 * 9 + 64) + 3 * 2 * 64
    assert group_norm(64).num_groups == 32 and group_norm(16).num_groups == 16


def test_bad_channel_counts_and_flat_inputs_are_rejected():
    with pytest.raises(ValueError, match="channels must be >= 1"):
        ConvODEField(0)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        ConcatConv2d(2, 2)(torch.tensor(0.0), torch.randn(2, 8))


def test_the_field_gradients_match_finite_differences_in_float64():
    torch.manual_seed(0)
    field = ConvODEField(2).double()
    h = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, h: field(t, h), (t, h), eps=1e-6, atol=1e-6)


def _parameter_gradients(gradient: str, dt: float) -> torch.Tensor:
    torch.manual_seed(0)
    block = NeuralODE(ConvODEField(2), solver="rk4", dt=dt, gradient=gradient).double()
    h0 = torch.randn(2, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    block(h0).square().sum().backward()
    return torch.cat([p.grad.flatten() for p in block.parameters()])


def test_the_adjoint_gradient_converges_to_backprops_at_fourth_order_in_the_step():
    # fixed RK4 steps: backprop differentiates the steps exactly, the adjoint solves the adjoint
    # ODE backwards with the same steps; they differ by O(dt^4) (an adaptive solve at tight
    # tolerances would crawl through the kinks of the field's ReLUs)
    gaps = []
    for dt in (0.05, 0.025):
        exact, adjoint = _parameter_gradients("backprop", dt), _parameter_gradients("adjoint", dt)
        gaps.append(float((adjoint - exact).abs().max() / exact.abs().max()))
    assert gaps[1] < 1e-5
    assert 8.0 < gaps[0] / gaps[1] < 32.0  # 2^4 = 16 for a fourth-order method
