"""LatentODE: ODE-RNN encoder, variational posterior over z0, ODE decoder, masked ELBO."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import torchnde as nde
from torchnde.models import ODERNN, LatentODE

HIDDEN, LATENT, CHANNELS = 4, 2, 2


def _model(seed=0, *, solver="rk4", gradient="backprop", **steps) -> LatentODE:
    torch.manual_seed(seed)
    steps = steps or {"dt": 0.1}
    encoder = ODERNN(
        nn.Sequential(nn.Linear(HIDDEN, 5), nn.Tanh(), nn.Linear(5, HIDDEN)),
        nn.GRUCell(2 * CHANNELS, HIDDEN),
        solver=solver,
        gradient=gradient,
        **steps,
    )
    field = nn.Sequential(nn.Linear(LATENT, 5), nn.Tanh(), nn.Linear(5, LATENT))
    return LatentODE(
        encoder,
        field,
        nn.Linear(LATENT, CHANNELS),
        latent_dim=LATENT,
        obs_std=0.5,
        solver=solver,
        gradient=gradient,
        **steps,
    ).double()


def _series(batch=3, length=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    jitter = torch.rand(length, generator=gen, dtype=torch.float64)
    jitter[0] = 0.0
    times = torch.linspace(0, 1, length, dtype=torch.float64) + 0.02 * jitter
    values = torch.randn(batch, length, CHANNELS, generator=gen, dtype=torch.float64)
    mask = torch.rand(batch, length, CHANNELS, generator=gen) > 0.3
    return times, values, mask


def _gen(seed=1):
    return torch.Generator().manual_seed(seed)


def test_outputs_have_batch_first_shapes():
    model = _model()
    times, values, mask = _series()
    out = model(times, values, mask, torch.linspace(0, 2, 7, dtype=torch.float64))
    assert out.prediction.shape == (3, 7, CHANNELS)
    assert out.mean.shape == out.std.shape == out.z0.shape == (3, LATENT)
    assert (out.std > 0).all()
    assert model.predict(times, values, mask, torch.linspace(0, 2, 7)).shape == (3, 7, CHANNELS)
    assert model.sample(torch.linspace(0, 2, 7), 4, generator=_gen()).shape == (4, 7, CHANNELS)


def test_the_elbo_is_the_masked_gaussian_log_likelihood_minus_the_kl():
    model = _model()
    times, values, mask = _series()
    terms = model.elbo(times, values, mask, generator=_gen())
    out = model(times, values, mask, generator=_gen())
    point = torch.distributions.Normal(out.prediction, 0.5).log_prob(values)
    loglik = (point * mask).sum((1, 2))
    q = torch.distributions.Normal(out.mean, out.std)
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1)
    assert terms.log_likelihood.item() == pytest.approx(loglik.mean().item(), rel=1e-12)
    assert terms.kl.item() == pytest.approx(kl.mean().item(), rel=1e-12)
    assert terms.value.item() == pytest.approx((loglik - kl).mean().item(), rel=1e-12)
    half = model.elbo(times, values, mask, generator=_gen(), kl_weight=0.5)
    assert half.value.item() == pytest.approx((loglik - 0.5 * kl).mean().item(), rel=1e-12)


def test_a_masked_point_changes_neither_the_posterior_nor_the_elbo():
    model = _model()
    times, values, mask = _series()
    changed = torch.where(mask, values, torch.full_like(values, float("nan")))
    a = model.elbo(times, values, mask, generator=_gen())
    b = model.elbo(times, changed, mask, generator=_gen())
    assert torch.equal(a.value, b.value)
    assert torch.equal(model.predict(times, values, mask, times), model.predict(times, changed, mask, times))


def test_the_encoder_runs_backwards_to_t0_and_maps_its_state_to_mean_and_log_std():
    model = _model()
    times, values, mask = _series()
    h = model.encoder(times, values, mask, reverse=True, t_end=-0.5)
    mean, log_std = model.to_posterior(h).chunk(2, -1)
    got_mean, got_std = model.posterior(times, values, mask, t0=-0.5)
    assert torch.allclose(got_mean, mean, atol=1e-14)
    assert torch.allclose(got_std, log_std.exp(), atol=1e-14)


def test_predict_decodes_the_posterior_mean_with_the_latent_ode():
    model = _model()
    times, values, mask = _series()
    query = torch.tensor([0.5, 1.5, 3.0], dtype=torch.float64)
    mean, _ = model.posterior(times, values, mask)
    t0 = float(times[0])
    zs = nde.solve(lambda t, z: model.field(z), mean, torch.cat([times[:1], query]), solver="rk4", dt=0.1).ys[
        1:
    ]
    expected = model.decoder(zs.transpose(0, 1))
    assert torch.allclose(model.predict(times, values, mask, query), expected, atol=1e-14)
    assert torch.allclose(model.decode(mean, query, t0=t0), expected, atol=1e-14)


def test_prior_samples_start_from_standard_normal_draws():
    model = _model()
    query = torch.tensor([0.0, 1.0], dtype=torch.float64)
    z0 = torch.randn(6, LATENT, generator=_gen(3), dtype=torch.float64)
    assert torch.allclose(model.sample(query, 6, generator=_gen(3))[:, 0], model.decoder(z0), atol=1e-14)


def test_per_sample_times_and_queries_agree_with_the_shared_grid():
    model = _model()
    times, values, mask = _series()
    query = torch.linspace(0, 2, 6, dtype=torch.float64)
    shared = model.predict(times, values, mask, query)
    rows = model.predict(times.expand(3, -1), values, mask, query.expand(3, -1))
    assert torch.allclose(shared, rows, atol=1e-12)


def test_gradients_match_finite_differences_in_float64():
    model = _model()
    times, values, mask = _series(batch=2, length=3)
    weight = model.field[0].weight.detach().clone()

    def loss(v, w):
        params = {"field.0.weight": w}
        return torch.func.functional_call(
            model, params, (times, v, mask), {"generator": _gen(), "t_query": times}
        ).prediction

    assert torch.autograd.gradcheck(loss, (values.requires_grad_(), weight.requires_grad_()), fast_mode=True)


def _elbo_gradient(model: LatentODE, times, values, mask) -> torch.Tensor:
    model.zero_grad()
    (-model.elbo(times, values, mask, generator=_gen()).value).backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize(
    ("solver", "gradient", "tolerance"),
    [("rk4", "checkpoint", 1e-12), ("dopri5", "adjoint", 1e-6), ("reversible_heun", "reversible", 1e-10)],
)
def test_every_gradient_strategy_gives_the_backprop_gradient(solver, gradient, tolerance):
    times, values, mask = _series(batch=2, length=4)
    steps = {"rtol": 1e-10, "atol": 1e-12} if solver == "dopri5" else {"dt": 0.05}
    reference = _elbo_gradient(_model(solver=solver, **steps), times, values, mask)
    other = _elbo_gradient(_model(solver=solver, gradient=gradient, **steps), times, values, mask)
    assert reference.abs().max() > 1e-3
    assert torch.allclose(other, reference, atol=tolerance, rtol=tolerance)


def test_the_elbo_can_score_targets_other_than_the_inputs():
    model = _model()
    times, values, mask = _series(length=6)
    shown = mask.clone()
    shown[:, 3:] = False
    terms = model.elbo(
        times, values, shown, t_query=times, targets=values, target_mask=mask, generator=_gen()
    )
    out = model(times, values, shown, generator=_gen())
    var = 0.25
    point = -0.5 * ((values - out.prediction) ** 2 / var + math.log(2 * math.pi * var))
    assert terms.log_likelihood.item() == pytest.approx((point * mask).sum((1, 2)).mean().item(), rel=1e-12)


def test_bad_arguments_are_errors_that_name_the_fix():
    model = _model()
    times, values, mask = _series()
    with pytest.raises(ValueError, match="pass t0 <= it"):
        model.posterior(times, values, mask, t0=0.5)
    with pytest.raises(ValueError, match="earlier t0"):
        model.predict(times, values, mask, torch.tensor([-1.0, 1.0]))
    with pytest.raises(ValueError, match="strictly increasing"):
        model.predict(times, values, mask, torch.tensor([1.0, 0.5]))
    with pytest.raises(TypeError, match="ODERNN"):
        LatentODE(nn.GRUCell(4, 4), nn.Linear(2, 2), nn.Linear(2, 2), latent_dim=2)
    with pytest.raises(ValueError, match="latent_dim"):
        LatentODE(model.encoder, nn.Linear(2, 2), nn.Linear(2, 2), latent_dim=0)
    with pytest.raises(ValueError, match="obs_std"):
        LatentODE(model.encoder, nn.Linear(2, 2), nn.Linear(2, 2), latent_dim=2, obs_std=0.0)
    with pytest.raises(ValueError, match="t_query="):
        model.elbo(times, values, mask, targets=values)
    with pytest.raises(TypeError, match="unknown option"):
        LatentODE(model.encoder, nn.Linear(2, 2), nn.Linear(2, 2), latent_dim=2, stepsize=0.1)
