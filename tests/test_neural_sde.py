"""NeuralSDE: shapes for each noise type, the Brownian path it is given, gradients against finite
differences (float64, fixed path), the stochastic adjoint and reversible Heun against backprop,
and the errors at its boundary."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchnde as nde
from torchnde.models import DiagonalDiffusion, NeuralSDE

from .helpers import central_difference

D = torch.float64


def _net(i: int, o: int, last: nn.Module | None = None) -> nn.Sequential:
    torch.manual_seed(0)
    layers = [nn.Linear(i, 8), nn.Tanh(), nn.Linear(8, o)] + ([last] if last is not None else [])
    return nn.Sequential(*layers).double()


class _General(nn.Module):
    """A general-noise diffusion: ``[batch, d, m]``."""

    def __init__(self, d: int, m: int) -> None:
        super().__init__()
        self.d, self.m = d, m
        self.net = _net(d, d * m, nn.Tanh())

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return 0.3 * self.net(y).reshape(*y.shape, self.m)


def _bm(shape: tuple[int, ...], seed: int = 0) -> nde.BrownianInterval:
    return nde.BrownianInterval(0.0, 1.0, shape, dtype=D, seed=seed)


def test_a_call_returns_the_final_state_or_the_path_time_first():
    model = NeuralSDE(_net(2, 2), _net(2, 2, nn.Sigmoid()), solver="euler", dt=0.1)
    y0 = torch.zeros(5, 2, dtype=D)
    assert model(y0).shape == (5, 2)
    assert model(y0, torch.linspace(0, 1, 4, dtype=D)).shape == (4, 5, 2)
    assert model.stats.steps == 10 and model.nfe > 0


def test_general_noise_takes_m_brownian_motions_per_row():
    model = NeuralSDE(_net(2, 2), _General(2, 3), noise="general", solver="euler", dt=0.1)
    out = model(torch.zeros(4, 2, dtype=D), brownian=_bm((4, 3)))
    assert out.shape == (4, 2) and torch.isfinite(out).all()


def test_a_fixed_brownian_path_gives_the_same_sample_and_fresh_paths_differ():
    model = NeuralSDE(_net(2, 2), _net(2, 2, nn.Sigmoid()), solver="euler", dt=0.125)
    y0 = torch.zeros(3, 2, dtype=D)
    bm = _bm((3, 2))
    assert torch.equal(model(y0, brownian=bm), model(y0, brownian=bm))
    assert (model(y0) - model(y0)).abs().max() > 1e-3


def test_additive_noise_with_zero_drift_is_the_scaled_brownian_increment():
    class Zero(nn.Module):
        def forward(self, y):
            return torch.zeros_like(y)

    class Scale(nn.Module):
        def forward(self, y):
            return torch.full((*y.shape, 1), 0.7, dtype=y.dtype)

    bm = _bm((3, 1), seed=4)
    model = NeuralSDE(Zero(), Scale(), noise="additive", solver="euler", dt=0.25)
    out = model(torch.ones(3, 2, dtype=D), brownian=bm)
    assert (out - (1 + 0.7 * bm(0.0, 1.0).expand(3, 2))).abs().max() < 1e-12


def test_backprop_gradient_matches_finite_differences_on_a_fixed_path():
    drift, diffusion = _net(2, 2), _net(2, 2, nn.Sigmoid())
    model = NeuralSDE(drift, diffusion, solver="milstein", dt=0.125)
    y0 = torch.tensor([[0.3, -0.2], [0.1, 0.5]], dtype=D)
    bm = _bm((2, 2), seed=1)

    def loss():
        return model(y0, brownian=bm).pow(2).sum()

    loss().backward()
    for param, index in ((drift[0].weight, (1, 0)), (diffusion[2].bias, (1,)), (diffusion[0].weight, (3, 1))):
        fd = central_difference(loss, param, index)
        assert param.grad[index].item() == pytest.approx(fd, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("noise", ["diagonal", "general"])
def test_reversible_heun_and_the_adjoint_agree_with_backprop_on_the_same_path(noise):
    diffusion = _net(2, 2, nn.Sigmoid()) if noise == "diagonal" else _General(2, 3)
    drift = _net(2, 2)
    bm = _bm((4, 2 if noise == "diagonal" else 3), seed=2)
    y0 = torch.linspace(-0.5, 0.5, 8, dtype=D).reshape(4, 2)
    grads = {}
    for gradient in ("backprop", "reversible", "adjoint"):
        model = NeuralSDE(
            drift, diffusion, noise=noise, calculus="stratonovich", solver="reversible_heun", dt=2**-6,
            gradient=gradient,
        )  # fmt: skip
        x0 = y0.clone().requires_grad_(True)
        loss = model(x0, torch.linspace(0, 1, 3, dtype=D), brownian=bm).pow(2).sum()
        grads[gradient] = torch.cat(
            [g.reshape(-1) for g in torch.autograd.grad(loss, [x0, *model.parameters()])]
        )
    want = grads["backprop"]
    assert float((grads["reversible"] - want).norm() / want.norm()) < 1e-10
    assert float((grads["adjoint"] - want).norm() / want.norm()) < 1e-2


def test_the_ito_adjoint_agrees_with_backprop_for_a_per_coordinate_diffusion():
    # the Itô -> Stratonovich conversion assumes g_i depends on y_i only (DiagonalDiffusion's form)
    drift = _net(2, 2)
    torch.manual_seed(1)
    diffusion = DiagonalDiffusion(2, 8).double()
    model = NeuralSDE(drift, diffusion, solver="milstein", dt=2**-6, gradient="adjoint")
    bm = _bm((4, 2), seed=3)
    y0 = torch.full((4, 2), 0.2, dtype=D)
    model(y0, brownian=bm).sum().backward()
    backprop = NeuralSDE(drift, diffusion, solver="milstein", dt=2**-6)
    want = torch.autograd.grad(backprop(y0, brownian=bm).sum(), drift[0].weight)[0]
    assert model.solution.backward_stats.nfe > 0
    assert float((drift[0].weight.grad - want).norm() / want.norm()) < 2e-2


def test_a_model_without_a_step_asks_for_dt_or_tolerances():
    with pytest.raises(ValueError, match="dt="):
        NeuralSDE(_net(2, 2), _net(2, 2))


def test_unknown_noise_calculus_and_options_are_errors():
    with pytest.raises(ValueError, match="unknown noise type 'diag'"):
        NeuralSDE(_net(2, 2), _net(2, 2), noise="diag", dt=0.1)
    with pytest.raises(ValueError, match="unknown calculus"):
        NeuralSDE(_net(2, 2), _net(2, 2), calculus="ito_", dt=0.1)
    with pytest.raises(TypeError, match="unknown option"):
        NeuralSDE(_net(2, 2), _net(2, 2), dt=0.1, tolerance=1e-3)


def test_adaptive_steps_by_tolerances_run():
    model = NeuralSDE(
        _net(2, 2), _net(2, 2, nn.Sigmoid()), calculus="stratonovich", solver="heun", rtol=1e-2, atol=1e-2
    )
    out = model(torch.zeros(3, 2, dtype=D), brownian=_bm((3, 2)))
    assert out.shape == (3, 2) and model.stats.accepted > 0
