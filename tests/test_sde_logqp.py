"""The KL path term of a latent SDE: ``SDETerm(..., prior_drift=h)`` accumulates
``int 1/2 |(f - h) / g|^2 dt`` as ``sol.kl``, as torchsde 0.2.6's ``logqp=True`` does on the same
Brownian increments, and it is differentiable with every gradient strategy."""

from __future__ import annotations

import pytest
import torch
import torchsde

import torchnde as nde

from .sde_helpers import DTYPE, SharedBrownian, SmallSDE, brownian, relative_error, small_y0

TS = torch.linspace(0, 1, 5, dtype=DTYPE)


@pytest.mark.parametrize(
    ("noise", "calculus", "solver"),
    [
        ("diagonal", "ito", "euler"),
        ("diagonal", "ito", "milstein"),
        ("diagonal", "ito", "srk"),
        ("diagonal", "stratonovich", "midpoint"),
        ("diagonal", "stratonovich", "reversible_heun"),
        ("scalar", "ito", "srk"),
        ("additive", "ito", "srk"),
        ("general", "stratonovich", "heun"),
    ],
)
def test_kl_agrees_with_torchsde_logqp_on_the_same_increments(noise, calculus, solver):
    sde = SmallSDE(noise, calculus)
    bm = brownian(noise, seed=31)
    shared = SharedBrownian(bm, pad=noise == "diagonal")  # torchsde's logqp channel has its own noise
    with torch.no_grad():
        sol = nde.solve(sde.term(bm, prior=True), small_y0(), TS, solver=solver, dt=2.0**-6)
        ys, log_ratio = torchsde.sdeint(sde, small_y0(), TS, bm=shared, method=solver, dt=2.0**-6, logqp=True)
    assert sol.kl.shape == (5, 8) and torch.equal(sol.kl[0], torch.zeros(8, dtype=DTYPE))
    assert torch.allclose(sol.ys, ys, rtol=0, atol=1e-12)
    assert torch.allclose(sol.kl.diff(dim=0), log_ratio, rtol=1e-12, atol=1e-12)


def test_the_state_is_the_same_with_and_without_the_prior():
    sde = SmallSDE("diagonal", "ito")
    bm = brownian("diagonal", seed=32)  # the user's shape: the KL channel adds no Brownian motion
    with torch.no_grad():
        plain = nde.solve(sde.term(bm), small_y0(), TS, solver="srk", dt=2.0**-6)
        with_kl = nde.solve(sde.term(bm, prior=True), small_y0(), TS, solver="srk", dt=2.0**-6)
    assert torch.equal(plain.ys, with_kl.ys) and plain.kl is None


def test_a_constant_drift_gap_gives_the_closed_form_kl():
    gap, sigma = torch.tensor([0.3, -0.6], dtype=DTYPE), torch.tensor([0.5, 2.0], dtype=DTYPE)
    term = nde.SDETerm(
        lambda t, y: -y + gap,
        lambda t, y: sigma.expand_as(y),
        calculus="stratonovich",
        prior_drift=lambda t, y: -y,
    )
    torch.manual_seed(0)
    sol = nde.solve(term, torch.randn(3, 2, dtype=DTYPE), TS, solver="heun", dt=0.1)
    rate = 0.5 * float(((gap / sigma) ** 2).sum())
    assert torch.allclose(sol.kl, rate * TS[:, None].expand(5, 3), rtol=1e-12, atol=1e-14)


class _Latent(torch.nn.Module):
    """A latent SDE: posterior drift and prior drift networks, a positive diagonal diffusion."""

    def __init__(self, calculus: str):
        super().__init__()
        torch.manual_seed(3)
        self.noise_type, self.sde_type = "diagonal", calculus
        self.post = torch.nn.Sequential(
            torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)
        ).double()
        self.prior = torch.nn.Linear(2, 2).double()
        self.scale = torch.nn.Parameter(torch.tensor([0.4, 0.6], dtype=DTYPE))

    def f(self, t, y):
        return self.post(y)

    def g(self, t, y):
        return self.scale * (1.0 + 0.5 * torch.sigmoid(y))

    def h(self, t, y):
        return self.prior(y)

    def term(self, bm):
        return nde.SDETerm(self.f, self.g, "diagonal", self.sde_type, bm, prior_drift=self.h)


def _grads(model: _Latent, bm, solver: str, gradient, dt: float):
    y0 = small_y0().requires_grad_(True)
    sol = nde.solve(model.term(bm), y0, TS, solver=solver, dt=dt, gradient=gradient)
    loss = sol.ys[-1].square().sum() + sol.kl[-1].sum()
    return torch.autograd.grad(loss, [y0, *model.parameters()])


def test_the_kl_is_differentiable_with_every_gradient_strategy():
    strat, ito = _Latent("stratonovich"), _Latent("ito")
    bm = brownian("diagonal", seed=33)
    backprop = _grads(strat, bm, "reversible_heun", "backprop", 2.0**-6)
    assert relative_error(_grads(strat, bm, "reversible_heun", "reversible", 2.0**-6), backprop) < 1e-10
    assert relative_error(_grads(strat, bm, "reversible_heun", "checkpoint", 2.0**-6), backprop) < 1e-12
    for model, solver in ((strat, "midpoint"), (ito, "srk")):
        want = _grads(model, bm, solver, "backprop", 2.0**-9)
        assert relative_error(_grads(model, bm, solver, "adjoint", 2.0**-9), want) < 1e-3


def test_the_prior_drift_is_checked():
    with pytest.raises(TypeError, match=r"callable prior_drift\(t, y\)"):
        nde.SDETerm(abs, abs, prior_drift=3.0)
    term = nde.SDETerm(lambda t, y: y, lambda t, y: y, prior_drift=lambda t, y: y)
    with pytest.raises(ValueError, match="at least one axis"):
        nde.solve(term, torch.tensor(1.0), TS, solver="euler", dt=0.1)
    with pytest.raises(ValueError, match="takes a tensor state"):
        nde.solve(term, (torch.ones(2), torch.ones(2)), TS, solver="euler", dt=0.1)
