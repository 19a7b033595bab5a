r"""Latent SDEs (Li et al. 2020): a variational autoencoder whose latent path is an SDE.

X. Li, T.-K. L. Wong, R. T. Q. Chen, D. Duvenaud, *Scalable Gradients for Stochastic
Differential Equations*, AISTATS 2020, arXiv 2001.01328, Sec. 5 and 7.2.

The generative model (the prior) is :math:`z_0 \sim p(z_0) = \mathcal N(\mu_p, \sigma_p^2)`,
:math:`dz = h_\theta(t, z)\,dt + \sigma(t, z)\,dW`, observations
:math:`x_{t_i} \sim p(x \mid W z_{t_i} + c)`. The approximate posterior, given the
observations, is :math:`z_0 \sim q(z_0 \mid x) = \mathcal N(\mu_q, \sigma_q^2)` and
:math:`dz = h_\phi(t, z, c_t)\,dt + \sigma(t, z)\,dW` with the *same* diffusion, where the
context :math:`c_t` comes from a GRU run backwards over the observations (at time :math:`t` it
has seen the observations from the next one on). Sharing the diffusion keeps the two path
measures mutually absolutely continuous, and Girsanov's theorem gives their KL divergence as
the path integral

.. math:: \mathrm{KL}(q \,\|\, p) = \mathbb E_q \int_{t_0}^{t_1} \tfrac12 \lVert u \rVert^2\,dt,
          \qquad u = \frac{h_\phi - h_\theta}{\sigma},

which the solve accumulates alongside the state (``SDETerm(prior_drift=...)``). The ELBO is

.. math:: \mathcal L = \mathbb E_q\Bigl[\sum_i \log p(x_{t_i} \mid z_{t_i})\Bigr]
          - \mathrm{KL}\bigl(q(z_0) \,\|\, p(z_0)\bigr) - \mathrm{KL}(q \,\|\, p)_{\text{path}}.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from ..brownian import AbstractBrownian
from ..terms import SDETerm
from ._base import SolveOptions, time_grid
from .neural_sde import check_steps, with_params

__all__ = ["LatentSDEELBO", "DiagonalDiffusion", "LatentSDE", "Posterior"]

_LIKELIHOODS = ("gaussian", "laplace")


class LatentSDEELBO(NamedTuple):
    """The terms of a latent SDE's evidence lower bound, each a mean over the batch.

    ``loss`` is ``-(log_likelihood - kl_weight * (kl_z0 + kl_path))``, what training minimises;
    ``elbo`` is the bound itself (``kl_weight = 1``).
    """

    loss: torch.Tensor
    elbo: torch.Tensor
    log_likelihood: torch.Tensor
    kl_z0: torch.Tensor
    kl_path: torch.Tensor


class Posterior(NamedTuple):
    """A posterior sample: latent path ``zs [T, B, latent]``, its projection ``xs [T, B, data]``
    (the likelihood's mean), the KL path term per path ``kl_path [B]`` and ``q(z0)``'s mean and
    standard deviation ``[B, latent]``."""

    zs: torch.Tensor
    xs: torch.Tensor
    kl_path: torch.Tensor
    qz0_mean: torch.Tensor
    qz0_std: torch.Tensor


class DiagonalDiffusion(nn.Module):
    r"""A diagonal diffusion :math:`\sigma_i(z) = \mathrm{sigmoid}(\mathrm{MLP}_i(z_i))`: one small
    network per latent coordinate, each seeing only its own coordinate (batched as one tensor
    product).

    That :math:`\sigma_i` depends on :math:`z_i` alone is what the stochastic adjoint's Itô to
    Stratonovich conversion and Milstein's method assume for diagonal noise; the sigmoid keeps the
    noise in ``(0, 1)``, away from zero, so the KL path term stays finite.

    ```python
    import torch
    from torchnde.models import DiagonalDiffusion
    g = DiagonalDiffusion(4, hidden=16)
    g(torch.zeros(8, 4)).shape   # torch.Size([8, 4])
    ```
    """

    def __init__(self, size: int, hidden: int = 64) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(hidden)
        self.w1 = nn.Parameter(torch.empty(size, hidden).uniform_(-1.0, 1.0))
        self.b1 = nn.Parameter(torch.empty(size, hidden).uniform_(-1.0, 1.0))
        self.w2 = nn.Parameter(torch.empty(size, hidden).uniform_(-bound, bound))
        self.b2 = nn.Parameter(torch.empty(size).uniform_(-bound, bound))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """:math:`\\sigma(z)`, shaped like ``z`` (``[..., size]``)."""
        hidden = F.softplus(z.unsqueeze(-1) * self.w1 + self.b1)
        return torch.sigmoid((hidden * self.w2).sum(-1) + self.b2)


def _mlp(i: int, hidden: int, o: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(i, hidden), nn.Softplus(), nn.Linear(hidden, hidden), nn.Softplus(), nn.Linear(hidden, o)
    )


class LatentSDE(SolveOptions):
    r"""A latent SDE (Li et al., AISTATS 2020): posterior drift :math:`h_\phi(t, z, c_t)`, prior
    drift :math:`h_\theta(t, z)`, a shared diagonal diffusion :math:`\sigma(z)` and a linear
    read-out to the data (module docstring for the model and its ELBO).

    **Arguments:**

    - ``data_size``, ``latent_size``: dimensions of the observations and of the latent SDE.
    - ``context_size``: size of the context :math:`c_t` the encoder (a GRU of ``hidden_size``
      run backwards over the observations, then a linear layer) gives the posterior drift.
    - ``hidden_size``: width of the drift networks (two hidden layers, softplus) and of the
      per-coordinate diffusion networks (:class:`DiagonalDiffusion`).
    - ``likelihood``: ``"gaussian"`` (default) or ``"laplace"``, with scale ``obs_noise``
      (learned when ``learn_noise=True``, starting from ``obs_noise``). Keep the scale at or
      above the data's :math:`\sigma\sqrt{dt}`: the posterior cannot pin a path to an observation
      more finely than that, and below it the ELBO shrinks the diffusion, narrowing the prior (a
      learned scale tends to go there; ``docs/models.md``, "Choosing the likelihood scale").
    - ``calculus``: ``"ito"`` (default) or ``"stratonovich"`` (needed by ``reversible_heun``).
    - ``solver`` (default ``"euler"``), ``dt`` (default ``1e-2`` unless ``rtol``/``atol`` ask for
      adaptive steps),
      ``gradient``: ``"backprop"``, ``"checkpoint"``, ``"adjoint"`` (the stochastic adjoint) or
      ``"reversible"`` (with ``solver="reversible_heun"``); the adjoint and reversible strategies
      are given the parameters and the context. Other ``solve`` options pass through; an
      unknown one is an error.

    Observations are time first, ``xs [T, B, data_size]`` at times ``ts [T]`` (shared by the
    batch). ``self.elbo(xs, ts)`` (also ``self(xs, ts)``) returns the :class:`LatentSDEELBO` terms,
    ``sample_posterior`` and ``sample_prior`` sample paths.

    ```python
    import torch, torchnde as nde
    model = nde.models.LatentSDE(data_size=3, latent_size=4, context_size=16, hidden_size=32)
    xs, ts = torch.randn(20, 8, 3), torch.linspace(0, 1, 20)
    terms = model.elbo(xs, ts, kl_weight=0.5)
    terms.loss.backward()                                    # train on terms.loss
    model.sample_prior(ts, 5).shape                          # torch.Size([20, 5, 3])
    model.sample_posterior(xs, ts, n_samples=2).shape        # torch.Size([20, 2, 8, 3])
    ```
    """

    def __init__(
        self,
        data_size: int,
        latent_size: int = 4,
        context_size: int = 64,
        hidden_size: int = 64,
        *,
        likelihood: str = "gaussian",
        obs_noise: float = 0.01,
        learn_noise: bool = False,
        calculus: str = "ito",
        solver: Any = "euler",
        dt: float | None = None,
        **options: Any,
    ) -> None:
        adaptive = any(options.get(k) is not None for k in ("rtol", "atol", "controller"))
        if dt is None and not adaptive:
            dt = 1e-2
        super().__init__(solver=solver, dt=dt, **options)
        check_steps(type(self).__name__, self.dt, self.rtol, self.atol, self.solve_options)
        for name, value in (
            ("data_size", data_size),
            ("latent_size", latent_size),
            ("context_size", context_size),
            ("hidden_size", hidden_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if likelihood not in _LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; valid: {', '.join(_LIKELIHOODS)}")
        if not obs_noise > 0:
            raise ValueError(f"obs_noise must be a positive scale (0.01, say), got {obs_noise!r}")
        SDETerm(lambda t, z: z, lambda t, z: z, "diagonal", calculus)  # names the valid calculi
        self.data_size, self.latent_size = data_size, latent_size
        self.likelihood, self.calculus = likelihood, calculus
        self.gru = nn.GRU(data_size, hidden_size)
        self.context = nn.Linear(hidden_size, context_size)
        self.qz0 = nn.Linear(context_size, 2 * latent_size)
        self.posterior_drift = _mlp(latent_size + context_size, hidden_size, latent_size)
        self.prior_drift = _mlp(latent_size, hidden_size, latent_size)
        self.diffusion = DiagonalDiffusion(latent_size, hidden_size)
        self.projector = nn.Linear(latent_size, data_size)
        self.pz0_mean = nn.Parameter(torch.zeros(latent_size))
        self.pz0_logstd = nn.Parameter(torch.zeros(latent_size))
        self.log_noise = nn.Parameter(torch.tensor(math.log(obs_noise)), requires_grad=bool(learn_noise))

    @property
    def noise_scale(self) -> torch.Tensor:
        """The likelihood's scale (standard deviation for Gaussian, :math:`b` for Laplace)."""
        return self.log_noise.exp()

    def _check(self, xs: torch.Tensor, ts: Any) -> torch.Tensor:
        if xs.ndim != 3 or xs.shape[-1] != self.data_size:
            raise ValueError(
                f"xs must be time first, [T, batch, {self.data_size}], got shape {tuple(xs.shape)}"
            )
        t = time_grid(ts, xs)
        if t.ndim != 1 or t.shape[0] != xs.shape[0]:
            raise ValueError(
                f"ts must be 1-D with one time per observation ({xs.shape[0]}), got {tuple(t.shape)}"
            )
        return t

    def encode(self, xs: torch.Tensor) -> torch.Tensor:
        """The context ``[T, B, context_size]``: a GRU over the observations from last to first,
        so the context at index ``i`` summarises observations ``i, ..., T - 1``."""
        out, _ = self.gru(xs.flip(0))
        return self.context(out).flip(0)

    def _term(self, ts: torch.Tensor, ctx: torch.Tensor, brownian: AbstractBrownian | None) -> SDETerm:
        last = ts.shape[0] - 1

        def posterior(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            # on [ts[i-1], ts[i]) the context of observation i, the next one (torchsde's example)
            i = torch.searchsorted(ts, t.reshape(1).to(ts.dtype), right=True).clamp(max=last)
            c = ctx.index_select(0, i)[0]
            return self.posterior_drift(torch.cat([z, c], -1))

        return SDETerm(posterior, self.sigma, "diagonal", self.calculus, brownian, self.h)

    def _sde_parameters(self) -> list[nn.Parameter]:
        """The parameters the SDE's fields use. The adjoint and reversible strategies get these and
        the context, not the encoder's (upstream of the context, they get gradients through it)."""
        return [
            *self.posterior_drift.parameters(),
            *self.prior_drift.parameters(),
            *self.diffusion.parameters(),
        ]

    def h(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        r"""The prior drift :math:`h_\theta(t, z)` (autonomous)."""
        return self.prior_drift(z)

    def sigma(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        r"""The shared diffusion :math:`\sigma(t, z)` (autonomous, diagonal)."""
        return self.diffusion(z)

    def posterior(
        self,
        xs: torch.Tensor,
        ts: Any,
        *,
        brownian: AbstractBrownian | None = None,
        noise: torch.Tensor | None = None,
    ) -> Posterior:
        """One posterior path per observed path: ``z0 ~ q(z0 | x)`` (reparameterised; ``noise``
        fixes its standard normal draw ``[B, latent]``), then the posterior SDE on ``brownian``
        (``None``: a fresh path from torch's generator), with the KL path term."""
        t = self._check(xs, ts)
        ctx = self.encode(xs)
        mean, logstd = self.qz0(ctx[0]).chunk(2, dim=-1)
        std = logstd.exp()
        eps = torch.randn_like(mean) if noise is None else noise
        z0 = mean + std * eps
        gradient = with_params(self.gradient, (ctx, *self._sde_parameters()))
        sol = self._solve(self._term(t.to(xs.dtype), ctx, brownian), z0, t, gradient=gradient)
        return Posterior(sol.ys, self.projector(sol.ys), sol.kl[-1], mean, std)

    def log_likelihood(self, xs: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """``log p(xs | mean)`` summed over times and coordinates: ``[B]``."""
        scale = self.noise_scale
        if self.likelihood == "gaussian":
            logp = -0.5 * ((xs - mean) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)
        else:
            logp = -(xs - mean).abs() / scale - torch.log(2 * scale)
        return logp.sum(dim=(0, 2))

    def kl_z0(self, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        r""":math:`\mathrm{KL}(\mathcal N(\mu_q, \sigma_q^2) \,\|\, p(z_0))` per path, ``[B]``."""
        p_mean, p_logstd = self.pz0_mean, self.pz0_logstd
        var_ratio = (std / p_logstd.exp()) ** 2
        return 0.5 * (var_ratio + ((mean - p_mean) / p_logstd.exp()) ** 2 - 1 - var_ratio.log()).sum(-1)

    def elbo(
        self, xs: torch.Tensor, ts: Any, *, kl_weight: float = 1.0, brownian: AbstractBrownian | None = None
    ) -> LatentSDEELBO:
        """The ELBO's terms on observations ``xs [T, B, data]`` at ``ts [T]``, one posterior sample
        per path (``kl_weight`` anneals the KL terms in ``loss``)."""
        post = self.posterior(xs, ts, brownian=brownian)
        log_lik = self.log_likelihood(xs, post.xs).mean()
        kl0 = self.kl_z0(post.qz0_mean, post.qz0_std).mean()
        kl_path = post.kl_path.mean()
        elbo = log_lik - kl0 - kl_path
        return LatentSDEELBO(-(log_lik - kl_weight * (kl0 + kl_path)), elbo, log_lik, kl0, kl_path)

    def forward(self, xs: torch.Tensor, ts: Any, *, kl_weight: float = 1.0) -> LatentSDEELBO:
        """:meth:`elbo`."""
        return self.elbo(xs, ts, kl_weight=kl_weight)

    def sample_posterior(
        self, xs: torch.Tensor, ts: Any, n_samples: int = 1, *, brownian: AbstractBrownian | None = None
    ) -> torch.Tensor:
        """``n_samples`` posterior paths per observed path, projected to the data (the
        likelihood's mean): ``[T, n_samples, B, data]``. ``brownian`` has shape
        ``(n_samples * B, latent)``."""
        batch = xs.shape[1]
        post = self.posterior(xs.repeat(1, n_samples, 1), ts, brownian=brownian)
        return post.xs.reshape(xs.shape[0], n_samples, batch, self.data_size)

    def sample_prior(
        self,
        ts: Any,
        n: int,
        *,
        brownian: AbstractBrownian | None = None,
        latents: bool = False,
    ) -> torch.Tensor:
        """``n`` paths of the prior, ``z0 ~ p(z0)`` then the prior SDE, projected to the data:
        ``[T, n, data]`` (the latent paths ``[T, n, latent]`` with ``latents=True``)."""
        t = time_grid(ts, self.pz0_mean)
        eps = torch.randn(n, self.latent_size, dtype=self.pz0_mean.dtype, device=self.pz0_mean.device)
        z0 = self.pz0_mean + self.pz0_logstd.exp() * eps
        term = SDETerm(self.h, self.sigma, "diagonal", self.calculus, brownian)
        gradient = with_params(self.gradient, self._sde_parameters())
        zs = self._solve(term, z0, t, gradient=gradient).ys
        return zs if latents else self.projector(zs)
