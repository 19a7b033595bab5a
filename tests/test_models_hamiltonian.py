"""Hamiltonian neural networks: the symplectic gradient, state forms, conservation, gradients,
the separable (mass-matrix) variant with leapfrog, the control term, and input errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import torchnde as nde
from torchnde.models.hamiltonian import HamiltonianNN, SeparableHamiltonianNN

from .helpers import central_difference, flat_grad

D64 = torch.float64


def _net(n_in: int, n_out: int = 1, hidden: int = 16, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, n_out)).to(D64)


class _Analytic(nn.Module):
    """H = q1^2/2 + p1^2/2 + q1 p2^3 + cos(q2) p1 (non-separable, d = 2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q1, q2, p1, p2 = x.unbind(-1)
        return (0.5 * q1**2 + 0.5 * p1**2 + q1 * p2**3 + torch.cos(q2) * p1).unsqueeze(-1)


def test_vector_field_is_the_symplectic_gradient_of_the_hamiltonian():
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(7, 2, generator=gen, dtype=D64)
    p = torch.randn(7, 2, generator=gen, dtype=D64)
    dq, dp = HamiltonianNN(_Analytic()).derivatives(q, p)
    q1, q2 = q.unbind(-1)
    p1, p2 = p.unbind(-1)
    dh_dq = torch.stack([q1 + p2**3, -torch.sin(q2) * p1], -1)
    dh_dp = torch.stack([p1 + torch.cos(q2), 3 * q1 * p2**2], -1)
    torch.testing.assert_close(dq, dh_dp, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(dp, -dh_dq, rtol=1e-14, atol=1e-14)


def test_tuple_and_tensor_states_give_the_same_field_and_trajectory():
    model = HamiltonianNN(_net(4), solver="tsit5", rtol=1e-9, atol=1e-11)
    q, p = torch.randn(3, 2, dtype=D64), torch.randn(3, 2, dtype=D64)
    dq, dp = model.vector_field(0.0, (q, p))
    dx = model.vector_field(0.0, torch.cat([q, p], -1))
    torch.testing.assert_close(dx, torch.cat([dq, dp], -1))
    t = torch.linspace(0, 1, 5, dtype=D64)
    qs, ps = model((q, p), t)
    xs = model(torch.cat([q, p], -1), t)
    assert qs.shape == (5, 3, 2) and xs.shape == (5, 3, 4)
    torch.testing.assert_close(xs, torch.cat([qs, ps], -1))


def test_learned_energy_is_conserved_along_an_adaptive_rollout():
    model = HamiltonianNN(_net(2), solver="dopri8", rtol=1e-11, atol=1e-12)
    x0 = torch.randn(4, 2, dtype=D64)
    with torch.no_grad():
        xs = model(x0, torch.linspace(0, 5, 11, dtype=D64))
        h = model.energy(xs[..., :1], xs[..., 1:])
    assert float((h - h[0]).abs().max()) < 1e-9


def test_field_is_differentiable_for_derivative_matching():
    """The gradient of a derivative-matching loss w.r.t. a weight matches finite differences."""
    model = HamiltonianNN(_net(2))
    x = torch.randn(6, 2, dtype=D64)
    target = torch.randn(6, 2, dtype=D64)
    weight = model.hamiltonian[0].weight

    def loss() -> torch.Tensor:
        return (model.vector_field(0.0, x) - target).square().sum()

    loss().backward()
    analytic = weight.grad[0, 1].item()
    assert analytic == pytest.approx(central_difference(loss, weight, (0, 1)), rel=1e-6, abs=1e-9)


def test_derivatives_pass_gradcheck_in_the_state():
    model = HamiltonianNN(_net(2))
    q = torch.randn(3, 1, dtype=D64, requires_grad=True)
    p = torch.randn(3, 1, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: model.derivatives(a, b), (q, p))


def test_no_grad_rollouts_work_and_are_detached():
    model = HamiltonianNN(_net(2), solver="rk4", dt=0.1)
    with torch.no_grad():
        dx = model.vector_field(0.0, torch.randn(5, 2, dtype=D64))
        xs = model(torch.randn(5, 2, dtype=D64), torch.linspace(0, 1, 3, dtype=D64))
    assert not dx.requires_grad and not xs.requires_grad
    assert torch.isfinite(xs).all()


def test_adjoint_and_backprop_gradients_of_a_rollout_agree():
    x0 = torch.randn(3, 2, dtype=D64)
    t = torch.linspace(0, 1, 4, dtype=D64)
    grads = []
    for gradient in ("backprop", "adjoint"):
        model = HamiltonianNN(_net(2), solver="dopri5", rtol=1e-10, atol=1e-12, gradient=gradient)
        model(x0, t).square().sum().backward()
        grads.append(flat_grad(model))
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-6, atol=1e-8)


def test_separable_model_with_leapfrog_keeps_its_energy_error_bounded():
    """Constant mass: separable, so leapfrog is symplectic; no drift over 3,000 steps."""
    torch.manual_seed(0)
    potential = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1)).to(D64)
    model = SeparableHamiltonianNN(_Confining(potential), 1).to(D64)
    assert model.separable
    y0 = (torch.tensor([[0.8]], dtype=D64), torch.tensor([[0.3]], dtype=D64))
    t = torch.tensor([0.0, 600.0], dtype=D64)
    with torch.no_grad():
        sol = nde.solve(
            lambda _, y: model.derivatives(*y), y0, t, "leapfrog", dt=0.2, save_steps=True, max_steps=10**4
        )
        h = model.energy(*sol.step_ys)[:, 0]
    err = (h - h[0]).abs()
    early, late = float(err[:300].max()), float(err[-300:].max())
    assert 0 < early < 0.05
    assert late < 1.5 * early  # bounded: no secular growth


class _Confining(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return self.net(q) + q.square().sum(-1, keepdim=True)


def test_separable_energy_is_kinetic_plus_potential_with_a_positive_definite_mass():
    torch.manual_seed(0)
    potential = _net(2)
    model = SeparableHamiltonianNN(potential, 2, mass="learned", mass_hidden=8).to(D64)
    with torch.no_grad():  # move away from the identity initialisation
        for prm in model.hamiltonian.cholesky.parameters():
            prm.add_(0.5 * torch.randn_like(prm))
    q, p = torch.randn(9, 2, dtype=D64), torch.randn(9, 2, dtype=D64)
    m = model.mass_matrix(q)
    torch.testing.assert_close(m, m.mT)
    assert float(torch.linalg.eigvalsh(m.detach()).min()) > 0
    kinetic = 0.5 * (p.unsqueeze(-2) @ torch.linalg.solve(m, p.unsqueeze(-1))).reshape(-1)
    expected = kinetic + potential(q).squeeze(-1)
    torch.testing.assert_close(model.energy(q, p), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.kinetic_energy(q, p), kinetic, rtol=1e-12, atol=1e-12)
    assert not model.separable


def test_separable_constant_mass_starts_at_identity_and_is_learnable():
    model = SeparableHamiltonianNN(_net(3), 3)
    m = model.mass_matrix(torch.zeros(3, dtype=D64))
    torch.testing.assert_close(m, torch.eye(3, dtype=D64), rtol=0, atol=1e-6)
    model.energy(torch.randn(4, 3, dtype=D64), torch.randn(4, 3, dtype=D64)).sum().backward()
    assert model.hamiltonian.cholesky.raw.grad.abs().sum() > 0


def test_control_term_adds_g_times_u_and_changes_energy_at_the_input_power():
    model = HamiltonianNN(_Analytic(), control=_Gain())
    q = torch.randn(5, 2, dtype=D64)
    p = torch.randn(5, 2, dtype=D64)
    u = torch.randn(5, 3, dtype=D64)
    dq0, dp0 = HamiltonianNN(_Analytic()).derivatives(q, p)
    dq, dp = model.derivatives(q, p, u=u)
    gain = _Gain()(q)
    torch.testing.assert_close(dq, dq0)
    torch.testing.assert_close(dp, dp0 + (gain @ u.unsqueeze(-1)).squeeze(-1))
    # dH/dt along the field equals qdot^T G u
    with torch.enable_grad():
        qg, pg = q.clone().requires_grad_(), p.clone().requires_grad_()
        gq, gp = torch.autograd.grad(model.energy(qg, pg).sum(), (qg, pg))
    rate = (gq * dq).sum(-1) + (gp * dp).sum(-1)
    torch.testing.assert_close(rate, (dq.unsqueeze(-2) @ gain @ u.unsqueeze(-1)).reshape(-1))


def test_control_input_may_be_a_function_of_time():
    model = HamiltonianNN(_Analytic(), control=_Gain(), solver="rk4", dt=0.01)
    x0 = torch.randn(2, 4, dtype=D64)

    def u(t: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.sin(t), torch.cos(t), t]).expand(2, 3)

    xs = model(x0, torch.linspace(0, 0.5, 3, dtype=D64), u=u)
    assert xs.shape == (3, 2, 4) and torch.isfinite(xs).all()
    q, p = x0.chunk(2, -1)
    _, dp_with = model.derivatives(q, p, t=torch.tensor(0.3, dtype=D64), u=u)
    _, dp_without = HamiltonianNN(_Analytic()).derivatives(q, p)
    assert not torch.allclose(dp_with, dp_without)


class _Gain(nn.Module):
    """G(q) = [[q1, 1, 0], [0, q2, 1]] (d = 2, m = 3)."""

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        one, zero = torch.ones_like(q[..., 0]), torch.zeros_like(q[..., 0])
        rows = [torch.stack([q[..., 0], one, zero], -1), torch.stack([zero, q[..., 1], one], -1)]
        return torch.stack(rows, -2)


def test_leapfrog_accepts_a_tensor_state():
    model = HamiltonianNN(_net(2), solver="leapfrog", dt=0.1)
    xs = model(torch.randn(3, 2, dtype=D64), torch.linspace(0, 1, 11, dtype=D64))
    assert xs.shape == (11, 3, 2)
    assert model.stats.steps == 10


def test_bad_inputs_raise_errors_that_name_the_fix():
    model = HamiltonianNN(_net(2))
    with pytest.raises(ValueError, match="even last dimension"):
        model.vector_field(0.0, torch.randn(3, 3))
    with pytest.raises(ValueError, match="no control network"):
        model.derivatives(torch.randn(2, 1), torch.randn(2, 1), u=torch.randn(2, 1))
    with pytest.raises(ValueError, match="pass the input u"):
        HamiltonianNN(_Analytic(), control=_Gain()).derivatives(torch.randn(2, 2), torch.randn(2, 2))
    with pytest.raises(ValueError, match="one scalar per state"):
        HamiltonianNN(_net(2, n_out=3)).vector_field(0.0, torch.randn(4, 2, dtype=D64))
    with pytest.raises(TypeError, match="unknown option"):
        HamiltonianNN(_net(2), tolerance=1e-3)
    with pytest.raises(ValueError, match="mass must be"):
        SeparableHamiltonianNN(_net(1), 1, mass="heavy")
    with pytest.raises(ValueError, match="dim"):
        SeparableHamiltonianNN(_net(1), 0)
    with pytest.raises(ValueError, match="dim=2"):
        SeparableHamiltonianNN(_net(2), 2).energy(torch.randn(3, 1), torch.randn(3, 1))


def test_period_of_a_learned_oscillator_matches_its_hamiltonian():
    """H = (q^2 + p^2) / 2 given as a module: one period of 2 pi returns to the start."""

    class Oscillator(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 0.5 * x.square().sum(-1)

    model = HamiltonianNN(Oscillator(), solver="tsit5", rtol=1e-10, atol=1e-12)
    x0 = torch.tensor([[1.0, 0.0]], dtype=D64)
    xs = model(x0, torch.tensor([0.0, math.pi, 2 * math.pi], dtype=D64))
    torch.testing.assert_close(xs[1], -x0, atol=1e-8, rtol=0)
    torch.testing.assert_close(xs[2], x0, atol=1e-8, rtol=0)


def test_without_t_eval_the_model_returns_the_state_at_the_end_of_t_span():
    model = HamiltonianNN(_net(2), solver="rk4", dt=0.1, t_span=(0.0, 1.0))
    x0 = torch.randn(5, 2, dtype=D64)
    final = model(x0)
    assert final.shape == (5, 2)
    assert model.stats.steps == 10 and model.nfe == 40
    torch.testing.assert_close(final, model(x0, torch.tensor([0.0, 1.0], dtype=D64))[-1])
    q, p = model((x0[:, :1], x0[:, 1:]))
    torch.testing.assert_close(torch.cat([q, p], -1), final)
    with pytest.raises(ValueError, match="t_span"):
        HamiltonianNN(_net(2), t_span=(1.0, 1.0))
