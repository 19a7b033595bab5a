"""SDE terms on tuple states: drift and diffusion take and return tuples, and the solve is the
solve of the concatenated state on the same Brownian path (diagonal noise: one Brownian motion
per element of each part; scalar, additive and general noise: each part's diffusion is
``[*part, m]`` against one shared ``m``-dimensional Brownian motion), with the same gradients."""

from __future__ import annotations

import pytest
import torch

import torchnde as nde

DTYPE = torch.float64
SHAPES = ((2,), (2, 2))  # a tuple state of 6 elements in all
N = 6
CHANNELS = {"diagonal": N, "scalar": 1, "additive": 3, "general": 3}
SOLVERS = ["euler", "milstein", "srk", "heun", "midpoint", "euler_heun", "reversible_heun"]
TS = torch.tensor([0.0, 0.3, 1.0], dtype=DTYPE)


def _calculus(solver: str) -> str:
    return "ito" if solver in ("euler", "milstein", "srk") else "stratonovich"


def _supports(solver: str, noise: str) -> bool:
    term = nde.SDETerm(abs, abs, noise, _calculus(solver))
    return nde.solvers.resolve_solver(solver, term).unsupported(term) is None


CASES = [(solver, noise) for solver in SOLVERS for noise in CHANNELS if _supports(solver, noise)]


def _split(y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The concatenated state ``[N]`` as the tuple's parts."""
    return y[:2], y[2:].reshape(2, 2)


def _split_g(g: torch.Tensor, noise: str) -> tuple[torch.Tensor, ...]:
    """The concatenated diffusion (``[N]`` or ``[N, m]``) as the parts' diffusions."""
    if noise == "diagonal":
        return _split(g)
    return g[:2], g[2:].reshape(2, 2, g.shape[-1])


def _cat(parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in parts])


class Concatenated(torch.nn.Module):
    """A small nonlinear SDE on the concatenated state ``[N]``, coupling the parts."""

    def __init__(self, noise: str):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.noise = noise
        self.a = torch.nn.Parameter(torch.randn(N, N, generator=gen, dtype=DTYPE) * 0.4)
        self.b = torch.nn.Parameter(torch.rand(N, 3, generator=gen, dtype=DTYPE) * 0.5)

    def f(self, t, y):
        return torch.tanh(self.a @ y) - 0.1 * y * (1 + t)

    def g(self, t, y):
        if self.noise == "diagonal":
            return self.b[:, 0] * torch.sin(y) + 0.2
        if self.noise == "scalar":
            return (self.b[:, 0] * torch.cos(y) + 0.1).unsqueeze(-1)
        if self.noise == "additive":
            return self.b * (1 + t)
        return self.b * torch.cos(y).unsqueeze(-1)  # general

    def f_parts(self, t, y):
        return _split(self.f(t, _cat(y)))

    def g_parts(self, t, y):
        return _split_g(self.g(t, _cat(y)), self.noise)


def _solve(sde: Concatenated, solver: str, bm, tuple_state: bool, y0: torch.Tensor, **options):
    f, g = (sde.f_parts, sde.g_parts) if tuple_state else (sde.f, sde.g)
    term = nde.SDETerm(f, g, sde.noise, _calculus(solver), bm)
    sol = nde.solve(term, _split(y0) if tuple_state else y0, TS, solver=solver, dt=2.0**-4, **options)
    return torch.stack([_cat(tuple(p[i] for p in sol.ys)) for i in range(len(TS))]) if tuple_state else sol.ys


def _brownian(noise: str, seed: int) -> nde.BrownianInterval:
    shape = (CHANNELS[noise],)
    return nde.BrownianInterval(0.0, 1.0, shape, dtype=DTYPE, seed=seed, levy_area=True)


def _y0() -> torch.Tensor:
    return torch.linspace(-0.6, 0.9, N, dtype=DTYPE)


@pytest.mark.parametrize(("solver", "noise"), CASES)
def test_a_tuple_solve_equals_the_concatenated_solve_on_the_same_path(solver, noise):
    sde = Concatenated(noise)
    bm = _brownian(noise, seed=1)
    with torch.no_grad():
        whole = _solve(sde, solver, bm, False, _y0())
        parts = _solve(sde, solver, bm, True, _y0())
    assert parts.shape == whole.shape == (len(TS), N)
    assert float((parts - whole).abs().max()) <= 1e-12
    assert float((whole[-1] - whole[0]).abs().max()) > 1e-2  # it moved


def test_the_outputs_keep_the_parts_shapes():
    sde = Concatenated("general")
    term = nde.SDETerm(sde.f_parts, sde.g_parts, "general", "ito")
    sol = nde.solve(term, _split(_y0()), TS, solver="euler", dt=0.1)
    assert isinstance(sol.ys, tuple) and [tuple(p.shape) for p in sol.ys] == [(3, 2), (3, 2, 2)]


@pytest.mark.parametrize(
    ("solver", "noise", "gradient"),
    [
        ("srk", "diagonal", "backprop"),
        ("milstein", "scalar", "backprop"),
        ("euler", "general", "backprop"),
        ("midpoint", "general", "adjoint"),
        ("srk", "diagonal", "adjoint"),
        ("heun", "scalar", "adjoint"),
        ("euler", "additive", "adjoint"),
        ("reversible_heun", "diagonal", "reversible"),
        ("euler", "diagonal", nde.Checkpoint(checkpoints=2)),
    ],
)
def test_tuple_gradients_equal_the_concatenated_solves(solver, noise, gradient):
    sde = Concatenated(noise)
    bm = _brownian(noise, seed=2)
    grads = []
    for tuple_state in (False, True):
        y0 = _y0().requires_grad_(True)
        ys = _solve(sde, solver, bm, tuple_state, y0, gradient=gradient)
        loss = (ys[1:] ** 2).sum() + ys[-1].sin().sum()
        grads.append(torch.autograd.grad(loss, [y0, sde.a, sde.b]))
    for whole, parts in zip(*grads):
        assert float(whole.abs().max()) > 0
        assert torch.allclose(parts, whole, rtol=1e-10, atol=1e-12)


def test_a_tuple_diffusion_of_the_wrong_structure_or_shape_is_refused_naming_the_part():
    sde = Concatenated("general")
    y0 = _split(_y0())
    wrong = [
        (lambda t, y: _cat(y), TypeError, r"must return a tuple of 2 tensors, one per part of y"),
        (lambda t, y: (y[0], y[1]), ValueError, r"general noise: part 0 of g\(t, y\) must have shape"),
        (
            lambda t, y: (torch.ones(2, 3, dtype=DTYPE), torch.ones(2, 2, 4, dtype=DTYPE)),
            ValueError,
            r"part 1 of g\(t, y\) must have shape \(\*y\[1\]\.shape, 3\) = \(2, 2, 3\)",
        ),
    ]
    for g, error, message in wrong:
        with pytest.raises(error, match=message):
            nde.solve(nde.SDETerm(sde.f_parts, g, "general"), y0, TS, solver="euler", dt=0.1)
    with pytest.raises(ValueError, match=r"diagonal noise: part 1 of g\(t, y\) must be shaped like part 1"):
        nde.solve(nde.SDETerm(sde.f_parts, lambda t, y: (y[0], y[1][0])), y0, TS, solver="euler", dt=0.1)
    bm = nde.BrownianInterval(0.0, 1.0, (2,), dtype=DTYPE)
    with pytest.raises(ValueError, match=r"has shape \(2,\) but this SDE needs \(6,\)"):
        nde.solve(nde.SDETerm(sde.f_parts, lambda t, y: y, brownian=bm), y0, TS, solver="euler", dt=0.1)
