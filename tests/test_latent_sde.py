"""LatentSDE: shapes, the ELBO's terms against their closed forms (the KL path term with constant
drifts and diffusion, KL(q(z0) || p(z0)), the likelihoods), the context encoder's direction, the
per-coordinate diffusion, gradients against finite differences (float64, fixed path), the
stochastic adjoint and reversible Heun against backprop, and the errors at its boundary."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import torchnde as nde
from torchnde.models import DiagonalDiffusion, LatentSDE

from .helpers import central_difference

D = torch.float64


def _model(**options) -> LatentSDE:
    torch.manual_seed(0)
    return LatentSDE(3, 2, 4, 8, **options).double()


def _data(t: int = 5, b: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(t, b, 3, generator=g, dtype=D), torch.linspace(0, 1, t, dtype=D)


def _bm(b: int = 3, seed: int = 0) -> nde.BrownianInterval:
    return nde.BrownianInterval(0.0, 1.0, (b, 2), dtype=D, seed=seed)


def _constant(layer: nn.Linear, value: torch.Tensor) -> None:
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(value)


def test_elbo_terms_and_samples_have_the_documented_shapes():
    model = _model()
    xs, ts = _data()
    terms = model.elbo(xs, ts)
    assert all(v.shape == () for v in terms)
    assert model.sample_prior(ts, 7).shape == (5, 7, 3)
    assert model.sample_prior(ts, 7, latents=True).shape == (5, 7, 2)
    assert model.sample_posterior(xs, ts, n_samples=4).shape == (5, 4, 3, 3)
    post = model.posterior(xs, ts)
    assert post.zs.shape == (5, 3, 2) and post.kl_path.shape == (3,) and post.qz0_std.shape == (3, 2)


def test_the_elbo_is_the_likelihood_less_both_kl_terms_and_the_loss_anneals_them():
    model = _model()
    xs, ts = _data()
    torch.manual_seed(3)
    with torch.no_grad():
        half = model.elbo(xs, ts, kl_weight=0.5)
    assert float(half.elbo) == pytest.approx(
        float(half.log_likelihood - half.kl_z0 - half.kl_path), rel=1e-12
    )
    want = -(half.log_likelihood - 0.5 * (half.kl_z0 + half.kl_path))
    assert float(half.loss) == pytest.approx(float(want), rel=1e-12)
    assert float(half.kl_z0) > 0 and float(half.kl_path) > 0


def test_the_kl_path_term_equals_its_closed_form_for_constant_drifts_and_diffusion():
    # u = (a - b) / s is constant, so KL over [0, 1] is 0.5 * sum(u**2) exactly, for any path
    model = _model()
    a, b, s = torch.tensor([0.4, -0.3], dtype=D), torch.tensor([-0.1, 0.2], dtype=D), 0.6
    _constant(model.posterior_drift[-1], a)
    _constant(model.prior_drift[-1], b)
    with torch.no_grad():
        model.diffusion.w2.zero_()
        model.diffusion.b2.fill_(math.log(s / (1 - s)))  # sigmoid(b2) = s
    xs, ts = _data()
    kl = model.posterior(xs, ts, brownian=_bm()).kl_path
    want = 0.5 * float((((a - b) / s) ** 2).sum())
    assert torch.allclose(kl, torch.full_like(kl, want), rtol=1e-12, atol=0)


def test_kl_of_the_initial_state_equals_the_gaussian_closed_form():
    model = _model()
    with torch.no_grad():
        model.pz0_mean.copy_(torch.tensor([0.5, -1.0]))
        model.pz0_logstd.copy_(torch.tensor([0.2, -0.3]))
    mean = torch.tensor([[0.1, 0.3]], dtype=D)
    std = torch.tensor([[0.7, 1.4]], dtype=D)
    q = torch.distributions.Normal(mean, std)
    p = torch.distributions.Normal(model.pz0_mean, model.pz0_logstd.exp())
    want = torch.distributions.kl_divergence(q, p).sum(-1)
    assert torch.allclose(model.kl_z0(mean, std), want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("likelihood", ["gaussian", "laplace"])
def test_the_log_likelihood_is_the_distributions_log_density_summed_over_time_and_data(likelihood):
    model = _model(likelihood=likelihood, obs_noise=0.3)
    xs, _ = _data()
    mean = xs + 0.1 * torch.arange(3, dtype=D)
    dist = torch.distributions.Normal if likelihood == "gaussian" else torch.distributions.Laplace
    assert float(model.noise_scale) == pytest.approx(0.3, rel=1e-7)
    want = dist(mean, model.noise_scale.detach()).log_prob(xs).sum(dim=(0, 2))
    assert torch.allclose(model.log_likelihood(xs, mean), want, rtol=1e-12, atol=0)


def test_the_context_at_an_index_sees_only_that_observation_and_later_ones():
    model = _model()
    xs, _ = _data()
    changed = xs.clone()
    changed[0] += 1.0  # the first observation only
    ctx, ctx2 = model.encode(xs), model.encode(changed)
    assert torch.equal(ctx[1:], ctx2[1:]) and not torch.allclose(ctx[0], ctx2[0])


def test_the_diffusion_is_in_zero_one_and_each_coordinate_sees_only_its_own():
    torch.manual_seed(0)
    g = DiagonalDiffusion(3, 5).double()
    z = torch.randn(4, 3, dtype=D)
    out = g(z)
    assert out.shape == (4, 3) and bool(((out > 0) & (out < 1)).all())
    jac = torch.autograd.functional.jacobian(lambda v: g(v), z[0])
    assert torch.count_nonzero(jac - torch.diag(torch.diagonal(jac))) == 0
    assert bool((torch.diagonal(jac) != 0).all())


def test_posterior_gradients_match_finite_differences_on_a_fixed_path():
    model = _model(solver="euler", dt=0.125)
    xs, ts = _data()
    bm, eps = _bm(), torch.full((3, 2), 0.3, dtype=D)

    def loss():
        post = model.posterior(xs, ts, brownian=bm, noise=eps)
        return post.xs.pow(2).sum() + post.kl_path.sum()

    loss().backward()
    for param, index in (
        (model.gru.weight_hh_l0, (2, 1)),  # the encoder, through the context and q(z0)
        (model.posterior_drift[0].weight, (3, 0)),
        (model.prior_drift[2].bias, (1,)),
        (model.diffusion.w1, (1, 2)),
    ):
        fd = central_difference(loss, param, index)
        assert param.grad[index].item() == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_reversible_heun_and_the_adjoint_agree_with_backprop_including_the_encoder():
    xs, ts = _data(5, 3)
    eps = torch.full((3, 2), -0.2, dtype=D)
    grads = {}
    for gradient in ("backprop", "reversible", "adjoint"):
        model = _model(calculus="stratonovich", solver="reversible_heun", dt=2**-5, gradient=gradient)
        post = model.posterior(xs, ts, brownian=_bm(seed=5), noise=eps)
        loss = post.xs.pow(2).sum() + post.kl_path.sum()
        params = [p for p in model.parameters() if p.requires_grad]
        grads[gradient] = torch.autograd.grad(loss, params, allow_unused=True)
    names = [n for n, p in _model().named_parameters() if p.requires_grad]
    for strategy, tol in (("reversible", 1e-10), ("adjoint", 1e-3)):
        for name, got, want in zip(names, grads[strategy], grads["backprop"]):
            if want is None:  # p(z0) is not in the posterior path's loss
                assert got is None, name
                continue
            assert float((got - want).norm() / want.norm()) < tol, (strategy, name)


def test_tolerances_without_dt_take_adaptive_steps_and_the_default_is_dt_1e_2():
    assert LatentSDE(3).dt == 1e-2
    model = _model(calculus="stratonovich", solver="heun", rtol=1e-2, atol=1e-2)
    assert model.dt is None
    xs, ts = _data()
    model.posterior(xs, ts, brownian=_bm())
    assert model.stats.steps != 4 * 4 * 25  # not the fixed grid of dt = 1e-2
    assert model.stats.accepted > 0


def test_bad_observations_and_options_are_errors_that_name_the_fix():
    model = _model()
    xs, ts = _data()
    with pytest.raises(ValueError, match=r"\[T, batch, 3\]"):
        model.elbo(xs[..., :2], ts)
    with pytest.raises(ValueError, match="one time per observation"):
        model.elbo(xs, ts[:-1])
    with pytest.raises(ValueError, match="unknown likelihood 'normal'"):
        LatentSDE(3, likelihood="normal")
    with pytest.raises(ValueError, match="latent_size must be a positive integer"):
        LatentSDE(3, latent_size=0)
    with pytest.raises(ValueError, match="unknown calculus"):
        LatentSDE(3, calculus="strat")
    with pytest.raises(TypeError, match="unknown option"):
        LatentSDE(3, step=0.1)
