"""The physics-informed neural network: scaling, autograd partials, the loss, Burgers residuals."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from torchnde.models.pinn import PINN, BurgersResidual, Partials, burgers_residual, tanh_network

NU = 0.01 / math.pi


class SinCube(nn.Module):
    """u = sin(t) x^3 (and v = t x as a second output): derivatives known in closed form."""

    def __init__(self, two_outputs: bool = False):
        super().__init__()
        self.two_outputs = two_outputs

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        t, x = z[:, :1], z[:, 1:]
        u = torch.sin(t) * x**3
        return torch.cat([u, t * x], dim=1) if self.two_outputs else u


class TravellingWave(nn.Module):
    """The viscous Burgers shock u = c - a tanh(a (x - c t) / (2 nu)), an exact solution."""

    def __init__(self, a: float, c: float, nu: float):
        super().__init__()
        self.a, self.c, self.nu = a, c, nu

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        t, x = z[:, :1], z[:, 1:]
        return self.c - self.a * torch.tanh(self.a * (x - self.c * t) / (2 * self.nu))


class Recorder(nn.Module):
    """Returns its first input column and remembers what it was given."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.seen = z.detach().clone()
        return z[:, :1]


def _coords(n: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, 1, generator=g, dtype=torch.float64)
    x = 2 * torch.rand(n, 1, generator=g, dtype=torch.float64) - 1
    return torch.cat([t, x], dim=1)


def _small_pinn(domain=((0.0, 1.0), (-1.0, 1.0)), residual=None) -> PINN:
    torch.manual_seed(0)
    return PINN(
        tanh_network([2, 8, 8, 1], dtype=torch.float64), residual or burgers_residual(NU), domain=domain
    )


def test_inputs_are_scaled_to_the_unit_box_of_the_domain():
    rec = Recorder()
    pinn = PINN(rec, burgers_residual(NU), domain=[(0.0, 2.0), (-3.0, 1.0)])
    corners = torch.tensor([[0.0, -3.0], [2.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    pinn(corners)
    torch.testing.assert_close(
        rec.seen, torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    )
    unscaled = PINN(rec, burgers_residual(NU))
    unscaled(corners)
    torch.testing.assert_close(rec.seen, corners)


def test_partials_match_closed_forms_up_to_third_order():
    pinn = PINN(SinCube(), burgers_residual(NU))
    z = _coords()
    t, x = z[:, :1], z[:, 1:]
    u, d = pinn.partials(z)
    torch.testing.assert_close(u, torch.sin(t) * x**3)
    torch.testing.assert_close(d["t"], torch.cos(t) * x**3)
    torch.testing.assert_close(d["x"], 3 * torch.sin(t) * x**2)
    torch.testing.assert_close(d["xx"], 6 * torch.sin(t) * x)
    torch.testing.assert_close(d["xxx"], 6 * torch.sin(t))
    torch.testing.assert_close(d["tx"], 3 * torch.cos(t) * x**2)
    torch.testing.assert_close(d["xt"], d["tx"])  # mixed partials commute and share the cache
    torch.testing.assert_close(d["tt"], -torch.sin(t) * x**3)
    assert d[""] is u


def test_partials_beyond_a_polynomial_degree_are_zero():
    class Affine(nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return 2 * z[:, :1] - z[:, 1:]

    pinn = PINN(Affine(), burgers_residual(NU))
    _, u_t, u_x, u_xx, u_xxx = pinn.derivatives(_coords(), "t", "x", "xx", "xxx")
    assert torch.all(u_t == 2) and torch.all(u_x == -1)
    assert torch.all(u_xx == 0) and torch.all(u_xxx == 0)


def test_partials_of_a_two_output_network_are_per_column():
    pinn = PINN(SinCube(two_outputs=True), burgers_residual(NU))
    z = _coords()
    t, x = z[:, :1], z[:, 1:]
    u, u_x, u_tx = pinn.derivatives(z, "x", "tx")
    assert u.shape == u_x.shape == (16, 2)
    torch.testing.assert_close(u_x, torch.cat([3 * torch.sin(t) * x**2, t], dim=1))
    torch.testing.assert_close(u_tx, torch.cat([3 * torch.cos(t) * x**2, torch.ones_like(t)], dim=1))


def test_network_partials_match_finite_differences_through_the_scaling():
    pinn = _small_pinn(domain=[(0.0, 0.5), (-2.0, 2.0)])
    z = _coords(8)
    _, u_t, u_x, u_xx, u_tx = pinn.derivatives(z, "t", "x", "xx", "tx")
    h = 1e-4
    et = torch.tensor([h, 0.0], dtype=torch.float64)
    ex = torch.tensor([0.0, h], dtype=torch.float64)
    with torch.no_grad():
        f = pinn
        torch.testing.assert_close(u_t, (f(z + et) - f(z - et)) / (2 * h), rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(u_x, (f(z + ex) - f(z - ex)) / (2 * h), rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(u_xx, (f(z + ex) - 2 * f(z) + f(z - ex)) / h**2, rtol=1e-4, atol=1e-5)
        fd_tx = (f(z + et + ex) - f(z + et - ex) - f(z - et + ex) + f(z - et - ex)) / (4 * h * h)
        torch.testing.assert_close(u_tx, fd_tx, rtol=1e-4, atol=1e-5)


def test_second_derivative_is_itself_differentiable_gradcheck():
    pinn = _small_pinn()
    z = _coords(4).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c: pinn.derivatives(c, "xx")[1], (z,))


def test_loss_gradient_wrt_parameters_matches_finite_differences():
    pinn = _small_pinn()
    zf, zu = _coords(20, seed=1), _coords(6, seed=2)
    vu = torch.sin(zu[:, 1:])
    weight = pinn.network[2].weight
    pinn.zero_grad()
    pinn.loss(zf, zu, vu).backward()
    grad = weight.grad.clone()
    h = 1e-6
    for idx in [(0, 0), (3, 5), (7, 2)]:
        with torch.no_grad():
            weight[idx] += h
        up = pinn.loss(zf, zu, vu).item()
        with torch.no_grad():
            weight[idx] -= 2 * h
        down = pinn.loss(zf, zu, vu).item()
        with torch.no_grad():
            weight[idx] += h
        assert grad[idx].item() == pytest.approx((up - down) / (2 * h), rel=1e-6, abs=1e-9)


def test_loss_is_weighted_data_mse_plus_residual_mse():
    pinn = _small_pinn()
    zf, zu = _coords(20, seed=1), _coords(6, seed=2)
    vu = torch.sin(zu[:, 1:])
    u, u_t, u_x, u_xx = pinn.derivatives(zf, "t", "x", "xx")
    residual_mse = (u_t + u * u_x - NU * u_xx).square().mean()
    data_mse = (pinn(zu) - vu).square().mean()
    data, res = pinn.loss_terms(zf, zu, vu)
    torch.testing.assert_close(data, data_mse)
    torch.testing.assert_close(res, residual_mse)
    torch.testing.assert_close(pinn.loss(zf, zu, vu, weights=(2.0, 0.5)), 2 * data_mse + 0.5 * residual_mse)
    torch.testing.assert_close(pinn.loss(zf), residual_mse)


def test_tuple_residuals_sum_the_mean_squares_of_their_parts():
    def system(coords, u, d):
        return d["t"], d["x"] - 1.0

    pinn = _small_pinn(residual=system)
    zf = _coords(10)
    _, u_t, u_x = pinn.derivatives(zf, "t", "x")
    torch.testing.assert_close(pinn.loss(zf), u_t.square().mean() + (u_x - 1).square().mean())


def test_burgers_residual_vanishes_on_an_exact_solution_and_not_for_a_wrong_viscosity():
    wave = TravellingWave(a=0.5, c=0.2, nu=0.05)
    z = _coords(64)
    exact = PINN(wave, burgers_residual(0.05)).residual(z)
    assert exact.abs().max() < 1e-12
    wrong = PINN(wave, burgers_residual(0.06)).residual(z)
    assert wrong.abs().max() > 1e-3


def test_inverse_problem_recovers_both_burgers_coefficients():
    # The solution is known (a travelling wave with nu = 0.05); the residual is linear in
    # (lambda1, lambda2), so minimising its mean square recovers (1, 0.05) from any start.
    residual = BurgersResidual(0.0, 1e-3, trainable=True)
    pinn = PINN(TravellingWave(a=0.5, c=0.2, nu=0.05), residual)
    assert {n for n, _ in pinn.named_parameters()} == {"pde.lambda1", "pde.log_lambda2"}
    z = _coords(200)
    opt = torch.optim.LBFGS(
        pinn.parameters(),
        max_iter=500,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-14,
        tolerance_change=0.0,
    )

    def closure():
        opt.zero_grad()
        loss = pinn.loss(z)
        loss.backward()
        return loss

    opt.step(closure)
    assert residual.lambda1.item() == pytest.approx(1.0, rel=1e-6)
    assert residual.lambda2.item() == pytest.approx(0.05, rel=1e-6)


def test_fixed_burgers_coefficients_are_buffers_not_parameters():
    pinn = _small_pinn()
    names = {n for n, _ in pinn.named_parameters()}
    assert not any(n.startswith("pde.") for n in names)
    assert pinn.pde.lambda2.item() == pytest.approx(NU)
    assert "trainable=False" in repr(pinn.pde)


def test_evaluation_under_no_grad_gives_detached_derivatives():
    pinn = _small_pinn()
    z = _coords(8)
    with torch.no_grad():
        u, u_xx = pinn.derivatives(z, "xx")
    assert not u.requires_grad and not u_xx.requires_grad
    torch.testing.assert_close(u_xx, pinn.derivatives(z, "xx")[1].detach())


def test_partials_stay_connected_to_coordinates_that_require_grad():
    pinn = PINN(SinCube(), burgers_residual(NU))
    z = _coords(5).requires_grad_(True)
    _, u_x = pinn.derivatives(z, "x")
    (g,) = torch.autograd.grad(u_x.sum(), z)
    torch.testing.assert_close(g[:, 1:], 6 * torch.sin(z[:, :1]) * z[:, 1:])


def test_tanh_network_is_raissis_architecture():
    net = tanh_network([2] + [20] * 8 + [1])
    assert sum(p.numel() for p in net.parameters()) == 3021
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert len(linears) == 9 and sum(isinstance(m, nn.Tanh) for m in net) == 8
    assert isinstance(net[-1], nn.Linear)
    assert all(torch.all(m.bias == 0) for m in linears)


def test_bad_inputs_are_rejected_with_the_fix():
    pinn = _small_pinn()
    with pytest.raises(ValueError, match=r"shape \[N, 2\]"):
        pinn(torch.zeros(4, 3, dtype=torch.float64))
    with pytest.raises(KeyError, match="unknown variable"):
        pinn.partials(_coords(3))[1]["y"]
    with pytest.raises(ValueError, match="one \\(low, high\\) pair per variable"):
        PINN(tanh_network([2, 1]), burgers_residual(NU), domain=[(0.0, 1.0)])
    with pytest.raises(ValueError, match="low < high"):
        PINN(tanh_network([2, 1]), burgers_residual(NU), domain=[(0.0, 1.0), (1.0, -1.0)])
    with pytest.raises(ValueError, match="single-character"):
        PINN(tanh_network([2, 1]), burgers_residual(NU), variables=("time", "x"))
    with pytest.raises(ValueError, match="data_values must match"):
        pinn.loss(_coords(4), _coords(3), torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="both data_coords and data_values"):
        pinn.loss(_coords(4), _coords(3))
    with pytest.raises(ValueError, match="weights"):
        pinn.loss(_coords(4), weights=(1.0, -1.0))
    with pytest.raises(TypeError):
        PINN(tanh_network([2, 1]), burgers_residual(NU), normalise=True)  # unknown option
    with pytest.raises(ValueError, match="positive"):
        burgers_residual(-1.0)
    with pytest.raises(ValueError, match="sizes"):
        tanh_network([2])


def test_partials_refuse_coordinates_without_gradients():
    z = _coords(3)
    with pytest.raises(ValueError, match="requires_grad"):
        Partials(z[:, :1], z, ("t", "x"), keep_graph=True)
