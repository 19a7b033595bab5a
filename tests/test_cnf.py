"""``CNF``: shapes, the log-density of a linear flow in closed form, the exact and Hutchinson
traces, sampling as the inverse map and its trajectories, the regularisers' integrals (also per
dimension), and gradients (finite differences, every strategy)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchnde as nde
from torchnde.models import CNF, ConcatTimeMLP, exact_trace, hutchinson_trace, probe_like

F64 = torch.float64


def _linear(a: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(a.shape[0], a.shape[0], bias=False).to(a.dtype)
    with torch.no_grad():
        lin.weight.copy_(a)
    return lin


def _tiny_flow(**options) -> CNF:
    torch.manual_seed(0)
    flow = CNF(dim=2, hidden=(4,), **options).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.5)
    return flow


def test_log_prob_sample_and_flow_shapes():
    flow = CNF(dim=3, hidden=(8, 8), solver="rk4", dt=0.25)
    x = torch.randn(5, 3)
    assert flow.log_prob(x).shape == (5,)
    z, delta = flow.flow(x)
    assert z.shape == (5, 3) and delta.shape == (5,)
    assert flow.sample(7).shape == (7, 3)
    assert flow(x).shape == (5,) and flow.nfe == 16


def test_event_shapes_beyond_vectors_are_flattened_for_the_trace():
    a = torch.tensor([[0.1, 0.2], [-0.3, 0.4]], dtype=F64)  # acts on the last axis of [batch, 3, 2]
    flow = CNF(lambda t, z: z @ a.T, event_shape=(3, 2), solver="rk4", dt=0.1)
    x = torch.randn(4, 3, 2, dtype=F64)
    _, delta = flow.flow(x)
    torch.testing.assert_close(delta, torch.full((4,), 3 * 0.5, dtype=F64))  # tr = 3 * tr(a), t in [0, 1]
    assert flow.sample(2, dtype=F64).shape == (2, 3, 2)


def test_log_prob_of_a_linear_flow_is_the_gaussian_pushed_through_exp_of_minus_a():
    # z(1) = exp(A) x ~ N(0, I)  <=>  x ~ N(0, exp(-A) exp(-A)^T)
    torch.manual_seed(1)
    a = 0.6 * torch.randn(3, 3, dtype=F64)
    flow = CNF(_linear(a), dim=3, solver="dopri5", rtol=1e-10, atol=1e-10)
    x = torch.randn(6, 3, dtype=F64)
    e = torch.linalg.matrix_exp(-a)
    expected = torch.distributions.MultivariateNormal(torch.zeros(3, dtype=F64), e @ e.T).log_prob(x)
    torch.testing.assert_close(flow.log_prob(x), expected, atol=1e-8, rtol=0)


def test_exact_trace_equals_the_trace_of_the_jacrev_jacobian():
    torch.manual_seed(2)
    f = ConcatTimeMLP(5, hidden=(16, 16)).double()
    z = torch.randn(4, 5, dtype=F64, requires_grad=True)
    t = torch.tensor(0.3, dtype=F64)
    trace, frobenius = exact_trace(f(t, z), z)
    jac = torch.stack([torch.func.jacrev(lambda v: f(t, v[None])[0])(zi) for zi in z.detach()])
    torch.testing.assert_close(trace, jac.diagonal(dim1=1, dim2=2).sum(1))
    torch.testing.assert_close(frobenius, jac.pow(2).sum((1, 2)))


def test_exact_frobenius_sums_each_rows_squares_first_in_a_fixed_order():
    # the order of the additions is part of the result (an experiment's figures are reproduced to
    # the last bit): row i's squared norm, then the rows in order
    torch.manual_seed(2)
    z = torch.randn(1000, 2, requires_grad=True)
    a = torch.randn(2, 2)
    dz = torch.tanh(z) @ a.T
    _, frobenius = exact_trace(dz, z)
    rows = [torch.autograd.grad(dz[:, i].sum(), z, retain_graph=True)[0] for i in range(2)]
    assert torch.equal(frobenius, rows[0].pow(2).sum(1) + rows[1].pow(2).sum(1))


def _probe_estimates(kind: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` one-probe estimates at one point of an MLP field, and the exact trace there."""
    torch.manual_seed(3)
    f = ConcatTimeMLP(6, hidden=(16,)).double()
    t = torch.tensor(0.0, dtype=F64)
    z = torch.randn(1, 6, dtype=F64).expand(n, 6).clone().requires_grad_()
    dz = f(t, z)
    estimates, _ = hutchinson_trace(dz, z, probe_like(z, kind, torch.Generator().manual_seed(4)))
    return estimates, exact_trace(dz, z)[0][0]


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_mean_over_many_probes_is_within_three_standard_errors_of_the_trace(kind):
    estimates, exact = _probe_estimates(kind, 20_000)
    standard_error = estimates.std() / estimates.numel() ** 0.5
    assert standard_error > 0
    assert abs(estimates.mean() - exact) <= 3 * standard_error


def test_rademacher_probes_have_less_variance_than_gaussian_ones():
    rademacher, _ = _probe_estimates("rademacher", 20_000)
    gaussian, _ = _probe_estimates("gaussian", 20_000)
    assert rademacher.var() < gaussian.var()


def test_one_probe_is_drawn_per_solve_and_held_fixed():
    # f = a z: every evaluation's estimate is ε^T a ε, so Δ(1) is exactly that for the solve's ε
    a = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0], [0.0, 1.0, 2.0]], dtype=F64)
    flow = CNF(_linear(a), dim=3, trace="hutchinson", solver="rk4", dt=0.1)
    x = torch.randn(50, 3, dtype=F64)
    _, delta = flow.flow(x, generator=torch.Generator().manual_seed(5))
    eps = probe_like(x, "rademacher", torch.Generator().manual_seed(5))
    torch.testing.assert_close(delta, ((eps @ a.T) * eps).sum(1))
    assert len(set(delta.tolist())) > 1  # the probe differs between samples


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_log_prob_is_unbiased_for_the_exact_one(kind):
    # one point repeated: each copy draws its own probe, and the trajectory does not depend on
    # it, so the copies' Δ are independent draws whose mean is the exact solve's Δ
    flow = _tiny_flow(trace="hutchinson", probe=kind, solver="rk4", dt=0.25)
    x = torch.randn(1, 2, dtype=F64).expand(4000, 2)
    estimates = flow.log_prob(x, generator=torch.Generator().manual_seed(10)).detach()
    exact = _tiny_flow(solver="rk4", dt=0.25).log_prob(x[:1]).detach()
    standard_error = estimates.std() / estimates.numel() ** 0.5
    assert standard_error > 0
    assert abs(estimates.mean() - exact) <= 3 * standard_error


def test_sample_inverts_the_forward_map():
    flow = _tiny_flow(solver="dopri5", rtol=1e-10, atol=1e-10)
    z = torch.randn(8, 2, dtype=F64)
    x = flow.inverse(z)
    assert (x - z).abs().max() > 0.1  # the flow moves the points
    torch.testing.assert_close(flow.flow(x)[0], z, atol=1e-7, rtol=0)
    torch.manual_seed(6)
    samples = flow.sample(3, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(
        flow.flow(samples)[0],
        torch.randn(3, 2, generator=torch.Generator().manual_seed(7), dtype=F64),
        atol=1e-7,
        rtol=0,
    )


def test_regularisers_integrate_the_kinetic_energy_and_the_exact_frobenius_norm():
    # f = c z: z(t) = e^{ct} x, ∫‖f‖² dt = c² ‖x‖² (e^{2c} - 1) / (2c), ∫‖∂f‖_F² dt = c² d
    c = 0.7
    flow = CNF(
        _linear(c * torch.eye(2, dtype=F64)),
        dim=2,
        regularisers=[nde.models.KineticEnergy(1.0), nde.models.JacobianFrobenius(10.0)],
        solver="dopri5",
        rtol=1e-10,
        atol=1e-10,
    )
    x = torch.randn(5, 2, dtype=F64)
    flow.log_prob(x)
    kinetic = c**2 * x.pow(2).sum(1) * (torch.exp(torch.tensor(2 * c)) - 1) / (2 * c)
    expected = kinetic.mean() + 10.0 * c**2 * 2
    torch.testing.assert_close(flow.regularisation, expected.to(F64), atol=0, rtol=1e-7)


def test_per_dimension_regularisers_integrate_the_rates_of_finlay_et_als_code():
    # f = A z (not normal): ∫‖f‖²/(2d) dt by Simpson's rule on the closed form z(t) = e^{tA} x,
    # and ∫‖A‖_F²/d dt = ‖A‖_F²/d; the penalty weights them, the integrals are kept per sample
    a = torch.tensor([[0.3, -0.8], [0.5, -0.4]], dtype=F64)
    regs = [
        nde.models.KineticEnergy(0.5, per_dimension=True),
        nde.models.JacobianFrobenius(3.0, per_dimension=True),
    ]
    flow = CNF(_linear(a), dim=2, regularisers=regs, solver="dopri5", rtol=1e-10, atol=1e-10)
    x = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    flow.log_prob(x)
    kinetic, frobenius = flow.integrals
    ts = torch.linspace(0, 1, 401, dtype=F64)
    velocity = torch.einsum(
        "kij,nj->kni", a @ torch.linalg.matrix_exp(ts[:, None, None] * a), x
    )  # [401, 6, 2]
    speed = velocity.pow(2).sum(2) / 4
    w = torch.ones(401, dtype=F64)
    w[1:-1:2], w[2:-1:2] = 4, 2
    torch.testing.assert_close(kinetic, (w[:, None] * speed).sum(0) / (3 * 400), rtol=1e-9, atol=0)
    torch.testing.assert_close(frobenius, torch.full((6,), float(a.pow(2).sum() / 2), dtype=F64))
    torch.testing.assert_close(flow.regularisation, 0.5 * kinetic.mean() + 3.0 * frobenius.mean())


def test_per_dimension_changes_the_integrated_channel_not_only_the_weight():
    # the same penalty either way, but the channels differ by 2d and d, so an adaptive solver
    # sees other states: on a fixed grid the integrals agree to rounding
    flow_options = {"solver": "rk4", "dt": 0.25}
    x = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    plain = _tiny_flow(
        regularisers=[nde.models.KineticEnergy(1.0), nde.models.JacobianFrobenius(1.0)], **flow_options
    )
    scaled = _tiny_flow(
        regularisers=[nde.models.KineticEnergy(1.0, per_dimension=True), nde.models.JacobianFrobenius(1.0, per_dimension=True)],
        **flow_options,
    )  # fmt: skip
    plain.log_prob(x)
    scaled.log_prob(x)
    torch.testing.assert_close(scaled.integrals[0], plain.integrals[0] / 4, rtol=1e-14, atol=0)
    torch.testing.assert_close(scaled.integrals[1], plain.integrals[1] / 2, rtol=1e-14, atol=0)
    assert plain.integrals[0].min() > 0 and plain.integrals[1].min() > 0


def test_regularised_loss_gradients_match_finite_differences_in_float64():
    regs = [
        nde.models.KineticEnergy(0.5, per_dimension=True),
        nde.models.JacobianFrobenius(0.5, per_dimension=True),
    ]
    flow = _tiny_flow(regularisers=regs, solver="rk4", dt=0.5)
    names = [n for n, _ in flow.named_parameters()]
    x = torch.randn(3, 2, dtype=F64, generator=torch.Generator().manual_seed(3))

    def loss(*params: torch.Tensor) -> torch.Tensor:
        logp = torch.func.functional_call(flow, dict(zip(names, params)), (x,))
        return -logp.mean() + flow.regularisation

    params = tuple(p.detach().clone().requires_grad_() for p in flow.parameters())
    assert torch.autograd.gradcheck(loss, params, eps=1e-6, atol=1e-6, fast_mode=True)


def test_trajectory_runs_the_field_through_every_time_and_ends_at_the_inverse():
    flow = _tiny_flow(solver="dopri5", rtol=1e-9, atol=1e-9)
    z = torch.randn(4, 2, dtype=F64, generator=torch.Generator().manual_seed(4))
    ts = torch.linspace(1, 0, 6, dtype=F64)
    paths = flow.trajectory(z, ts)
    assert paths.shape == (6, 4, 2) and torch.equal(paths[0], z)
    nfe = flow.nfe
    torch.testing.assert_close(paths[-1], flow.inverse(z), atol=1e-9, rtol=0)
    assert nfe >= flow.nfe > 0  # the dense grid costs at least the two-point solve
    # each point of the path maps forwards onto the base point z over the rest of [0, 1]
    back = CNF(flow.field, dim=2, solver="dopri5", rtol=1e-9, atol=1e-9, t_span=(float(ts[2]), 1.0))
    torch.testing.assert_close(back.flow(paths[2])[0], z, atol=1e-7, rtol=0)


def test_density_of_an_untrained_flow_integrates_to_one():
    flow = _tiny_flow(solver="dopri5", rtol=1e-7, atol=1e-7)
    g = torch.linspace(-7, 7, 141, dtype=F64)
    grid = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        logp = flow.log_prob(grid)
    assert float(logp.exp().sum() * (g[1] - g[0]) ** 2) == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_gradients_match_finite_differences_in_float64(trace):
    flow = _tiny_flow(trace=trace, solver="rk4", dt=0.5)
    names = [n for n, _ in flow.named_parameters()]
    x = torch.randn(2, 2, dtype=F64)

    def log_prob(*params: torch.Tensor) -> torch.Tensor:
        # the same probe at every call, so that the estimate is a smooth function of the weights
        same_probe = {"generator": torch.Generator().manual_seed(8)}
        return torch.func.functional_call(flow, dict(zip(names, params)), (x,), same_probe)

    params = tuple(p.detach().clone().requires_grad_() for p in flow.parameters())
    assert torch.autograd.gradcheck(log_prob, params, eps=1e-6, atol=1e-6)


# the adjoint's gradient is the continuous one (equal to the tolerance of a tight solve);
# checkpointing recomputes the same discrete steps (equal to rounding)
STRATEGIES = {
    "adjoint": ({"solver": "dopri5", "rtol": 1e-9, "atol": 1e-9}, 1e-6),
    "checkpoint": ({"solver": "rk4", "dt": 0.25}, 1e-12),
}


@pytest.mark.parametrize("gradient", STRATEGIES)
@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_every_gradient_strategy_agrees_with_backprop(gradient, trace):
    options, tol = STRATEGIES[gradient]
    x = torch.randn(4, 2, dtype=F64)
    grads = {}
    for strategy in ("backprop", gradient):
        flow = _tiny_flow(
            trace=trace, gradient=strategy,
            regularisers=[nde.models.KineticEnergy(1.0), nde.models.JacobianFrobenius(1.0)], **options,
        )  # fmt: skip
        loss = flow.log_prob(x, generator=torch.Generator().manual_seed(9)).sum() + flow.regularisation
        grads[strategy] = torch.autograd.grad(loss, tuple(flow.parameters()))
    for g, ref in zip(grads[gradient], grads["backprop"]):
        assert g.abs().max() > 0
        torch.testing.assert_close(g, ref, atol=tol, rtol=tol)


def test_bad_arguments_are_errors_that_name_the_fix():
    with pytest.raises(ValueError, match="unknown trace 'hutch'; valid: exact, hutchinson"):
        CNF(dim=2, trace="hutch")
    with pytest.raises(ValueError, match="unknown probe"):
        CNF(dim=2, probe="normal")
    with pytest.raises(TypeError, match="needs dim="):
        CNF()
    with pytest.raises(TypeError, match="hidden= sizes the default field only"):
        CNF(lambda t, z: z, dim=2, hidden=(8,))
    with pytest.raises(TypeError, match="unknown option"):
        CNF(dim=2, tolerance=1e-3)
    with pytest.raises(ValueError, match=r"x\.unsqueeze"):
        CNF(dim=2).log_prob(torch.randn(2))
    with pytest.raises(ValueError, match="event shape is"):
        CNF(dim=2).log_prob(torch.randn(4, 3))
    with pytest.raises(TypeError, match="event_shape="):
        CNF(lambda t, z: z).sample(3)
    with pytest.raises(TypeError, match="per_dimension must be True or False"):
        nde.models.KineticEnergy(0.1, per_dimension="yes")
