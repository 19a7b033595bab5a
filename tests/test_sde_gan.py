"""The SDE-GAN: an SDE generator, a CDE discriminator, weight clipping, LipSwish, exact gradients."""

from __future__ import annotations

import copy

import pytest
import torch

import torchnde as nde
from torchnde.models import SDEGAN, CDEDiscriminator, LipSwish, SDEGenerator, lipswish_mlp

F64 = torch.float64
TS = torch.linspace(0.0, 1.0, 5, dtype=F64)


def _generator(gradient: str = "backprop", **kw) -> SDEGenerator:
    torch.manual_seed(0)
    return SDEGenerator(
        1, hidden_size=3, noise_size=2, initial_noise_size=2, width=4, gradient=gradient, **kw
    ).double()


def _discriminator(gradient: str = "backprop", readout: str = "last", **kw) -> CDEDiscriminator:
    torch.manual_seed(1)
    return CDEDiscriminator(1, hidden_size=3, width=4, gradient=gradient, readout=readout, **kw).double()


def _fixed_noise(batch: int = 3) -> tuple[torch.Tensor, nde.BrownianInterval]:
    noise = torch.randn(batch, 2, dtype=F64, generator=torch.Generator().manual_seed(5))
    bm = nde.BrownianInterval(0.0, 1.0, (batch, 2), dtype=F64, seed=7)
    return noise, bm


def _generator_loss(gen: SDEGenerator) -> torch.Tensor:
    noise, bm = _fixed_noise()
    ys = gen(TS, initial_noise=noise, brownian=bm)
    return (ys.pow(2) * torch.linspace(0.5, 1.5, len(TS), dtype=F64).view(1, -1, 1)).sum()


def _grads(loss: torch.Tensor, module: torch.nn.Module) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(module.parameters())))


def test_generator_discriminator_and_gan_shapes():
    ts = torch.linspace(0, 2, 7)
    gen = SDEGenerator(2, hidden_size=5, noise_size=3, initial_noise_size=4, width=8)
    disc = CDEDiscriminator(2, hidden_size=5, width=8, depth=2)
    ys = gen(ts, batch=6)
    assert ys.shape == (6, 7, 2)
    assert disc(ys, ts).shape == (6,)
    gan = SDEGAN(2, hidden_size=4, width=8)
    assert gan.sample(ts, 3).shape == (3, 7, 2)
    assert gan.loss(torch.randn(4, 7, 2), ts).shape == ()


def test_generator_starts_from_its_initial_network_and_reads_out_linearly():
    gen = _generator()
    noise, bm = _fixed_noise()
    ys = gen(TS, initial_noise=noise, brownian=bm)
    expected = gen.readout(gen.initial(noise))
    assert torch.allclose(ys[:, 0], expected, rtol=0, atol=1e-14)


def test_the_same_noise_gives_the_same_samples_and_fresh_noise_other_samples():
    gen = _generator()
    noise, bm = _fixed_noise()
    with torch.no_grad():
        a = gen(TS, initial_noise=noise, brownian=bm)
        b = gen(TS, initial_noise=noise, brownian=bm)
        c = gen(TS, initial_noise=noise)
    assert torch.equal(a, b)
    assert not torch.allclose(a[:, 1:], c[:, 1:])


def test_a_constant_diffusion_generator_without_drift_moves_by_its_matrix_times_the_brownian_path():
    gen = _generator(diffusion="constant")
    with torch.no_grad():
        gen.drift.net[-2].weight.zero_()  # tanh(0) = 0: no drift
        gen.drift.net[-2].bias.zero_()
        noise, bm = _fixed_noise()
        ys = gen(TS, initial_noise=noise, brownian=bm)
        w = torch.stack([bm(0.0, float(t)) for t in TS[1:]], dim=1)  # [batch, time, noise]
        expected = ys[:, :1] + w @ (gen.readout.weight @ gen.diffusion.matrix).T
        x = torch.tensor([[0.3, -2.0, 5.0]], dtype=F64)
        assert torch.equal(gen.diffusion(TS[1], x), gen.diffusion(TS[3], 2 * x))  # independent of t, x
    assert torch.allclose(ys[:, 1:], expected, rtol=1e-12, atol=1e-13)


def test_lipswish_is_one_lipschitz_and_nearly_tight():
    x = torch.linspace(-20, 20, 40001, dtype=F64, requires_grad=True)
    (slope,) = torch.autograd.grad(LipSwish()(x).sum(), x)
    assert slope.abs().max() <= 1.0
    assert slope.abs().max() > 0.99  # the scale 0.909 is 1 / max slope of x sigmoid(x), rounded down
    a, b = torch.randn(1000, dtype=F64) * 5, torch.randn(1000, dtype=F64) * 5
    act = LipSwish()
    assert ((act(a) - act(b)).abs() <= (a - b).abs()).all()


def test_clipping_keeps_every_discriminator_weight_within_one_over_fan_in():
    disc = CDEDiscriminator(1, hidden_size=6, width=9, depth=2)
    with torch.no_grad():
        for p in disc.parameters():
            p.normal_(0, 3.0)
    biases = [m.bias.clone() for m in disc.modules() if isinstance(m, torch.nn.Linear)]
    disc.clip_weights_()
    linears = [m for m in disc.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 7  # initial and field: 3 each (depth 2), readout: 1
    for m, bias in zip(linears, biases):
        bound = 1.0 / m.in_features
        assert m.weight.abs().max().item() == pytest.approx(bound)  # the large weights sit on the bound
        assert torch.equal(m.bias, bias)  # biases are not clipped


def test_a_training_step_clips_the_weights_and_ascends_for_the_generator_descends_for_the_discriminator():
    ts = torch.linspace(0, 1, 4, dtype=F64)
    torch.manual_seed(0)
    gan = SDEGAN(1, hidden_size=3, width=4, gradient="backprop").double()
    real = torch.randn(8, 4, 1, dtype=F64)
    reference = copy.deepcopy(gan)
    torch.manual_seed(11)
    loss = reference.loss(real, ts)
    *g_grads, d_bias_grad = torch.autograd.grad(
        loss, [*reference.generator.parameters(), reference.discriminator.readout.bias]
    )
    lr = 0.1
    g_opt = torch.optim.SGD(gan.generator.parameters(), lr=lr)
    d_opt = torch.optim.SGD(gan.discriminator.parameters(), lr=lr)
    torch.manual_seed(11)
    value = gan.training_step(real, ts, g_opt, d_opt)
    assert value == pytest.approx(loss.item(), rel=1e-12)
    for new, old, grad in zip(gan.generator.parameters(), reference.generator.parameters(), g_grads):
        assert torch.allclose(new - old, lr * grad, rtol=1e-9, atol=1e-14)  # ascent
    bias_step = gan.discriminator.readout.bias - reference.discriminator.readout.bias
    assert torch.allclose(bias_step, -lr * d_bias_grad, rtol=1e-9, atol=1e-14)  # descent
    for m in gan.discriminator.modules():
        if isinstance(m, torch.nn.Linear):
            assert m.weight.abs().max() <= 1.0 / m.in_features


@pytest.mark.parametrize("gradient", ["backprop", "reversible"])
def test_generator_gradients_match_finite_differences_in_float64(gradient):
    gen = _generator(gradient)
    grads = dict(zip([n for n, _ in gen.named_parameters()], _grads(_generator_loss(gen), gen)))
    eps = 1e-6
    picked = ["initial.0.weight", "drift.net.0.weight", "drift.net.2.bias", "diffusion.net.0.bias",
              "diffusion.net.2.weight", "readout.weight"]  # fmt: skip
    params = dict(gen.named_parameters())
    for name in picked:
        p = params[name]
        flat = p.data.view(-1)
        for i in (0, flat.numel() - 1):
            with torch.no_grad():
                flat[i] += eps
                up = float(_generator_loss(gen))
                flat[i] -= 2 * eps
                down = float(_generator_loss(gen))
                flat[i] += eps
            fd = (up - down) / (2 * eps)
            assert grads[name].view(-1)[i].item() == pytest.approx(fd, rel=1e-6, abs=1e-9), name


def test_discriminator_gradients_reach_the_samples_and_match_finite_differences():
    disc = _discriminator()
    ys = torch.randn(2, len(TS), 1, dtype=F64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    (grad,) = torch.autograd.grad(disc(ys, TS).sum(), ys)
    eps = 1e-6
    with torch.no_grad():
        for b, k in ((0, 0), (1, 2), (1, 4)):
            bump = torch.zeros_like(ys)
            bump[b, k, 0] = eps
            fd = (disc(ys + bump, TS).sum() - disc(ys - bump, TS).sum()) / (2 * eps)
            assert grad[b, k, 0].item() == pytest.approx(fd.item(), rel=1e-6, abs=1e-10)


def test_reversible_heun_gradients_equal_backprop_for_the_generator():
    gen_bp, gen_rev = _generator("backprop"), _generator("reversible")
    for bp, rev in zip(_grads(_generator_loss(gen_bp), gen_bp), _grads(_generator_loss(gen_rev), gen_rev)):
        assert torch.allclose(rev, bp, rtol=1e-10, atol=1e-13)


def test_reversible_heun_gradients_equal_backprop_for_the_discriminator():
    ys = torch.randn(3, len(TS), 1, dtype=F64, generator=torch.Generator().manual_seed(3))
    out = {}
    for gradient in ("backprop", "reversible"):
        disc = _discriminator(gradient)
        x = ys.clone().requires_grad_(True)
        score = disc(x, TS).pow(2).sum()
        out[gradient] = torch.autograd.grad(score, [x, *disc.parameters()])
    for bp, rev in zip(out["backprop"], out["reversible"]):
        assert torch.allclose(rev, bp, rtol=1e-10, atol=1e-13)


def test_the_all_times_readout_averages_the_last_time_scores_of_the_paths_cut_at_each_sample_time():
    # Euler reads the path's slope at the start of each step only, so the path cut at t_k gives
    # the same hidden states up to t_k as the whole path
    ys = torch.randn(3, len(TS), 1, dtype=F64, generator=torch.Generator().manual_seed(4))
    every = _discriminator(readout="all", solver="euler")
    last = _discriminator(solver="euler")  # the same weights (the same seed)
    with torch.no_grad():
        x0 = torch.cat([TS[:1].expand(3, 1), ys[:, 0]], dim=-1)
        at_start = last.readout(last.initial(x0)).squeeze(-1)  # H at t_0: the initial network's state
        cut = [last(ys[:, : k + 1], TS[: k + 1]) for k in range(1, len(TS))]
        expected = torch.stack([at_start, *cut]).mean(0)
        assert torch.allclose(every(ys, TS), expected, rtol=1e-12, atol=1e-14)
        assert not torch.allclose(every(ys, TS), last(ys, TS))


def test_the_all_times_readout_has_reversible_gradients_equal_to_backprop():
    ys = torch.randn(3, len(TS), 1, dtype=F64, generator=torch.Generator().manual_seed(3))
    out = {}
    for gradient in ("backprop", "reversible"):
        disc = _discriminator(gradient, readout="all")
        x = ys.clone().requires_grad_(True)
        out[gradient] = torch.autograd.grad(disc(x, TS).pow(2).sum(), [x, *disc.parameters()])
    for bp, rev in zip(out["backprop"], out["reversible"]):
        assert bp.abs().max() > 0
        assert torch.allclose(rev, bp, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("gradient", ["backprop", "reversible"])
def test_the_papers_stepping_solves_the_lowered_ode_and_increments_solve_the_controlled_equation(gradient):
    # "derivative" (default, the paper's code): the ODE f(t, H) dX/dt, its slope carried over each
    # knot; "increments": the CDE term, f(t, H) times the path's increment over each step
    ys = torch.randn(3, len(TS), 1, dtype=F64, generator=torch.Generator().manual_seed(5))
    disc = _discriminator(gradient)
    x = torch.cat([TS.view(1, -1, 1).expand(3, -1, 1), ys], dim=-1)
    term = nde.CDETerm(disc.field, nde.LinearPath(x, TS))
    h0 = disc.initial(x[:, 0])
    solve = dict(solver="reversible_heun", dt=float(TS[1] - TS[0]), gradient=gradient)
    with torch.no_grad():
        lowered = nde.solve(term.lower(), h0, TS[[0, -1]], **solve).ys[-1]
        controlled = nde.solve(term, h0, TS[[0, -1]], **solve).ys[-1]
        assert torch.equal(disc(ys, TS), disc.readout(lowered).squeeze(-1))
        increments = _discriminator(gradient, stepping="increments")  # the same weights (the same seed)
        assert torch.equal(increments(ys, TS), increments.readout(controlled).squeeze(-1))
        assert (lowered - controlled).abs().max() > 1e-3  # the two schemes differ at the knots
    x = ys.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(increments(x, TS).sum(), x)
    assert grad.abs().max() > 0
    with pytest.raises(ValueError, match=r"stepping must be one of \('derivative', 'increments'\)"):
        CDEDiscriminator(1, stepping="controlled")


@pytest.mark.parametrize("gradient", ["backprop", "reversible"])
def test_constant_diffusion_gradients_match_finite_differences_in_float64(gradient):
    gen = _generator(gradient, diffusion="constant")
    (grad,) = torch.autograd.grad(_generator_loss(gen), gen.diffusion.matrix)
    eps = 1e-6
    with torch.no_grad():
        for i, j in ((0, 0), (2, 1)):
            gen.diffusion.matrix[i, j] += eps
            up = float(_generator_loss(gen))
            gen.diffusion.matrix[i, j] -= 2 * eps
            down = float(_generator_loss(gen))
            gen.diffusion.matrix[i, j] += eps
            assert grad[i, j].item() == pytest.approx((up - down) / (2 * eps), rel=1e-6, abs=1e-9)
        assert grad.abs().min() > 0


def test_the_stochastic_adjoint_option_approaches_backprop_on_a_fine_grid():
    bp_gen = _generator("backprop", dt=2**-8)
    bp = _grads(_generator_loss(bp_gen), bp_gen)
    adj_gen = _generator("adjoint", dt=2**-8)
    adj = _grads(_generator_loss(adj_gen), adj_gen)
    num = sum((a - b).pow(2).sum() for a, b in zip(adj, bp)).sqrt()
    den = sum(b.pow(2).sum() for b in bp).sqrt()
    assert num / den < 1e-2


def test_bad_inputs_are_errors_that_name_the_fix():
    gen = SDEGenerator(1, hidden_size=3)
    disc = CDEDiscriminator(1, hidden_size=3)
    ts = torch.linspace(0, 1, 4)
    with pytest.raises(ValueError, match="batch"):
        gen(ts)
    with pytest.raises(ValueError, match="initial_noise"):
        gen(ts, initial_noise=torch.randn(2, 7))
    with pytest.raises(ValueError, match=r"\[batch, 4, 1\]"):
        disc(torch.randn(2, 5, 1), ts)
    with pytest.raises(ValueError, match="ts"):
        disc(torch.randn(2, 4, 1), torch.tensor([0.0]))
    with pytest.raises(TypeError, match="unknown option"):
        SDEGenerator(1, tolerance=1e-3)
    with pytest.raises(ValueError, match="hidden_size"):
        CDEDiscriminator(1, hidden_size=0)
    with pytest.raises(ValueError, match=r"diffusion must be one of \('neural', 'constant'\)"):
        SDEGAN(1, diffusion="additive")
    with pytest.raises(ValueError, match=r"readout must be one of \('last', 'all'\)"):
        SDEGAN(1, discriminator_readout="mean")
    with pytest.raises(ValueError, match="width"):
        lipswish_mlp(2, 2, width=0)
