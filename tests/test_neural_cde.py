"""NeuralCDE: shapes, missing values, per-sample grids, gradients (float64 gradcheck, every
strategy against backprop), the log-ODE option and the errors that name a fix."""

from __future__ import annotations

import math

import pytest
import torch

import torchnde as nde
from torchnde.models import NeuralCDE

F64 = torch.float64
T = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5], dtype=F64)


@pytest.fixture(autouse=True)
def _seeded():
    """The same random draws whatever ran before (xdist orders tests differently)."""
    torch.manual_seed(0)


def _data(batch: int = 3, channels: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return nde.with_time_channel(torch.randn(batch, len(T), channels, dtype=F64, generator=g).cumsum(1), T)


def _model(**options) -> NeuralCDE:
    return NeuralCDE(3, 4, 2, width=8, **options).double()


def test_the_readout_is_per_sample_at_the_end_and_time_first_at_every_time():
    x = _data()
    assert _model()(x, T).shape == (3, 2)
    every = _model(output="all")
    ys = every(x, T)
    assert ys.shape == (len(T), 3, 2)
    final = _model()
    final.load_state_dict(every.state_dict())
    assert torch.allclose(ys[-1], final(x, T), atol=1e-12)


def test_the_initial_state_is_the_initial_map_of_the_first_observation():
    model = _model(output="all")
    x = _data()
    z0 = model.initial(x[:, 0])
    assert torch.allclose(model(x, T)[0], model.readout(z0), atol=1e-12)


def test_rk4_by_default_takes_one_step_per_interval_between_observations():
    for interpolation in ("hermite", "cubic", "linear", "rectilinear"):
        model = _model(interpolation=interpolation)
        model(_data(), T)
        pieces = len(T) - 1 if interpolation != "rectilinear" else 2 * (len(T) - 1)
        assert model.stats.steps == pieces, interpolation


def test_a_missing_value_is_interpolated_linearly_before_the_hermite_path():
    x = _data()
    holed = x.clone()
    holed[0, 2, 1] = math.nan
    holed[1, 3:5, 2] = math.nan
    filled = x.clone()
    filled[0, 2, 1] = (x[0, 1, 1] + x[0, 3, 1]) / 2  # equally spaced times: the midpoint
    filled[1, 3, 2] = x[1, 2, 2] + (x[1, 5, 2] - x[1, 2, 2]) / 3
    filled[1, 4, 2] = x[1, 2, 2] + 2 * (x[1, 5, 2] - x[1, 2, 2]) / 3
    model = _model()
    out = model(holed, T)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, model(filled, T), atol=1e-12)


def test_per_sample_grids_give_each_sample_its_own_solve():
    g = torch.Generator().manual_seed(1)
    t = torch.sort(torch.rand(3, 6, dtype=F64, generator=g) * 4, dim=1).values
    x = nde.with_time_channel(torch.randn(3, 6, 2, dtype=F64, generator=g), t)
    model = _model(solver="tsit5", rtol=1e-8, atol=1e-10)
    batched = model(x, t)
    for b in range(3):
        alone = model(x[b : b + 1], t[b])
        assert torch.allclose(batched[b], alone[0], atol=1e-6)


def test_a_ready_path_is_used_as_given():
    x = _data()
    model = _model()
    assert torch.allclose(model(nde.CubicSplinePath(x, T)), _model_like(model, "cubic")(x, T), atol=1e-12)


def _model_like(model: NeuralCDE, interpolation: str) -> NeuralCDE:
    other = _model(interpolation=interpolation)
    other.load_state_dict(model.state_dict())
    return other


def test_gradients_match_finite_differences_in_float64():
    model = NeuralCDE(3, 2, 1, width=3, layers=1).double()
    x = _data(batch=2).requires_grad_()
    params = tuple(model.parameters())

    def f(x, *ps):
        return torch.func.functional_call(model, dict(zip(dict(model.named_parameters()), ps)), (x, T))

    assert torch.autograd.gradcheck(f, (x, *params))


STRATEGIES = [
    ("checkpoint", {}, 1e-10),
    ("adjoint", {"dt": 0.01}, 1e-5),  # optimise-then-discretise: O(dt^4) from backprop's gradient
]


@pytest.mark.parametrize(("gradient", "options", "tol"), STRATEGIES, ids=[s[0] for s in STRATEGIES])
def test_every_gradient_strategy_agrees_with_backprop(gradient, options, tol):
    x = _data().requires_grad_()
    reference = _model(**options)
    model = _model(gradient=gradient, **options)
    model.load_state_dict(reference.state_dict())
    grads = []
    for m in (reference, model):
        loss = m(x, T).square().sum()
        grads.append(torch.autograd.grad(loss, (x, *m.parameters())))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=tol, rtol=tol)


def test_the_reversible_solver_gives_backprops_gradient_at_constant_memory():
    x = _data().requires_grad_()
    reference = _model(solver="reversible_heun")
    model = _model(solver="reversible_heun", gradient="reversible")
    model.load_state_dict(reference.state_dict())
    grads = [torch.autograd.grad(m(x, T).square().sum(), (x, *m.parameters())) for m in (reference, model)]
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-8)


def test_log_ode_steps_once_a_window():
    x = nde.with_time_channel(torch.randn(2, 101, 2, dtype=F64).cumsum(1) / 10)
    model = NeuralCDE(3, 4, 2, width=8, logsignature_depth=2, window=20.0).double()
    assert model(x).shape == (2, 2)
    assert model.stats.steps == 5
    assert model.path_channels == nde.logsignature_channels(3, 2) == 6


def test_depth_one_log_ode_on_the_grid_spacing_is_the_linear_path():
    x = _data()
    rough = _model(logsignature_depth=1, window=0.5)
    assert torch.allclose(rough(x, T), _model_like(rough, "linear")(x, T), atol=1e-12)


def test_unknown_options_are_errors_that_name_the_valid_ones():
    with pytest.raises(ValueError, match="Did you mean 'hermite'"):
        NeuralCDE(3, 4, 2, interpolation="hermit")
    with pytest.raises(ValueError, match="valid: final, all"):
        NeuralCDE(3, 4, 2, output="last")
    with pytest.raises(ValueError, match="both logsignature_depth"):
        NeuralCDE(3, 4, 2, window=1.0)
    with pytest.raises(TypeError, match="unknown option"):
        NeuralCDE(3, 4, 2, tolerance=1e-3)
    with pytest.raises(ValueError, match="hidden must be a positive integer"):
        NeuralCDE(3, 0, 2)


def test_data_with_other_channels_is_rejected_with_the_fix():
    with pytest.raises(ValueError, match="built for 3 channels, got data with 2"):
        _model()(torch.randn(2, 6, 2, dtype=F64), T)


def test_a_classifier_learns_the_sign_of_the_drift():
    g = torch.Generator().manual_seed(0)
    t = torch.linspace(0, 1, 10)
    labels = torch.randint(0, 2, (64,), generator=g)
    drift = (2 * labels - 1).view(-1, 1, 1) * t.view(1, -1, 1)
    x = nde.with_time_channel(drift + 0.3 * torch.randn(64, 10, 1, generator=g), t)
    model = NeuralCDE(2, 8, 2, width=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x, t), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    accuracy = (model(x, t).argmax(-1) == labels).float().mean()
    assert accuracy >= 0.9
