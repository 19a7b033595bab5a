"""Every model: forward shapes, gradients to its parameters, NFE after each call, the solve
options passed through (solver, fixed step, adjoint), unknown options rejected; and for every
model of the package, no autograd graph kept once the caller drops the output."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable

import pytest
import torch
from torch import nn

from torchnde import models


def _mlp(i: int, o: int) -> nn.Module:
    return nn.Sequential(nn.Linear(i, 16), nn.Tanh(), nn.Linear(16, o))


class _TrajectoryEnd(nn.Module):
    """A model that needs ``t_eval`` (UniversalODE), called like the others."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, t_eval: torch.Tensor | None = None) -> torch.Tensor:
        if t_eval is None:
            return self.model(x, torch.linspace(0, 1, 3, dtype=torch.float64))[-1]
        return self.model(x, t_eval)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)


# name -> (factory(**options) -> model, input maker, expected output shape of forward(x))
MODELS: dict[str, tuple[Callable[..., nn.Module], Callable[[], torch.Tensor], tuple[int, ...]]] = {
    "NeuralODE": (lambda **o: models.NeuralODE(_mlp(2, 2), **o), lambda: torch.randn(5, 2), (5, 2)),
    "AugmentedNeuralODE": (
        lambda **o: models.AugmentedNeuralODE(_mlp(4, 4), augment_dims=2, readout=nn.Linear(4, 1), **o),
        lambda: torch.randn(5, 2),
        (5, 1),
    ),
    "SecondOrderNeuralODE": (
        lambda **o: models.SecondOrderNeuralODE(_mlp(4, 2), velocity=nn.Linear(2, 2), **o),
        lambda: torch.randn(5, 2),
        (5, 2),
    ),
    "DataControlledNeuralODE": (
        lambda **o: models.DataControlledNeuralODE(_mlp(4, 2), **o),
        lambda: torch.randn(5, 2),
        (5, 2),
    ),
    "DepthVariantNeuralODE": (
        lambda **o: models.DepthVariantNeuralODE(2, [16], modes=2, **o),
        lambda: torch.randn(5, 2),
        (5, 2),
    ),
    "HamiltonianNN": (lambda **o: models.HamiltonianNN(_mlp(4, 1), **o), lambda: torch.randn(5, 4), (5, 4)),
    "SeparableHamiltonianNN": (
        lambda **o: models.SeparableHamiltonianNN(_mlp(2, 1), 2, mass="learned", **o),
        lambda: torch.randn(5, 4),
        (5, 4),
    ),
    "LagrangianNN": (
        lambda **o: models.LagrangianNN(
            nn.Sequential(nn.Linear(4, 16), nn.Softplus(), nn.Linear(16, 1)), damping=1e-3, **o
        ),
        lambda: torch.randn(5, 4),
        (5, 4),
    ),
    "UniversalODE": (
        lambda **o: _TrajectoryEnd(
            models.UniversalODE(lambda t, y, a: -a * y, _mlp(2, 2), params={"a": 0.5}, **o)
        ),
        lambda: torch.randn(5, 2),
        (5, 2),
    ),
}

OPTIONS = {
    "tsit5": {"solver": "tsit5", "rtol": 1e-5, "atol": 1e-6},
    "rk4-fixed": {"solver": "rk4", "dt": 0.1},
    "adjoint": {"solver": "dopri5", "gradient": "adjoint", "rtol": 1e-6, "atol": 1e-7},
    "checkpoint": {"solver": "dopri5", "gradient": "checkpoint"},
}


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("name", MODELS)
def test_model_forward_backward_and_nfe(name, options):
    torch.manual_seed(0)
    make, data, shape = MODELS[name]
    model = make(**options)
    out = model(data())
    assert out.shape == shape
    out.pow(2).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    # (a parameter may not reach the dynamics at all: the constant offset of an H or L network)
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert model.nfe > 0
    if options.get("dt"):
        assert model.stats.steps == 10 and model.nfe == 40
    if options.get("gradient") == "adjoint":
        assert model.solution.backward_stats.nfe > 0


@pytest.mark.parametrize("name", MODELS)
def test_model_trajectory_is_time_first(name):
    make, data, shape = MODELS[name]
    out = make()(data(), torch.linspace(0, 1, 4))
    assert out.shape == (4, *shape)


@pytest.mark.parametrize("name", MODELS)
def test_model_rejects_unknown_options(name):
    with pytest.raises(TypeError, match="unknown option"):
        MODELS[name][0](tolerance=1e-3)


# the models outside the contract list above, each with a call that records a graph
_T20 = torch.linspace(0, 1, 20)


def _latent_ode() -> nn.Module:
    encoder = models.ODERNN(_mlp(16, 16), nn.GRUCell(4, 16), solver="rk4", dt=0.1)
    return models.LatentODE(encoder, _mlp(4, 4), nn.Linear(4, 2), latent_dim=4, solver="rk4", dt=0.05)


class _Tanh(nn.Module):  # a DEQ layer f(z, x) = tanh(W z + U x)
    def __init__(self) -> None:
        super().__init__()
        self.W, self.U = nn.Linear(8, 8, bias=False), nn.Linear(8, 8)
        nn.init.normal_(self.W.weight, std=0.1)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.W(z) + self.U(x))


CALLS: dict[str, tuple[Callable[[], nn.Module], Callable[[nn.Module], torch.Tensor]]] = {
    **{name: (MODELS[name][0], lambda m, data=MODELS[name][1]: m(data())) for name in MODELS},
    "CNF": (
        lambda: models.CNF(dim=2, hidden=(16, 16), trace="hutchinson", solver="dopri5", rtol=1e-4, atol=1e-4),
        lambda m: m.log_prob(torch.randn(32, 2)),
    ),
    "LatentSDE": (
        lambda: models.LatentSDE(data_size=3, latent_size=4, context_size=16, hidden_size=32),
        lambda m: m.elbo(torch.randn(20, 8, 3), _T20).loss,
    ),
    "NeuralCDE": (lambda: models.NeuralCDE(3, hidden=16, out=4), lambda m: m(torch.randn(8, 20, 3), _T20)),
    "NeuralSDE": (
        lambda: models.NeuralSDE(
            _mlp(2, 2), nn.Sequential(_mlp(2, 2), nn.Sigmoid()), solver="euler", dt=0.05
        ),
        lambda m: m(torch.zeros(16, 2)),
    ),
    "LatentODE": (
        _latent_ode,
        lambda m: m.elbo(torch.linspace(0, 1, 10), torch.randn(8, 10, 2), torch.rand(8, 10, 2) > 0.5).value,
    ),
    "ODERNN": (
        lambda: models.ODERNN(_mlp(8, 8), nn.GRUCell(4, 8), readout=nn.Linear(8, 2), solver="rk4", dt=0.1),
        lambda m: m(torch.linspace(0, 1, 5), torch.randn(3, 5, 2), torch.rand(3, 5, 2) > 0.3),
    ),
    "SDEGAN": (
        lambda: models.SDEGAN(1, hidden_size=8, noise_size=2, initial_noise_size=3, width=8),
        lambda m: m.discriminator(m.generator(torch.linspace(0, 1, 9), 16), torch.linspace(0, 1, 9)),
    ),
    "DEQ": (lambda: models.DEQ(_Tanh(), solver="anderson", tol=1e-6), lambda m: m(torch.randn(4, 8))),
}


class _Saved:
    """What a saved-tensor hook packs: a weak reference to it tells whether the graph is alive.
    It holds the tensor detached: an op that saves its own output would otherwise make a cycle
    (box -> output -> its grad_fn -> box) that Python's collector cannot see through."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor.detach()


@pytest.mark.parametrize("name", CALLS)
def test_model_keeps_no_graph_once_its_output_is_dropped(name):
    torch.manual_seed(0)
    make, call = CALLS[name]
    model = make()
    saved: list[weakref.ref] = []

    def pack(t: torch.Tensor) -> _Saved:
        box = _Saved(t)
        saved.append(weakref.ref(box))
        return box

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda box: box.tensor):
        out = call(model)
    assert out.requires_grad and saved and any(r() is not None for r in saved)
    del out
    gc.collect()
    assert all(r() is None for r in saved)  # nothing the graph saved outlives the output
    record = getattr(model, "solution", None)  # the solving models keep the last call's record, detached
    if record is not None:
        ys = record.ys if isinstance(record.ys, tuple) else (record.ys,)
        assert model.nfe is not None and not any(y.requires_grad for y in ys)
