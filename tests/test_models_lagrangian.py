"""Lagrangian neural networks: Euler–Lagrange accelerations against analytic equations of motion
(float64), the energy, the damped solve, gradients to the parameters, state forms, and errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from torchnde.datasets.physics import _DoublePendulum
from torchnde.models.lagrangian import LagrangianNN, lnn_init_

from .helpers import central_difference, flat_grad

D64 = torch.float64


class DoublePendulumLagrangian(nn.Module):
    """The double pendulum's L = T - V, angles from the vertical."""

    def __init__(self, m1: float, m2: float, l1: float, l2: float, g: float) -> None:
        super().__init__()
        self.m1, self.m2, self.l1, self.l2, self.g = m1, m2, l1, l2, g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q1, q2, w1, w2 = x.unbind(-1)
        m1, m2, l1, l2, g = self.m1, self.m2, self.l1, self.l2, self.g
        t = (
            0.5 * (m1 + m2) * l1**2 * w1**2
            + 0.5 * m2 * l2**2 * w2**2
            + m2 * l1 * l2 * w1 * w2 * torch.cos(q1 - q2)
        )
        v = -(m1 + m2) * g * l1 * torch.cos(q1) - m2 * g * l2 * torch.cos(q2)
        return (t - v).unsqueeze(-1)


class PendulumLagrangian(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # m = 1, l = 2, g = 9.8
        q, w = x[..., 0], x[..., 1]
        return 0.5 * 4.0 * w**2 + 9.8 * 2.0 * torch.cos(q)


class RelativisticLagrangian(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, v = x[..., :1], x[..., 1:]
        return -torch.sqrt(1 - v.square()) - 0.5 * 3.0 * q.square()


def _states(n: int, d: int, seed: int = 0, speed: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen, dtype=D64), speed * torch.randn(n, d, generator=gen, dtype=D64)


@pytest.mark.parametrize("params", [(1.0, 1.0, 1.0, 1.0, 9.8), (0.7, 1.9, 1.3, 0.6, 3.0)])
def test_accelerations_match_the_double_pendulum_equations_to_float64_precision(params):
    q, qd = _states(200, 2)
    model = LagrangianNN(DoublePendulumLagrangian(*params))
    exact = _DoublePendulum(*params).field_torch(torch.cat([q, qd], -1))[..., 2:]
    torch.testing.assert_close(model.accelerations(q, qd), exact, rtol=1e-12, atol=1e-11)


def test_accelerations_match_the_pendulum_and_relativistic_equations():
    q, w = _states(50, 1)
    torch.testing.assert_close(
        LagrangianNN(PendulumLagrangian()).accelerations(q, w),
        -(9.8 / 2.0) * torch.sin(q),
        rtol=1e-13,
        atol=1e-13,
    )
    v = torch.tanh(w)  # |v| < 1
    torch.testing.assert_close(
        LagrangianNN(RelativisticLagrangian()).accelerations(q, v),
        -3.0 * q * (1 - v.square()) ** 1.5,
        rtol=1e-12,
        atol=1e-13,
    )


def test_energy_is_kinetic_plus_potential():
    q, qd = _states(30, 2)
    model = LagrangianNN(DoublePendulumLagrangian(1.0, 1.0, 1.0, 1.0, 9.8))
    energy = _DoublePendulum(1.0, 1.0, 1.0, 1.0, 9.8).energy(torch.cat([q, qd], -1))
    offset = 2 * 9.8 + 9.8  # the data set's potential is zero at rest
    torch.testing.assert_close(model.energy(q, qd), energy - offset, rtol=1e-12, atol=1e-12)


def test_a_network_lagrangian_conserves_its_energy_along_its_flow():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 32), nn.Softplus(), nn.Linear(32, 1)).to(D64)

    class WithKinetic(nn.Module):  # keeps the velocity Hessian positive definite
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 0.1 * net(x) + 0.5 * x[..., 2:].square().sum(-1, keepdim=True)

    model = LagrangianNN(WithKinetic(), solver="dopri8", rtol=1e-11, atol=1e-12)
    q, qd = _states(3, 2, seed=4, speed=0.5)
    with torch.no_grad():
        qs, qds = model((q, qd), torch.linspace(0, 2, 5, dtype=D64))
        e = model.energy(qs, qds)
    assert float((e - e[0]).abs().max()) < 1e-8


def test_parameter_gradients_match_finite_differences():
    torch.manual_seed(0)
    net = lnn_init_(
        nn.Sequential(nn.Linear(2, 8), nn.Softplus(), nn.Linear(8, 8), nn.Softplus(), nn.Linear(8, 1))
    )
    net = net.to(D64)
    model = LagrangianNN(net, damping=1e-3)
    q, qd = _states(5, 1, seed=2)
    target = torch.randn(5, 1, dtype=D64)
    weight = net[2].weight

    def loss() -> torch.Tensor:
        return (model.accelerations(q, qd) - target).square().sum()

    loss().backward()
    # every parameter but the last bias (a constant in L) moves the accelerations
    used = [p for name, p in net.named_parameters() if name != "4.bias"]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in used)
    analytic = weight.grad[1, 3].item()
    assert analytic == pytest.approx(central_difference(loss, weight, (1, 3)), rel=1e-5, abs=1e-8)


def test_accelerations_pass_gradcheck_in_the_state():
    model = LagrangianNN(DoublePendulumLagrangian(1.0, 1.0, 1.0, 1.0, 9.8))
    q, qd = _states(3, 2, seed=3)
    q.requires_grad_(True)
    qd.requires_grad_(True)
    assert torch.autograd.gradcheck(model.accelerations, (q, qd))


def test_damped_solve_approaches_the_exact_one_and_survives_a_singular_hessian():
    q, qd = _states(40, 2, seed=5)
    exact = LagrangianNN(DoublePendulumLagrangian(1.0, 1.0, 1.0, 1.0, 9.8)).accelerations(q, qd)
    errors = []
    for damping in (1e-2, 1e-4, 1e-6):
        model = LagrangianNN(DoublePendulumLagrangian(1.0, 1.0, 1.0, 1.0, 9.8), damping=damping)
        errors.append(float((model.accelerations(q, qd) - exact).abs().max() / exact.abs().max()))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-5

    # -L has the same equations of motion and an indefinite-sign (negative definite) Hessian
    class Negated(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return -DoublePendulumLagrangian(1.0, 1.0, 1.0, 1.0, 9.8)(x)

    torch.testing.assert_close(LagrangianNN(Negated()).accelerations(q, qd), exact, rtol=1e-12, atol=1e-11)
    torch.testing.assert_close(
        LagrangianNN(Negated(), damping=1e-8).accelerations(q, qd), exact, rtol=1e-5, atol=1e-5
    )

    class Linear(nn.Module):  # L linear in qdot: the velocity Hessian is zero
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.sum(-1)

    assert not torch.isfinite(LagrangianNN(Linear()).accelerations(q, qd)).all()
    assert torch.isfinite(LagrangianNN(Linear(), damping=1e-3).accelerations(q, qd)).all()


def test_batch_shapes_broadcast_and_match_the_flat_batch():
    model = LagrangianNN(DoublePendulumLagrangian(1.0, 1.0, 1.0, 1.0, 9.8))
    q, qd = _states(12, 2, seed=6)
    flat = model.accelerations(q, qd)
    shaped = model.accelerations(q.reshape(3, 4, 2), qd.reshape(3, 4, 2))
    torch.testing.assert_close(shaped.reshape(12, 2), flat)
    broadcast = model.accelerations(q[:1], qd)  # one position, many velocities
    assert broadcast.shape == (12, 2)


def test_tuple_and_tensor_states_give_the_same_trajectory_and_no_grad_rollouts_are_detached():
    model = LagrangianNN(PendulumLagrangian(), solver="rk4", dt=0.01)
    q, w = _states(3, 1, seed=7)
    t = torch.linspace(0, 0.5, 6, dtype=D64)
    qs, ws = model((q, w), t)
    xs = model(torch.cat([q, w], -1), t)
    torch.testing.assert_close(xs, torch.cat([qs, ws], -1))
    with torch.no_grad():
        out = model(torch.cat([q, w], -1), t)
    assert not out.requires_grad and out.shape == (6, 3, 2)


def test_rollout_of_the_analytic_pendulum_matches_small_angle_motion():
    model = LagrangianNN(PendulumLagrangian(), solver="tsit5", rtol=1e-10, atol=1e-12)
    q0 = torch.tensor([[1e-4]], dtype=D64)
    w0 = torch.zeros(1, 1, dtype=D64)
    period = 2 * math.pi / math.sqrt(9.8 / 2.0)
    qs, _ = model((q0, w0), torch.tensor([0.0, period / 2, period], dtype=D64))
    torch.testing.assert_close(
        qs[:, 0, 0], torch.tensor([1e-4, -1e-4, 1e-4], dtype=D64), rtol=1e-3, atol=1e-12
    )


def test_lnn_init_zeroes_biases_and_scales_weights():
    torch.manual_seed(0)
    net = lnn_init_(
        nn.Sequential(nn.Linear(4, 500), nn.Softplus(), nn.Linear(500, 500), nn.Softplus(), nn.Linear(500, 1))
    )
    layers = [m for m in net if isinstance(m, nn.Linear)]
    assert all(float(m.bias.detach().abs().max()) == 0 for m in layers)
    stds = [float(m.weight.detach().std()) for m in layers]
    expected = [2.2 / math.sqrt(500), 0.58 / math.sqrt(500), 500 / math.sqrt(500)]
    for got, want in zip(stds, expected):
        assert got == pytest.approx(want, rel=0.1)


def test_bad_inputs_raise_errors_that_name_the_fix():
    with pytest.raises(ValueError, match="damping"):
        LagrangianNN(PendulumLagrangian(), damping=-1.0)
    with pytest.raises(TypeError, match="unknown option"):
        LagrangianNN(PendulumLagrangian(), tolerance=1e-3)
    with pytest.raises(ValueError, match="even last dimension"):
        LagrangianNN(PendulumLagrangian()).vector_field(0.0, torch.randn(2, 3))
    with pytest.raises(ValueError, match="one scalar per state"):
        LagrangianNN(nn.Linear(2, 3)).accelerations(torch.randn(4, 1), torch.randn(4, 1))
    with pytest.raises(ValueError, match="one scalar per state"):
        LagrangianNN(nn.Linear(2, 3)).value(torch.randn(4, 1), torch.randn(4, 1))
    with pytest.raises(ValueError, match=r"nn\.Linear"):
        lnn_init_(nn.Tanh())


def test_adjoint_and_backprop_gradients_of_a_rollout_agree():
    class WithKinetic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(2, 16), nn.Softplus(), nn.Linear(16, 1)).to(D64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 0.1 * self.net(x) + 0.5 * x[..., 1:].square().sum(-1, keepdim=True)

    lagrangian = WithKinetic()
    x0 = torch.cat(_states(3, 1, seed=8), -1)
    t = torch.linspace(0, 1, 4, dtype=D64)
    for derivatives in ("vmap", "autograd"):
        grads = []
        for gradient in ("backprop", "adjoint"):
            lagrangian.zero_grad(set_to_none=True)
            model = LagrangianNN(
                lagrangian,
                solver="dopri5",
                rtol=1e-10,
                atol=1e-12,
                gradient=gradient,
                derivatives=derivatives,
            )
            model(x0, t).square().sum().backward()
            grads.append(flat_grad(model))
        assert grads[0].abs().max() > 0
        torch.testing.assert_close(grads[1], grads[0], rtol=1e-6, atol=1e-8)


def test_without_t_eval_the_model_returns_the_state_at_the_end_of_t_span():
    model = LagrangianNN(PendulumLagrangian(), solver="rk4", dt=0.1, t_span=(0.0, 1.0))
    x0 = torch.cat(_states(4, 1, seed=9), -1)
    final = model(x0)
    assert final.shape == (4, 2)
    assert model.stats.steps == 10 and model.nfe == 40
    torch.testing.assert_close(final, model(x0, torch.tensor([0.0, 1.0], dtype=D64))[-1])
    with pytest.raises(ValueError, match="t_span"):
        LagrangianNN(PendulumLagrangian(), t_span=(0.0,))


def test_autograd_fallback_under_saved_tensor_hooks_equals_the_torch_func_path():
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Softplus(), torch.nn.Linear(16, 1)).double()
    model = LagrangianNN(net, derivatives="vmap")
    x = torch.randn(7, 4, dtype=torch.float64)
    grad, rows = model.gradient_and_hessian(x[:, :2], x[:, 2:])
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        grad_h, rows_h = model.gradient_and_hessian(x[:, :2], x[:, 2:])
    torch.testing.assert_close(grad_h, grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rows_h, rows, rtol=1e-12, atol=1e-12)


def test_batched_autograd_derivatives_equal_vmap_ones_with_their_parameter_gradients():
    torch.manual_seed(4)
    net = lnn_init_(
        nn.Sequential(nn.Linear(4, 32), nn.Softplus(), nn.Linear(32, 32), nn.Softplus(), nn.Linear(32, 1))
    )
    net = net.double()
    q, qd = torch.randn(9, 2, dtype=D64), torch.randn(9, 2, dtype=D64)
    results = []  # every parameter but the last bias, which no acceleration depends on
    for derivatives in ("vmap", "autograd"):
        model = LagrangianNN(net, damping=1e-8, derivatives=derivatives)
        qdd = model.accelerations(q, qd)
        results.append((qdd.detach(), torch.autograd.grad(qdd.square().sum(), list(net.parameters())[:-1])))
    (want, want_grads), (got, got_grads) = results
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


def test_batched_autograd_rollouts_match_vmap_and_carry_no_graph_without_grad_mode():
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    x0 = torch.cat(_states(5, 1, seed=2), -1)
    t = torch.linspace(0.0, 0.5, 6, dtype=D64)
    with torch.no_grad():
        want = LagrangianNN(net, damping=1e-8, solver="rk4", dt=0.05)(x0, t)
        got = LagrangianNN(net, damping=1e-8, solver="rk4", dt=0.05, derivatives="autograd")(x0, t)
    assert not got.requires_grad and got.grad_fn is None
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_an_unknown_derivatives_option_is_an_error_that_names_both():
    with pytest.raises(ValueError, match=r"'vmap' .*'autograd'"):
        LagrangianNN(PendulumLagrangian(), derivatives="jacfwd")


def test_auto_takes_batched_autograd_only_for_networks_known_to_act_row_by_row():
    mlp = nn.Sequential(
        nn.Linear(4, 8), nn.Softplus(), nn.Sequential(nn.Linear(8, 8), nn.Tanh()), nn.Linear(8, 1)
    )
    assert LagrangianNN(mlp).derivatives == "autograd"
    assert LagrangianNN(mlp, derivatives="vmap").derivatives == "vmap"
    assert LagrangianNN(PendulumLagrangian()).derivatives == "vmap"  # its own forward: not known
    assert (
        LagrangianNN(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))).derivatives == "vmap"
    )
