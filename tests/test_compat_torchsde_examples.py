"""torchsde's two example scripts, ``examples/latent_sde_lorenz.py`` and ``examples/sde_gan.py``,
written again from what they do (their code is not installed with the wheel), at a few
iterations and small sizes: each script takes the ``torchsde`` module as its one argument, which
is the change of import. They run on torchsde 0.2.6 itself (so they are valid torchsde scripts)
and on ``torchnde.compat.torchsde``, ``logqp=True`` and ``sdeint_adjoint`` included."""

from __future__ import annotations

import math

import pytest
import torch
import torchsde as oracle

import torchnde.compat.torchsde as compat

torchcde = pytest.importorskip("torchcde")

MODULES = {"torchsde": oracle, "compat": compat}


# --- latent SDE on stochastic Lorenz ---------------------------------------------------------


class StochasticLorenz(torch.nn.Module):
    """The stochastic Lorenz attractor (Itô, diagonal multiplicative noise)."""

    noise_type, sde_type = "diagonal", "ito"

    def f(self, t, y):
        x1, x2, x3 = y.unbind(-1)
        return torch.stack([10 * (x2 - x1), x1 * (28 - x3) - x2, x1 * x2 - 8 / 3 * x3], dim=-1)

    def g(self, t, y):
        return 0.15 * y


class Encoder(torch.nn.Module):
    def __init__(self, data, hidden, context):
        super().__init__()
        self.gru = torch.nn.GRU(input_size=data, hidden_size=hidden)
        self.lin = torch.nn.Linear(hidden, context)

    def forward(self, x):
        return self.lin(self.gru(x)[0])


class LatentSDE(torch.nn.Module):
    """Posterior drift ``f`` (reads the encoder's context at ``t``), prior drift ``h``, diagonal
    diffusion ``g`` from one small network per latent dimension."""

    sde_type, noise_type = "ito", "diagonal"

    def __init__(self, data=3, latent=4, context=8, hidden=16):
        super().__init__()
        self.encoder = Encoder(data, hidden, context)
        self.qz0_net = torch.nn.Linear(context, 2 * latent)
        self.f_net = torch.nn.Sequential(torch.nn.Linear(latent + context, hidden), torch.nn.Softplus(),
                                         torch.nn.Linear(hidden, latent))  # fmt: skip
        self.h_net = torch.nn.Sequential(torch.nn.Linear(latent, hidden), torch.nn.Softplus(),
                                         torch.nn.Linear(hidden, latent))  # fmt: skip
        self.g_nets = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(1, hidden), torch.nn.Softplus(), torch.nn.Linear(hidden, 1),
                                torch.nn.Sigmoid()) for _ in range(latent)
        )  # fmt: skip
        self.projector = torch.nn.Linear(latent, data)
        self.pz0_mean = torch.nn.Parameter(torch.zeros(1, latent))
        self.pz0_logstd = torch.nn.Parameter(torch.zeros(1, latent))
        self._ctx = None

    def f(self, t, y):
        ts, ctx = self._ctx
        i = min(int(torch.searchsorted(ts, t, right=True)), len(ts) - 1)
        return self.f_net(torch.cat((y, ctx[i]), dim=1))

    def h(self, t, y):
        return self.h_net(y)

    def g(self, t, y):
        return torch.cat([net(u) for net, u in zip(self.g_nets, torch.split(y, 1, dim=1))], dim=1)

    def forward(self, torchsde, xs, ts, noise_std, adjoint):
        ctx = self.encoder(torch.flip(xs, dims=(0,)))
        self._ctx = (ts, torch.flip(ctx, dims=(0,)))
        qz0_mean, qz0_logstd = self.qz0_net(ctx[0]).chunk(2, dim=1)
        z0 = qz0_mean + qz0_logstd.exp() * torch.randn_like(qz0_mean)
        if adjoint:
            params = (*self.f_net.parameters(), *self.g_nets.parameters(), *self.h_net.parameters())
            zs, log_ratio = torchsde.sdeint_adjoint(self, z0, ts, adjoint_params=params, dt=2**-5, logqp=True,
                                                    method="euler", adjoint_method="euler")  # fmt: skip
        else:
            zs, log_ratio = torchsde.sdeint(self, z0, ts, dt=2**-5, logqp=True, method="euler")
        xs_dist = torch.distributions.Normal(loc=self.projector(zs), scale=noise_std)
        log_pxs = xs_dist.log_prob(xs).sum(dim=(0, 2)).mean(dim=0)
        qz0 = torch.distributions.Normal(loc=qz0_mean, scale=qz0_logstd.exp())
        pz0 = torch.distributions.Normal(loc=self.pz0_mean, scale=self.pz0_logstd.exp())
        logqp0 = torch.distributions.kl_divergence(qz0, pz0).sum(dim=1).mean(dim=0)
        return log_pxs, logqp0 + log_ratio.sum(dim=0).mean(dim=0)

    @torch.no_grad()
    def sample(self, torchsde, batch, ts, bm=None):
        z0 = self.pz0_mean + self.pz0_logstd.exp() * torch.randn(batch, self.pz0_mean.size(1))
        zs = torchsde.sdeint(self, z0, ts, names={"drift": "h"}, dt=2**-6, bm=bm)
        return self.projector(zs)


def lorenz_data(torchsde, batch=16, t_size=12):
    """Normalised noisy samples of the stochastic Lorenz system at ``t_size`` times on [0, 1]."""
    ts = torch.linspace(0, 1, t_size)
    x0 = torch.randn(batch, 3)
    xs = torchsde.sdeint(StochasticLorenz(), x0, ts, dt=2**-7)
    xs = (xs - xs.mean(dim=(0, 1))) / xs.std(dim=(0, 1))
    return ts, xs + 0.01 * torch.randn_like(xs)


def latent_sde_lorenz(torchsde, iterations=2, adjoint=False):
    """The example's main loop: Adam, KL annealing, ``-log p(x) + kl * KL``; returns the losses."""
    torch.manual_seed(0)
    ts, xs = lorenz_data(torchsde)
    model = LatentSDE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for it in range(iterations):
        opt.zero_grad()
        log_pxs, log_ratio = model(torchsde, xs, ts, noise_std=0.01, adjoint=adjoint)
        loss = -log_pxs + log_ratio * min(1.0, (it + 1) / iterations)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", MODULES)
def test_latent_sde_lorenz_data_and_prior_samples_run(name):
    torchsde = MODULES[name]
    torch.manual_seed(0)
    ts, xs = lorenz_data(torchsde)
    assert xs.shape == (12, 16, 3) and torch.isfinite(xs).all()
    model = LatentSDE()
    bm = torchsde.BrownianInterval(t0=ts[0], t1=ts[-1], size=(5, 4), levy_area_approximation="space-time")
    samples = model.sample(torchsde, 5, ts, bm=bm)  # srk (Itô diagonal default) on the prior drift h
    assert samples.shape == (12, 5, 3) and torch.isfinite(samples).all()


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("adjoint", [False, True], ids=["sdeint", "sdeint_adjoint"])
def test_latent_sde_lorenz_trains(name, adjoint):
    losses = latent_sde_lorenz(MODULES[name], adjoint=adjoint)
    assert all(math.isfinite(v) for v in losses)


# --- SDE-GAN: a neural SDE generator, a neural CDE discriminator ------------------------------


class LipSwish(torch.nn.Module):
    def forward(self, x):
        return 0.909 * torch.nn.functional.silu(x)


def mlp(inp, out, width, tanh):
    layers = [torch.nn.Linear(inp, width), LipSwish(), torch.nn.Linear(width, out)]
    return torch.nn.Sequential(*layers, *([torch.nn.Tanh()] if tanh else []))


class GeneratorFunc(torch.nn.Module):
    """Stratonovich, general noise, through ``f_and_g`` only (as the example)."""

    sde_type, noise_type = "stratonovich", "general"

    def __init__(self, noise, hidden, width):
        super().__init__()
        self.noise, self.hidden = noise, hidden
        self.drift = mlp(1 + hidden, hidden, width, tanh=True)
        self.diffusion = mlp(1 + hidden, hidden * noise, width, tanh=True)

    def f_and_g(self, t, x):
        tx = torch.cat([t.expand(x.size(0), 1), x], dim=1)
        return self.drift(tx), self.diffusion(tx).view(x.size(0), self.hidden, self.noise)


class Generator(torch.nn.Module):
    def __init__(self, data=1, initial_noise=3, noise=2, hidden=8, width=16):
        super().__init__()
        self.initial_noise = initial_noise
        self.initial = mlp(initial_noise, hidden, width, tanh=False)
        self.func = GeneratorFunc(noise, hidden, width)
        self.readout = torch.nn.Linear(hidden, data)

    def forward(self, torchsde, ts, batch, adjoint):
        x0 = self.initial(torch.randn(batch, self.initial_noise))
        if adjoint:
            xs = torchsde.sdeint_adjoint(self.func, x0, ts, method="reversible_heun", dt=1.0,
                                         adjoint_method="adjoint_reversible_heun")  # fmt: skip
        else:
            xs = torchsde.sdeint(self.func, x0, ts, method="reversible_heun", dt=1.0)
        ys = self.readout(xs.transpose(0, 1))
        ts = ts.unsqueeze(0).unsqueeze(-1).expand(batch, ts.size(0), 1)
        return torchcde.linear_interpolation_coeffs(torch.cat([ts, ys], dim=2))


class DiscriminatorFunc(torch.nn.Module):
    def __init__(self, data, hidden, width):
        super().__init__()
        self.data, self.hidden = data, hidden
        self.module = mlp(1 + hidden, hidden * (1 + data), width, tanh=True)

    def forward(self, t, h):
        th = torch.cat([t.expand(h.size(0), 1), h], dim=1)
        return self.module(th).view(h.size(0), self.hidden, 1 + self.data)


class Discriminator(torch.nn.Module):
    """A neural CDE over the path ``(t, y(t))``, by torchcde (its own torchsde backend)."""

    def __init__(self, data=1, hidden=8, width=16):
        super().__init__()
        self.initial = mlp(1 + data, hidden, width, tanh=False)
        self.func = DiscriminatorFunc(data, hidden, width)
        self.readout = torch.nn.Linear(hidden, 1)

    def forward(self, coeffs):
        path = torchcde.LinearInterpolation(coeffs)
        h0 = self.initial(path.evaluate(path.interval[0]))
        hs = torchcde.cdeint(path, self.func, h0, path.interval, method="reversible_heun", backend="torchsde",
                             dt=1.0, adjoint_method="adjoint_reversible_heun",
                             adjoint_params=(coeffs, *self.func.parameters()))  # fmt: skip
        return self.readout(hs[:, -1]).mean()


class OrnsteinUhlenbeck(torch.nn.Module):
    sde_type, noise_type = "ito", "diagonal"

    def f(self, t, y):
        return 0.02 * t - 0.1 * y

    def g(self, t, y):
        return 0.4 * torch.ones_like(y)


def sde_gan(torchsde, iterations=2, adjoint=False, batch=8, t_size=8):
    """The example's training: the Wasserstein loss, generator gradients negated, Adadelta,
    discriminator weights clipped, a stochastic weight average of the generator; returns the
    losses and the averaged generator's samples."""
    torch.manual_seed(0)
    ts = torch.linspace(0, t_size - 1, t_size)
    y0 = torch.rand(batch, 1) * 2 - 1
    ys = torchsde.sdeint(OrnsteinUhlenbeck(), y0, ts, dt=1e-1)  # the data: OU paths (srk)
    ys = (ys - ys.mean()) / ys.std()
    coeffs = torchcde.linear_interpolation_coeffs(
        torch.cat([ts.unsqueeze(0).unsqueeze(-1).expand(batch, t_size, 1), ys.transpose(0, 1)], dim=2)
    )
    generator, discriminator = Generator(), Discriminator()
    averaged = torch.optim.swa_utils.AveragedModel(generator)
    g_opt = torch.optim.Adadelta(generator.parameters(), lr=2e-4, weight_decay=0.01)
    d_opt = torch.optim.Adadelta(discriminator.parameters(), lr=1e-3, weight_decay=0.01)
    losses = []
    for _ in range(iterations):
        generated = generator(torchsde, ts, batch, adjoint)
        loss = discriminator(generated) - discriminator(coeffs)
        loss.backward()
        for p in generator.parameters():
            p.grad *= -1
        g_opt.step()
        d_opt.step()
        g_opt.zero_grad()
        d_opt.zero_grad()
        with torch.no_grad():
            for module in discriminator.modules():
                if isinstance(module, torch.nn.Linear):
                    module.weight.clamp_(-1 / module.weight.size(1), 1 / module.weight.size(1))
        averaged.update_parameters(generator)
        losses.append(loss.item())
    with torch.no_grad():
        samples = averaged.module(torchsde, ts, batch, adjoint=False)
    return losses, samples


@pytest.mark.parametrize("name", MODULES)
def test_sde_gan_trains_through_sdeint(name):
    losses, samples = sde_gan(MODULES[name])
    assert all(math.isfinite(v) for v in losses) and torch.isfinite(samples).all()


@pytest.mark.parametrize("name", MODULES)
def test_sde_gan_trains_through_sdeint_adjoint(name):
    losses, _ = sde_gan(MODULES[name], adjoint=True)
    assert all(math.isfinite(v) for v in losses)
