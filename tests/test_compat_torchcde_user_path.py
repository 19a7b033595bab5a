"""torchnde.compat.torchcde.InterpolationBase: torchcde 0.2.5's abstract path that users subclass.
torchnde's paths are subclasses of it, an incomplete subclass cannot be built, and a user's path
(its body written once, built on either library's base) gives ``cdeint`` the same outputs and
gradients as torchcde 0.2.5, with backprop and with the adjoint."""

from __future__ import annotations

import pytest
import torch
import torchcde as oracle

import torchnde.compat.torchcde as torchcde

F64 = torch.float64


class _SineBody:
    """``X(t) = [t, a_b sin(w t)]`` for a batch of three amplitudes ``a_b``, with ``w`` a learnable
    parameter: the body of a user's path, built on either library's ``InterpolationBase``."""

    def __init__(self):
        super().__init__()
        self.omega = torch.nn.Parameter(torch.tensor(1.3, dtype=F64))
        self.register_buffer("amplitude", torch.tensor([0.5, 1.0, 2.0], dtype=F64))
        self.register_buffer("_t", torch.linspace(0.0, 6.0, 7, dtype=F64))

    @property
    def grid_points(self) -> torch.Tensor:
        return self._t

    @property
    def interval(self) -> torch.Tensor:
        return self._t[[0, -1]]

    def evaluate(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=F64)
        return torch.stack([t.expand(3), self.amplitude * torch.sin(self.omega * t)], dim=-1)

    def derivative(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=F64)
        slope = self.amplitude * self.omega * torch.cos(self.omega * t)
        return torch.stack([torch.ones_like(slope), slope], dim=-1)


def _sine_path(lib) -> torch.nn.Module:
    return type("SinePath", (_SineBody, lib.InterpolationBase), {})()


class _Field(torch.nn.Module):
    """``f(t, z) = tanh(W z + b)`` as ``[3, hidden, 2]``."""

    def __init__(self, hidden: int = 4):
        super().__init__()
        self.hidden = hidden
        self.linear = torch.nn.Linear(hidden, hidden * 2).double()
        g = torch.Generator().manual_seed(2)
        torch.nn.init.normal_(self.linear.weight, std=0.4, generator=g)
        torch.nn.init.normal_(self.linear.bias, std=0.2, generator=g)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(z)).view(*z.shape, 2)


def test_torchndes_paths_are_interpolation_bases_as_torchcdes_are():
    x = torch.randn(2, 5, 3, dtype=F64)
    for lib in (torchcde, oracle):
        linear = lib.LinearInterpolation(lib.linear_interpolation_coeffs(x))
        cubic = lib.CubicSpline(lib.natural_cubic_coeffs(x))
        assert isinstance(linear, lib.InterpolationBase) and isinstance(cubic, lib.InterpolationBase)
        assert isinstance(linear, torch.nn.Module)
        assert not isinstance(lib.TupleControl(linear, cubic), lib.InterpolationBase)  # torchcde's too


def test_an_incomplete_subclass_cannot_be_built_and_names_what_is_missing():
    with pytest.raises(TypeError, match="abstract"):
        torchcde.InterpolationBase()

    class NoDerivative(torchcde.InterpolationBase):
        grid_points = interval = torch.tensor([0.0, 1.0])

        def evaluate(self, t):
            return t

    with pytest.raises(TypeError, match="derivative"):
        NoDerivative()


def test_a_user_path_is_a_module_whose_parameters_and_buffers_move_with_it():
    X = _sine_path(torchcde)
    assert [name for name, _ in X.named_parameters()] == ["omega"]
    assert {name for name, _ in X.named_buffers()} == {"amplitude", "_t"}
    assert X.float().amplitude.dtype == torch.float32


SOLVES = {
    "rk4": {"method": "rk4", "options": {"step_size": 0.25}},
    "dopri5": {"method": "dopri5", "rtol": 1e-7, "atol": 1e-9},
}


def _solve(lib, solve: str, adjoint: bool) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    X, func = _sine_path(lib), _Field()
    z0 = torch.linspace(-1.0, 1.0, 12, dtype=F64).view(3, 4).requires_grad_()
    params = (*func.parameters(), X.omega)
    extra = {"adjoint_params": params} if adjoint else {}
    t = torch.tensor([0.0, 2.5, 6.0], dtype=F64)
    z = lib.cdeint(X, func, z0, t, adjoint=adjoint, **SOLVES[solve], **extra)
    return z, torch.autograd.grad(z.square().sum(), (z0, *params))


# dopri5 takes torchcde's steps on this smooth path, forwards and in the adjoint's backward solve
@pytest.mark.parametrize(("solve", "adjoint"), [("rk4", False), ("dopri5", False), ("dopri5", True)])
def test_a_user_path_gives_torchcdes_outputs_and_gradients(solve, adjoint):
    z_theirs, g_theirs = _solve(oracle, solve, adjoint)
    z_ours, g_ours = _solve(torchcde, solve, adjoint)
    assert z_ours.shape == z_theirs.shape == (3, 3, 4)
    assert torch.allclose(z_ours, z_theirs, atol=1e-6, rtol=1e-6)
    assert g_ours[-1].abs() > 1e-3  # the path's own parameter gets a gradient
    for a, b in zip(g_ours, g_theirs):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-6)
