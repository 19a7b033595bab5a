"""torchnde.compat.torchcde against torchcde 0.2.5 (the oracle): the same coefficients from the
same data (missing values included), coefficients usable both ways, the same paths, the same
``cdeint`` outputs and gradients (rk4 on a fixed grid, dopri5 at a tight tolerance, with and
without the adjoint), and the log-ODE path against torchnde's own log-signatures."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torchcde as oracle

import torchnde as nde
import torchnde.compat.torchcde as torchcde

F64 = torch.float64
COEFFS = [
    "linear_interpolation_coeffs",
    "natural_cubic_coeffs",
    "natural_cubic_spline_coeffs",
    "hermite_cubic_coefficients_with_backward_differences",
]


def _data(
    batch: int = 3, length: int = 9, channels: int = 2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, channels, dtype=F64, generator=g)
    t = torch.sort(torch.rand(length, dtype=F64, generator=g) * 5).values
    x[0, 2, 0] = x[1, 0, 1] = x[1, 1, 1] = x[2, -1, 0] = math.nan  # inner, leading, trailing
    x[2, 4:6, 1] = math.nan
    return x, t


class Field(torch.nn.Module):
    def __init__(self, hidden: int, channels: int):
        super().__init__()
        self.channels = channels
        self.linear = torch.nn.Linear(hidden, hidden * channels).double()
        g = torch.Generator().manual_seed(1)
        torch.nn.init.normal_(self.linear.weight, std=0.3, generator=g)
        torch.nn.init.normal_(self.linear.bias, std=0.1, generator=g)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(z)).view(*z.shape, self.channels)


def test_the_drop_in_has_torchcde_025s_names_and_signatures():
    for name in [*COEFFS, "LinearInterpolation", "CubicSpline", "NaturalCubicSpline", "cdeint", "logsig_windows",
                 "logsignature_windows", "TupleControl", "InterpolationBase"]:  # fmt: skip
        ours, theirs = (
            getattr(torchcde, name),
            getattr(oracle, name, None) or getattr(oracle.interpolation_cubic, name),
        )
        assert list(inspect.signature(ours).parameters) == list(inspect.signature(theirs).parameters), name


@pytest.mark.parametrize("name", COEFFS)
def test_coefficients_equal_torchcde_with_missing_values(name):
    x, t = _data()
    theirs = getattr(oracle, name)(x, t)
    ours = getattr(torchcde, name)(x, t)
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=1e-9, rtol=0)
    assert not torch.isnan(ours).any()


def test_rectilinear_coefficients_equal_torchcde_and_hold_values_while_time_moves():
    x, t = _data()
    x = torch.cat([t.expand(3, -1).unsqueeze(-1), x], dim=-1)
    x[:, 0, 1:] = 0.5  # observed at the start: causal, no warning
    ours = torchcde.linear_interpolation_coeffs(x, rectilinear=0)
    assert torch.equal(ours, oracle.linear_interpolation_coeffs(x, rectilinear=0))
    assert ours.shape == (3, 17, 3)
    assert torch.equal(ours[..., 1, 0], t[1].expand(3)) and torch.equal(ours[..., 1, 1:], ours[..., 0, 1:])
    with pytest.warns(UserWarning, match="begins with missing values"):
        torchcde.linear_interpolation_coeffs(_with_time(_data()[0], t), rectilinear=0)


def _with_time(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.cat([t.expand(*x.shape[:-1]).unsqueeze(-1), x], dim=-1)


@pytest.mark.parametrize(
    ("cls", "coeffs"),
    [
        ("LinearInterpolation", "linear_interpolation_coeffs"),
        ("CubicSpline", "natural_cubic_coeffs"),
        ("CubicSpline", "hermite_cubic_coefficients_with_backward_differences"),
    ],
)
@pytest.mark.parametrize("made_by", ["torchcde", "torchnde"])
def test_paths_evaluate_as_torchcde_between_knots_and_outside(cls, coeffs, made_by):
    x, t = _data()
    c = getattr(oracle if made_by == "torchcde" else torchcde, coeffs)(x, t)
    theirs, ours = getattr(oracle, cls)(c, t), getattr(torchcde, cls)(c, t)
    assert torch.equal(ours.grid_points, theirs.grid_points) and torch.equal(ours.interval, theirs.interval)
    for s in [-0.5, 0.3, 1.7, 2.9, 4.2, 6.0]:
        s = torch.tensor(s, dtype=F64)
        assert torch.allclose(ours.evaluate(s), theirs.evaluate(s), atol=1e-9, rtol=0)
        assert torch.allclose(ours.derivative(s), theirs.derivative(s), atol=1e-9, rtol=0)
    many = torch.tensor([0.3, 1.7, 4.2], dtype=F64)
    assert torch.allclose(ours.evaluate(many), theirs.evaluate(many), atol=1e-9, rtol=0)


def test_default_times_are_the_index():
    x = torch.randn(2, 6, 3, dtype=F64)
    X, Y = (
        torchcde.CubicSpline(torchcde.natural_cubic_coeffs(x)),
        oracle.CubicSpline(oracle.natural_cubic_coeffs(x)),
    )
    assert torch.equal(X.grid_points, Y.grid_points)
    assert torch.allclose(X.evaluate(torch.tensor(2.5)), Y.evaluate(torch.tensor(2.5)), atol=1e-12)


def _solve(lib, coeffs_name: str, adjoint: bool, end: float = 11.0, **kwargs):
    x, _ = _data(batch=4, length=12, channels=3, seed=3)
    x = x.requires_grad_()
    func = Field(5, 3)
    z0 = torch.linspace(-1, 1, 20, dtype=F64).view(4, 5)
    c = getattr(lib, coeffs_name)(x)
    X = lib.CubicSpline(c) if coeffs_name != "linear_interpolation_coeffs" else lib.LinearInterpolation(c)
    extra = {"adjoint_params": (*func.parameters(), c)} if adjoint else {}
    z = lib.cdeint(X, func, z0, torch.tensor([0.0, 4.0, end], dtype=F64), adjoint=adjoint, **kwargs, **extra)
    grads = torch.autograd.grad(z.square().sum(), (x, *func.parameters()))
    return z, grads


SOLVES = {
    "rk4": {"method": "rk4", "options": {"step_size": 0.5}},
    "dopri5": {"method": "dopri5", "rtol": 1e-10, "atol": 1e-12},
}


@pytest.mark.parametrize("solve", ["rk4", "dopri5"])
@pytest.mark.parametrize(
    "coeffs", ["natural_cubic_coeffs", "hermite_cubic_coefficients_with_backward_differences"]
)
def test_cdeint_outputs_and_gradients_equal_torchcde(solve, coeffs):
    if solve == "dopri5" and coeffs.startswith("hermite"):  # torchnde lands on the knots there
        kwargs = {**SOLVES[solve], "options": {"step_t": torch.arange(1.0, 11.0, dtype=F64)}}
    else:
        kwargs = SOLVES[solve]
    z_theirs, g_theirs = _solve(oracle, coeffs, False, **kwargs)
    z_ours, g_ours = _solve(torchcde, coeffs, False, **kwargs)
    assert z_ours.shape == z_theirs.shape == (4, 3, 5)
    assert torch.allclose(z_ours, z_theirs, atol=1e-6, rtol=1e-6)
    for a, b in zip(g_ours, g_theirs):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("stops", ["knots", "grid_points"])
def test_dopri5_takes_torchcdes_steps_where_it_lands_on_the_splines_knots(stops):
    """Across a knot the spline's third derivative jumps, and a loose-tolerance step sequence
    amplifies round-off (docs/cde.md); on the knots each step is on one cubic piece, and the
    solve is torchcde's step for step (in float64), also with torchcde's idiom of passing the
    grid points, the final time included (the last step ends there, as in torchdiffeq 0.2.5)."""
    x, _ = _data(batch=4, length=12, channels=3, seed=3)
    z0 = torch.linspace(-1, 1, 20, dtype=F64).view(4, 5)
    counts, outs = [], []
    for lib in (oracle, torchcde):
        func, calls = Field(5, 3), []
        func.linear.register_forward_pre_hook(lambda *_, calls=calls: calls.append(1))
        X = lib.CubicSpline(lib.natural_cubic_coeffs(x))
        step_t = X.grid_points[1:-1] if stops == "knots" else X.grid_points
        with torch.no_grad():
            outs.append(lib.cdeint(X, func, z0, X.interval, adjoint=False, options={"step_t": step_t}))
        counts.append(len(calls))
    assert counts[0] == counts[1] > 50
    assert torch.allclose(outs[0], outs[1], atol=1e-11, rtol=0)


def test_cdeint_adjoint_gradients_equal_torchcde_at_a_tight_tolerance():
    kwargs = {"method": "dopri5", "rtol": 1e-7, "atol": 1e-9}
    z_theirs, g_theirs = _solve(
        oracle, "natural_cubic_coeffs", True, end=6.0, **kwargs
    )  # its adjoint is slow
    z_ours, g_ours = _solve(torchcde, "natural_cubic_coeffs", True, end=6.0, **kwargs)
    assert torch.allclose(z_ours, z_theirs, atol=1e-6, rtol=1e-6)
    for a, b in zip(g_ours, g_theirs):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


def test_cdeint_lands_on_the_linear_paths_knots_with_an_adaptive_method():
    x = torch.tensor([[[0.0], [1.0], [-1.0], [0.0]]], dtype=F64)
    X = torchcde.LinearInterpolation(torchcde.linear_interpolation_coeffs(x))

    def func(t, z):  # dz = dX: z(t) = X(t) exactly, if the kinks are stepped onto
        return torch.ones(*z.shape, 1, dtype=F64)

    z = torchcde.cdeint(X, func, torch.zeros(1, 1, dtype=F64), torch.arange(4.0, dtype=F64), adjoint=False)
    assert torch.allclose(z[0, :, 0], x[0, :, 0], atol=1e-12)


def test_cdeint_rejects_what_it_does_not_support_with_the_fix():
    X = torchcde.CubicSpline(torchcde.natural_cubic_coeffs(torch.randn(2, 5, 3, dtype=F64)))
    func, z0, t = Field(4, 3), torch.zeros(2, 4, dtype=F64), torch.tensor([0.0, 4.0], dtype=F64)
    with pytest.raises(ValueError, match="backend='torchdiffeq'"):
        torchcde.cdeint(X, func, z0, t, backend="torchsde")
    with pytest.raises(ValueError, match="hidden_channels, input_channels"):
        torchcde.cdeint(X, Field(4, 2), z0, t)
    with pytest.raises(ValueError, match="batch dimensions"):
        torchcde.cdeint(X, func, torch.zeros(3, 4, dtype=F64), t)
    with pytest.raises(ValueError, match="not supported for method"):
        torchcde.cdeint(X, func, z0, t, method="rk4", options={"step_sise": 0.1})


def test_cdeint_warns_as_torchcde_when_the_data_gets_no_adjoint_gradient():
    c = torchcde.natural_cubic_coeffs(torch.randn(2, 5, 3, dtype=F64)).requires_grad_()
    with pytest.warns(UserWarning, match="adjoint_params"):
        torchcde.cdeint(torchcde.CubicSpline(c), Field(4, 3), torch.zeros(2, 4, dtype=F64),
                        torch.tensor([0.0, 4.0], dtype=F64))  # fmt: skip


def test_func_prod_computes_the_product_as_in_torchcde():
    x = torch.randn(2, 6, 3, dtype=F64)
    func = Field(4, 3)
    func.prod = lambda t, z, dx: (func(t, z) @ dx.unsqueeze(-1)).squeeze(-1)
    X = torchcde.CubicSpline(torchcde.natural_cubic_coeffs(x))
    kwargs = {"method": "rk4", "options": {"step_size": 0.5}, "adjoint": False}
    t = torch.tensor([0.0, 5.0], dtype=F64)
    with_prod = torchcde.cdeint(X, func, torch.ones(2, 4, dtype=F64), t, **kwargs)
    del func.prod
    assert torch.allclose(
        with_prod, torchcde.cdeint(X, func, torch.ones(2, 4, dtype=F64), t, **kwargs), atol=1e-14
    )


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_logsig_windows_is_the_cumulative_log_signature_path(depth):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 11, 3, dtype=F64, generator=g)
    out = torchcde.logsig_windows(x, depth, 3.0)  # windows [0,3], [3,6], [6,9], [9,10]
    assert out.shape == (2, 5, nde.logsignature_channels(3, depth))
    assert torch.equal(out[:, 0, :3], x[:, 0]) and not out[:, 0, 3:].any()
    for k, (a, b) in enumerate([(0, 3), (3, 6), (6, 9), (9, 10)]):
        expected = nde.logsignature(x[:, a : b + 1], depth)
        assert torch.allclose(out[:, k + 1] - out[:, k], expected, atol=1e-12)
    values, times = torchcde.logsignature_windows(x, depth, 3.0)  # deprecated: scaled by the length
    assert torch.equal(times, torch.tensor([0.0, 3.0, 6.0, 9.0, 10.0], dtype=F64))
    assert torch.allclose(values[:, 2] - values[:, 1], 3.0 * (out[:, 2] - out[:, 1]), atol=1e-12)


# torchcde's examples/time_series_classification.py and irregular_data.py, written again: a
# neural CDE classifier on spirals, and irregular data with missing values and observation counts,
# run for a few iterations with torchcde and with the drop-in as the imported module.


def _spirals(n: int, length: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    t = torch.linspace(0.0, 4 * math.pi, length, dtype=F64)
    start = torch.rand(n, dtype=F64, generator=g) * 2 * math.pi
    x_pos = torch.cos(start.unsqueeze(1) + t) / (1 + 0.5 * t)
    y_pos = torch.sin(start.unsqueeze(1) + t) / (1 + 0.5 * t)
    y = (torch.arange(n) % 2).to(F64)
    x_pos[n // 2 :] *= -1  # the other half spins the other way
    x = torch.stack([t.expand(n, -1), x_pos, y_pos], dim=-1)
    return x + 0.02 * torch.randn(x.shape, dtype=F64, generator=g), y


class CDEClassifier(torch.nn.Module):
    def __init__(self, lib, channels: int, hidden: int = 8):
        super().__init__()
        torch.manual_seed(0)
        self.lib = lib
        self.initial = torch.nn.Linear(channels, hidden).double()
        self.field = torch.nn.Sequential(torch.nn.Linear(hidden, 16), torch.nn.ReLU(), torch.nn.Linear(16, hidden * channels), torch.nn.Tanh()).double()  # fmt: skip
        self.readout = torch.nn.Linear(hidden, 1).double()
        self.shape = (hidden, channels)

    def forward(self, coeffs: torch.Tensor, interpolation: str) -> torch.Tensor:
        X = self.lib.CubicSpline(coeffs) if interpolation == "cubic" else self.lib.LinearInterpolation(coeffs)
        z0 = self.initial(X.evaluate(X.interval[0]))
        func = _Unflatten(self.field, self.shape)
        z = self.lib.cdeint(
            X=X, z0=z0, func=func, t=X.interval, method="rk4", options={"step_size": 1.0}, adjoint=False
        )
        return self.readout(z[:, 1]).squeeze(-1)


class _Unflatten(torch.nn.Module):
    def __init__(self, net: torch.nn.Module, shape: tuple[int, int]):
        super().__init__()
        self.net, self.shape = net, shape

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(*z.shape[:-1], *self.shape)


def _train(
    lib, x: torch.Tensor, y: torch.Tensor, coeffs_name: str, interpolation: str, steps: int = 3
) -> list[float]:
    coeffs = getattr(lib, coeffs_name)(x)
    model = CDEClassifier(lib, x.shape[-1])
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(coeffs, interpolation), y)
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
        losses.append(loss.item())
    return losses


def test_time_series_classification_example_trains_as_with_torchcde():
    x, y = _spirals(16)
    theirs = _train(oracle, x, y, "natural_cubic_coeffs", "cubic")
    ours = _train(torchcde, x, y, "natural_cubic_coeffs", "cubic")
    assert ours == pytest.approx(theirs, abs=1e-8)
    assert ours[-1] < ours[0]


@pytest.mark.parametrize(
    ("coeffs_name", "interpolation"),
    [("natural_cubic_coeffs", "cubic"), ("hermite_cubic_coefficients_with_backward_differences", "cubic")],
)
def test_irregular_data_example_with_missing_values_and_intensity_runs_as_with_torchcde(
    coeffs_name, interpolation
):
    x, y = _spirals(12, length=30)
    g = torch.Generator().manual_seed(9)
    x[..., 1:][torch.rand(x[..., 1:].shape, generator=g) < 0.3] = math.nan  # 30% missing, time observed
    intensity = (~torch.isnan(x[..., 1:])).cumsum(dim=-2).to(F64)  # observational intensity
    x = torch.cat([x, intensity], dim=-1)
    theirs = _train(oracle, x, y, coeffs_name, interpolation, steps=2)
    ours = _train(torchcde, x, y, coeffs_name, interpolation, steps=2)
    assert ours == pytest.approx(theirs, abs=1e-8)
