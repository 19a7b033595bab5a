"""NeuralODE and DataControlledNeuralODE: the maths they integrate, shapes, options, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import torchnde as nde
import torchnde.models._base as base
from torchnde.models import DataControlledNeuralODE, NeuralODE

from .helpers import central_difference


def _linear(a: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(a.shape[1], a.shape[0], bias=False).to(a.dtype)
    with torch.no_grad():
        layer.weight.copy_(a)
    return layer


def test_final_state_is_the_matrix_exponential_of_a_linear_field():
    a = torch.tensor([[-0.5, 1.0], [-1.0, -0.2]], dtype=torch.float64)
    model = NeuralODE(_linear(a), solver="dopri8", rtol=1e-12, atol=1e-12, t_span=(0.0, 2.0))
    y0 = torch.randn(5, 2, dtype=torch.float64)
    expected = y0 @ torch.linalg.matrix_exp(2.0 * a).T
    torch.testing.assert_close(model(y0), expected, rtol=1e-10, atol=1e-10)


def test_trajectory_is_time_first_and_ends_at_the_final_state():
    model = NeuralODE(
        nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3)).double(), rtol=1e-9, atol=1e-9
    )
    y0 = torch.randn(4, 3, dtype=torch.float64)
    ys = model(y0, torch.linspace(0, 1, 6, dtype=torch.float64))
    assert ys.shape == (6, 4, 3)
    torch.testing.assert_close(ys[0], y0)
    torch.testing.assert_close(ys[-1], model(y0), rtol=1e-7, atol=1e-9)


def test_nfe_and_stats_are_visible_after_each_call():
    model = NeuralODE(nn.Linear(2, 2), solver="rk4", dt=0.1)
    with pytest.raises(RuntimeError, match="not been called"):
        _ = model.nfe
    model(torch.randn(3, 2))
    assert model.nfe == 40 and model.stats.steps == 10


def test_a_two_argument_field_receives_the_time():
    seen = []

    class Field(nn.Module):
        def forward(self, t, y):
            seen.append(float(t))
            return torch.ones_like(y) * t

    out = NeuralODE(Field(), solver="rk4", dt=0.25)(torch.zeros(1, dtype=torch.float64))
    assert max(seen) == 1.0 and out.item() == pytest.approx(0.5, abs=1e-12)  # ∫ t dt on [0, 1]


def test_unknown_solve_option_is_an_error_naming_the_valid_ones():
    with pytest.raises(TypeError, match="valid solve options"):
        NeuralODE(nn.Linear(2, 2), tolerance=1e-3)


def test_bad_t_span_is_rejected():
    with pytest.raises(ValueError, match="t_span"):
        NeuralODE(nn.Linear(2, 2), t_span=(1.0, 1.0))


@pytest.mark.parametrize("gradient", ["backprop", "checkpoint", "adjoint"])
def test_parameter_gradients_match_finite_differences(gradient):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    model = NeuralODE(net, solver="dopri5", rtol=1e-10, atol=1e-10, gradient=gradient)
    y0 = torch.randn(3, 2, dtype=torch.float64)
    weight = net[0].weight

    def loss() -> torch.Tensor:
        return model(y0).pow(2).sum()

    (grad,) = torch.autograd.grad(loss(), weight)
    for idx in [(0, 0), (2, 1), (5, 0)]:
        assert grad[idx].item() == pytest.approx(central_difference(loss, weight, idx), rel=1e-5, abs=1e-8)


def test_per_sample_mode_passes_through_and_gives_each_sample_its_own_stats():
    model = NeuralODE(nn.Linear(2, 2).double(), per_sample=True, rtol=1e-8, atol=1e-8)
    out = model(torch.randn(4, 2, dtype=torch.float64) * torch.tensor([[1.0], [10.0], [0.1], [5.0]]))
    assert out.shape == (4, 2) and model.nfe.shape == (4,)


def test_kinetic_energy_integral_matches_the_closed_form():
    a = -0.7
    model = NeuralODE(_linear(torch.tensor([[a]], dtype=torch.float64)), regularisers=[nde.models.KineticEnergy(1.0)],
                      solver="dopri8", rtol=1e-12, atol=1e-12)  # fmt: skip
    y0 = torch.tensor([[1.5], [-0.5]], dtype=torch.float64)
    model(y0)
    # ∫_0^1 (a y0 e^{a t})^2 dt = a^2 y0^2 (e^{2a} - 1) / (2a), averaged over the batch
    expected = (a**2 * y0.pow(2) * (math.exp(2 * a) - 1) / (2 * a)).mean()
    assert model.regularisation.item() == pytest.approx(expected.item(), rel=1e-9)


def test_jacobian_frobenius_estimate_is_unbiased():
    torch.manual_seed(1)
    a = torch.tensor([[0.3, -1.2], [0.8, 0.5]], dtype=torch.float64)
    model = NeuralODE(_linear(a), regularisers=[nde.models.JacobianFrobenius(1.0)], solver="rk4", dt=0.5)
    model(torch.randn(20000, 2, dtype=torch.float64))
    per_sample = model.solution.ys[1][-1]  # one Hutchinson probe per sample, field constant in y
    exact = a.pow(2).sum().item()  # ‖A‖_F² integrated over a unit interval
    mean, se = per_sample.mean().item(), per_sample.std().item() / math.sqrt(per_sample.numel())
    assert abs(mean - exact) < 3 * se


@pytest.mark.parametrize("gradient", ["backprop", "adjoint"])
def test_regularisation_is_differentiable_in_the_parameters(gradient):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    regs = [nde.models.KineticEnergy(0.1), nde.models.JacobianFrobenius(0.1)]
    model = NeuralODE(net, regularisers=regs, gradient=gradient, rtol=1e-8, atol=1e-8)
    model(torch.randn(4, 2, dtype=torch.float64))
    model.regularisation.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_regularisers_under_no_grad_keep_no_graph():
    model = NeuralODE(nn.Linear(2, 2), regularisers=[nde.models.JacobianFrobenius(0.1)])
    with torch.no_grad():
        out = model(torch.randn(3, 2))
    assert not out.requires_grad and not model.regularisation.requires_grad


def test_data_controlled_field_can_express_the_reflection():
    # f(z, x) = -2 x integrates to z(1) = x - 2x = -x, which no autonomous 1-D flow can do
    field = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        field.weight.copy_(torch.tensor([[0.0, -2.0]]))
    model = DataControlledNeuralODE(field, solver="rk4", dt=0.1)
    x = torch.tensor([[1.0], [-1.0], [0.3]], dtype=torch.float64)
    torch.testing.assert_close(model(x), -x, rtol=1e-12, atol=1e-12)


def test_data_controlled_lift_sets_the_state_size():
    model = DataControlledNeuralODE(nn.Linear(4 + 2, 4), lift=nn.Linear(2, 4))
    assert model(torch.randn(5, 2)).shape == (5, 4)


def test_a_fields_arity_is_read_once_per_class_and_per_instance_override(monkeypatch):
    class Timed(nn.Module):
        def forward(self, t, y):
            return t * y

    reads = []
    signature = base.inspect.signature
    monkeypatch.setattr(base.inspect, "signature", lambda f: reads.append(f) or signature(f))
    calls = []
    timed = NeuralODE(Timed(), solver="rk4", dt=0.5)
    y = timed(torch.ones(1, dtype=torch.float64))
    assert timed.nfe == 8 and len(reads) == 1  # two rk4 steps, one look at the signature
    torch.testing.assert_close(y, torch.full((1,), math.exp(0.5), dtype=torch.float64), rtol=1e-2, atol=0)
    # a forward set on one instance is that instance's arity, not its class's
    override = Timed()
    override.forward = lambda y: calls.append(y) or -y
    y = NeuralODE(override, solver="rk4", dt=0.1)(torch.ones(1, dtype=torch.float64))
    assert calls and float(y) == pytest.approx(math.exp(-1.0), rel=1e-5)
    fresh = NeuralODE(Timed(), solver="rk4", dt=0.5)  # the class's own forward again
    torch.testing.assert_close(
        fresh(torch.ones(1, dtype=torch.float64)), y.new_full((1,), math.exp(0.5)), rtol=1e-2, atol=0
    )
