"""torchnde.compat.torchcde's tuple states against torchcde 0.2.5 (the oracle): ``TupleControl``
(values, derivatives, interval, grid points and its errors) and ``cdeint`` with ``z0`` a tuple,
``func`` returning one matrix per part (or ``func.prod`` tuples): the same outputs and gradients
(data, parameters, initial states) with backprop and with the adjoint; adaptive solves land on
every linear control's knots; malformed tuples are refused with the fix."""

from __future__ import annotations

import pytest
import torch
import torchcde as oracle

import torchnde.compat.torchcde as torchcde

F64 = torch.float64
STD = 0.1
TIMES_A = torch.arange(8.0, dtype=F64)  # control A: 8 knots, 3 channels
TIMES_B = 7.0 * torch.linspace(0.0, 1.0, 8, dtype=F64) ** 1.5  # control B: other knots, 2 channels


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    x_a = torch.randn(4, 8, 3, dtype=F64, generator=g)
    x_b = torch.randn(4, 8, 2, dtype=F64, generator=g)
    return x_a, x_b


def _control(lib, x_a: torch.Tensor, x_b: torch.Tensor) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    c_a, c_b = lib.natural_cubic_coeffs(x_a, TIMES_A), lib.natural_cubic_coeffs(x_b, TIMES_B)
    X = lib.TupleControl(lib.CubicSpline(c_a, TIMES_A), lib.CubicSpline(c_b, TIMES_B))
    return X, (c_a, c_b)


class _Fields(torch.nn.Module):
    """``(f_a, f_b)``: ``[4, 5, 3]`` and ``[4, 3, 2]``, each reading both parts of the state."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(6)
        self.a = torch.nn.Linear(8, 5 * 3).double()
        self.b = torch.nn.Linear(8, 3 * 2).double()
        for p in self.parameters():
            torch.nn.init.normal_(p, std=STD, generator=g)

    def forward(self, t: torch.Tensor, z: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        both = torch.cat(z, dim=-1)
        return torch.tanh(self.a(both)).view(4, 5, 3), torch.tanh(self.b(both)).view(4, 3, 2)


def _z0() -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.linspace(-1.0, 1.0, 20, dtype=F64).view(4, 5).requires_grad_(),
        torch.linspace(0.5, -0.5, 12, dtype=F64).view(4, 3).requires_grad_(),
    )


def test_tuple_control_values_derivatives_and_interval_equal_torchcdes():
    x_a, x_b = _data()
    ours, _ = _control(torchcde, x_a, x_b)
    theirs, _ = _control(oracle, x_a, x_b)
    assert torch.equal(ours.interval, theirs.interval)
    for s in [-0.5, 0.0, 2.3, 5.5, 7.0, 8.0]:
        s = torch.tensor(s, dtype=F64)
        for method in ("evaluate", "derivative"):
            got, want = getattr(ours, method)(s), getattr(theirs, method)(s)
            assert isinstance(got, tuple) and len(got) == 2
            for a, b in zip(got, want):
                assert torch.allclose(a, b, atol=1e-12, rtol=0)


def test_tuple_control_has_grid_points_only_when_its_controls_share_them():
    x_a, x_b = _data()
    for lib in (torchcde, oracle):
        same = lib.TupleControl(*(lib.CubicSpline(lib.natural_cubic_coeffs(x_a, TIMES_A), TIMES_A),) * 2)
        assert torch.equal(same.grid_points, TIMES_A)
    for lib in (torchcde, oracle):
        X = _control(lib, x_a, x_b)[0]
        with pytest.raises(RuntimeError, match="grid points"):
            _ = X.grid_points
    # grids of different lengths too (torchcde fails to compare them when building the control)
    fewer = torch.linspace(0.0, 7.0, 6, dtype=F64)
    b = torchcde.CubicSpline(torchcde.natural_cubic_coeffs(x_b[:, :6], fewer), fewer)
    X = torchcde.TupleControl(_control(torchcde, x_a, x_b)[0].controls[0], b)
    with pytest.raises(RuntimeError, match=r"controls\[i\]\.grid_points"):
        _ = X.grid_points
    assert torch.equal(X.controls[0].grid_points, TIMES_A) and torch.equal(X.controls[1].grid_points, fewer)


def test_tuple_control_refuses_no_controls_other_intervals_and_non_paths_with_the_fix():
    x_a, _ = _data()
    a = torchcde.CubicSpline(torchcde.natural_cubic_coeffs(x_a, TIMES_A), TIMES_A)
    short = torchcde.CubicSpline(torchcde.natural_cubic_coeffs(x_a[:, :6]))  # over [0, 5]
    with pytest.raises(ValueError, match=r"TupleControl\(X1, X2"):
        torchcde.TupleControl()
    with pytest.raises(ValueError, match=r"control 1 \[0, 5\]; build them from times with the same first"):
        torchcde.TupleControl(a, short)
    with pytest.raises(TypeError, match="control 1 of TupleControl must be a path"):
        torchcde.TupleControl(a, x_a)


def _solve(lib, adjoint: bool, **kwargs) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    x_a, x_b = (x.requires_grad_() for x in _data())
    X, coeffs = _control(lib, x_a, x_b)
    func, z0 = _Fields(), _z0()
    extra = {"adjoint_params": (*func.parameters(), *coeffs)} if adjoint else {}
    t = torch.tensor([0.0, 3.0, 7.0], dtype=F64)
    z = lib.cdeint(X, func, z0, t, adjoint=adjoint, **kwargs, **extra)
    loss = z[0].square().sum() + (z[1] * torch.linspace(-1, 1, z[1].numel(), dtype=F64).view_as(z[1])).sum()
    return z, torch.autograd.grad(loss, (x_a, x_b, *z0, *func.parameters()))


# dopri5 lands on both splines' knots: a step across one sees the jump of the third derivative,
# and the step sequence then amplifies round-off (docs/cde.md), here ours and torchcde's alike.
# The adjoint's seminorm leaves the parameters' gradients out of its error control: torchnde
# carries the data's gradient through the paths' own coefficients, other channels than
# torchcde's, whose norms would steer the backward steps differently.
KNOTS = torch.unique(torch.cat([TIMES_A[1:-1], TIMES_B[1:-1]]))
DOPRI5 = {"method": "dopri5", "rtol": 1e-7, "atol": 1e-9, "options": {"step_t": KNOTS}}
SOLVES = {
    "rk4": {"method": "rk4", "options": {"step_size": 0.5}},
    "dopri5": DOPRI5,
    "dopri5-adjoint": {
        **DOPRI5,
        "rtol": 1e-6,
        "atol": 1e-8,
        "adjoint_options": {"norm": "seminorm", "step_t": KNOTS},
    },
}


@pytest.mark.parametrize(("solve", "adjoint"), [("rk4", False), ("dopri5", False), ("dopri5-adjoint", True)])
def test_tuple_states_give_torchcdes_outputs_and_gradients(solve, adjoint):
    z_theirs, g_theirs = _solve(oracle, adjoint, **SOLVES[solve])
    z_ours, g_ours = _solve(torchcde, adjoint, **SOLVES[solve])
    assert isinstance(z_ours, tuple) and [z.shape for z in z_ours] == [(4, 3, 5), (4, 3, 3)]
    for a, b in zip(z_ours, z_theirs):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-6)
    assert all(g.abs().max() > 1e-2 for g in g_ours)  # every input gets a gradient, the data too
    for a, b in zip(g_ours, g_theirs):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-6)


def test_func_prod_computes_the_tuple_product_as_func_does():
    x_a, x_b = _data()
    X, _ = _control(torchcde, x_a, x_b)
    func, z0 = _Fields(), tuple(z.detach() for z in _z0())
    kwargs = {"method": "rk4", "options": {"step_size": 0.5}, "adjoint": False}
    t = torch.tensor([0.0, 7.0], dtype=F64)
    plain = torchcde.cdeint(X, func, z0, t, **kwargs)
    func.prod = lambda t, z, dx: tuple((f * d.unsqueeze(-2)).sum(-1) for f, d in zip(func(t, z), dx))
    with_prod = torchcde.cdeint(X, func, z0, t, **kwargs)
    for a, b in zip(with_prod, plain):
        assert torch.allclose(a, b, atol=1e-13, rtol=0)


def test_adaptive_solves_land_on_every_linear_controls_knots():
    x_a = torch.tensor([[[0.0], [1.0], [-1.0], [0.0]]], dtype=F64)  # knots 0, 1, 2, 3
    x_b = torch.tensor([[[0.0], [2.0], [0.5]]], dtype=F64)  # knots 0, 1.5, 3
    X = torchcde.TupleControl(
        torchcde.LinearInterpolation(torchcde.linear_interpolation_coeffs(x_a)),
        torchcde.LinearInterpolation(
            torchcde.linear_interpolation_coeffs(x_b), torch.tensor([0.0, 1.5, 3.0])
        ),
    )

    def func(t, z):  # dz_i = dX_i: z_i(t) = X_i(t) exactly, if every kink is stepped onto
        return tuple(torch.ones(*part.shape, 1, dtype=F64) for part in z)

    t = torch.tensor([0.0, 1.0, 1.5, 2.0, 3.0], dtype=F64)
    z_a, z_b = torchcde.cdeint(X, func, (torch.zeros(1, 1, dtype=F64),) * 2, t, adjoint=False)
    want_a, want_b = X.evaluate(t)
    assert torch.allclose(z_a, want_a, atol=1e-12) and torch.allclose(z_b, want_b, atol=1e-12)


def test_malformed_tuples_are_refused_with_the_fix():
    x_a, x_b = _data()
    X, _ = _control(torchcde, x_a, x_b)
    func, z0, t = _Fields(), tuple(z.detach() for z in _z0()), torch.tensor([0.0, 7.0], dtype=F64)
    single = X.controls[0]
    with pytest.raises(ValueError, match=r"combine the controls with TupleControl\(X1, X2"):
        torchcde.cdeint(single, func, z0, t)
    with pytest.raises(ValueError, match=r"X\.derivative\(t\) must return a tuple of 3, got 2 parts"):
        torchcde.cdeint(X, func, (*z0, z0[0]), t)
    with pytest.raises(ValueError, match=r"func\(t, z\) must return a tuple of 2, got Tensor"):
        torchcde.cdeint(X, lambda t, z: func(t, z)[0], z0, t)
    with pytest.raises(
        ValueError, match=r"part 1: func\(t, z\) must return .* = \[4, 3, 2\], got \[4, 3, 3\]"
    ):
        torchcde.cdeint(X, lambda t, z: (func(t, z)[0], torch.zeros(4, 3, 3, dtype=F64)), z0, t)
    with pytest.raises(ValueError, match=r"part 0: X\.derivative returned shape .* same batch dimensions"):
        torchcde.cdeint(X, func, (z0[0][:2], z0[1]), t)
    with pytest.raises(ValueError, match="pass z0 as a tuple of as many tensors"):
        torchcde.cdeint(X, func, z0[0], t)
