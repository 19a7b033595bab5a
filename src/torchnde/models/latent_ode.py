r"""Latent ODE with an ODE-RNN encoder: a variational autoencoder for irregular time series.

Y. Rubanova, R. T. Q. Chen, D. Duvenaud, *Latent ODEs for Irregularly-Sampled Time Series*,
NeurIPS 2019, arXiv 1907.03907 (building on the latent ODE of R. T. Q. Chen, Y. Rubanova,
J. Bettencourt, D. Duvenaud, *Neural Ordinary Differential Equations*, NeurIPS 2018, Sec. 5).

An ODE-RNN reads the observations backwards in time and gives the posterior
:math:`q(z_0 \mid x) = \mathcal N(\mu, \operatorname{diag}\sigma^2)` of a latent initial state;
a neural ODE carries a sample :math:`z_0` to any query times, and a readout maps the latent
trajectory to observations. Because the decoder is a continuous-time flow, the same model
interpolates between observations and extrapolates past them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

from ._base import SolveOptions, as_field
from .ode_rnn import ODERNN, _with_params, check_series

__all__ = ["LatentODEELBO", "LatentODE", "LatentODEOutput"]


class LatentODEOutput(NamedTuple):
    """What :meth:`LatentODE.forward` returns.

    - ``prediction``: ``[B, Q, C]``, the readout of the latent trajectory at the query times.
    - ``mean``, ``std``: ``[B, L]``, the posterior :math:`q(z_0 \\mid x)`.
    - ``z0``: ``[B, L]``, the latent initial state that was decoded (a sample, or the mean).
    """

    prediction: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    z0: torch.Tensor


class LatentODEELBO(NamedTuple):
    """The evidence lower bound and its two parts, each a batch mean (0-d tensors).

    ``value = log_likelihood - kl_weight * kl``; train by minimising ``-value``.
    ``prediction`` is the decoded ``[B, Q, C]`` it was computed from.
    """

    value: torch.Tensor
    log_likelihood: torch.Tensor
    kl: torch.Tensor
    prediction: torch.Tensor


class LatentODE(SolveOptions):
    r"""A latent ODE with an ODE-RNN encoder (Rubanova et al., NeurIPS 2019).

    .. math::

        (\mu, \log\sigma) = W\,\mathrm{ODERNN}_{\leftarrow}(x, m), \quad
        z_0 = \mu + \sigma \odot \varepsilon, \quad
        \dot z = g_\phi(t, z), \quad \hat x(t) = \mathrm{dec}(z(t)),

    trained by maximising the ELBO over the observed entries (mask :math:`m`):

    .. math::

        \mathcal L = \sum_{i, c} m_{ic} \log \mathcal N(x_{ic} \mid \hat x_c(t_i), s^2)
        - \mathrm{KL}\big(\mathcal N(\mu, \sigma^2) \,\|\, \mathcal N(0, I)\big).

    **Arguments:**

    - ``encoder``: an :class:`ODERNN` over the data's channels; it runs backwards from the last
      observation to ``t0`` (its own solve options apply).
    - ``field``: the latent dynamics :math:`g_\phi` (``L -> L``; ``field(z)`` or ``field(t, z)``).
    - ``decoder``: the readout from ``L`` latent dimensions to the ``C`` channels (a linear
      layer or a small MLP).
    - ``latent_dim``: :math:`L`; a linear layer maps the encoder's state to :math:`(\mu, \log\sigma)`.
    - ``obs_std``: the observation noise :math:`s` of the Gaussian likelihood.
    - solve options of the decoder's solve (``solver``, ``rtol``, ``atol``, ``dt``,
      ``gradient``, ...; see :class:`~torchnde.models.SolveOptions`). ``gradient="adjoint"``
      differentiates the latent field's parameters (the rest is outside the solve).

    Data are batch first (see :class:`ODERNN`): ``times`` ``[T]`` or ``[B, T]``, ``values``
    ``[B, T, C]``, ``mask`` ``[B, T]`` or ``[B, T, C]``. The latent trajectory starts at ``t0``
    (default: the earliest observation time); query times are ``[Q]`` or ``[B, Q]``, increasing,
    not before ``t0``.

    ```python
    import torch, torchnde as nde
    from torch import nn
    encoder = nde.models.ODERNN(nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16)),
                                nn.GRUCell(2 * 2, 16), solver="rk4", dt=0.1)
    model = nde.models.LatentODE(encoder, nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 4)),
                                 nn.Linear(4, 2), latent_dim=4, solver="rk4", dt=0.05)
    times, values = torch.linspace(0, 1, 10), torch.randn(8, 10, 2)
    mask = torch.rand(8, 10, 2) > 0.5
    loss = -model.elbo(times, values, mask).value      # train on this
    loss.backward()
    model.predict(times, values, mask, torch.linspace(0, 2, 20)).shape  # torch.Size([8, 20, 2])
    model.sample(torch.linspace(0, 2, 20), 5).shape                     # torch.Size([5, 20, 2])
    ```
    """

    def __init__(
        self,
        encoder: ODERNN,
        field: Callable[..., Any],
        decoder: nn.Module,
        *,
        latent_dim: int,
        obs_std: float = 0.1,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if not isinstance(encoder, ODERNN):
            raise TypeError(f"LatentODE: encoder must be an nde.models.ODERNN, got {type(encoder).__name__}")
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"LatentODE: latent_dim must be a positive integer, got {latent_dim!r}")
        if not (math.isfinite(obs_std) and obs_std > 0):
            raise ValueError(
                f"LatentODE: obs_std must be a positive noise standard deviation, got {obs_std!r}"
            )
        self.encoder = encoder
        self.field = field
        self.decoder = decoder
        self.latent_dim = latent_dim
        self.obs_std = float(obs_std)
        self.to_posterior = nn.Linear(encoder.hidden_size, 2 * latent_dim)

    def vector_field(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The latent dynamics :math:`g_\\phi(t, z)`."""
        return as_field(self.field)(t, z)

    @staticmethod
    def _t0(times: torch.Tensor, t0: Any) -> float:
        first = float(times[..., 0].detach().min())
        if t0 is None:
            return first
        if float(t0) > first:
            raise ValueError(
                f"LatentODE: t0 = {float(t0)} is after the first observation time {first}; pass t0 <= it"
            )
        return float(t0)

    def posterior(
        self, times: Any, values: torch.Tensor, mask: torch.Tensor | None = None, *, t0: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)``, each ``[B, L]``: :math:`q(z_0 \\mid x)` from the backwards ODE-RNN."""
        t, values, full = check_series(times, values, mask, type(self).__name__)
        start = self._t0(t, t0)
        h = self.encoder(t, values, full, reverse=True, t_end=start)
        mean, log_std = self.to_posterior(h).chunk(2, dim=-1)
        return mean, log_std.clamp(-10.0, 5.0).exp()

    def decode(self, z0: torch.Tensor, t_query: Any, *, t0: float) -> torch.Tensor:
        """``[B, Q, C]``: the readout of the latent trajectory from ``z0`` at time ``t0``.

        ``t_query`` is ``[Q]`` (shared) or ``[B, Q]`` (per sample), increasing, all ``>= t0``.
        Per-sample queries are solved once on the sorted union of all rows' times (each sample's
        trajectory is independent of the others, so this is exact) and gathered; no gradient
        flows to per-sample query times.
        """
        q = torch.as_tensor(t_query, dtype=z0.dtype).to(z0.device)
        if q.ndim not in (1, 2) or q.shape[-1] < 1 or bool((q.diff(dim=-1) <= 0).any()):
            raise ValueError(
                f"LatentODE: t_query must be strictly increasing [Q] or [B, Q] times, got shape {tuple(q.shape)}"
            )
        if q.ndim == 2 and q.shape[0] != z0.shape[0]:
            raise ValueError(
                f"LatentODE: per-sample t_query has {q.shape[0]} rows for a batch of {z0.shape[0]}"
            )
        if bool((q[..., 0] < t0).any()):
            raise ValueError(
                f"LatentODE: query times must not start before t0 = {t0}; pass an earlier t0= to the call"
            )
        # per-sample queries: one solve on the sorted union of every sample's times, then gather
        union, index = (q, None) if q.ndim == 1 else torch.unique(q, sorted=True, return_inverse=True)
        keep = bool(union[0] == t0)
        grid = union if keep else torch.cat([union.new_full((1,), t0), union])
        params = tuple(p for p in self.field.parameters()) if isinstance(self.field, nn.Module) else ()
        gradient = _with_params(self.gradient, params)
        zs = self._solve(self.vector_field, z0, grid, gradient=gradient).ys
        zs = zs if keep else zs[1:]
        if index is None:
            return self.decoder(zs.transpose(0, 1))
        rows = torch.arange(z0.shape[0], device=z0.device).unsqueeze(-1)
        return self.decoder(zs[index, rows])

    def forward(
        self,
        times: Any,
        values: torch.Tensor,
        mask: torch.Tensor | None = None,
        t_query: Any = None,
        *,
        t0: Any = None,
        sample: bool = True,
        generator: torch.Generator | None = None,
    ) -> LatentODEOutput:
        """Encode, draw :math:`z_0` (the posterior mean if ``sample=False``) and decode at
        ``t_query`` (default: the observation times)."""
        t, values, full = check_series(times, values, mask, type(self).__name__)
        start = self._t0(t, t0)
        mean, std = self.posterior(t, values, full, t0=start)
        z0 = mean
        if sample:
            noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
            z0 = mean + std * noise
        query = t if t_query is None else t_query
        return LatentODEOutput(self.decode(z0, query, t0=start), mean, std, z0)

    def elbo(
        self,
        times: Any,
        values: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        t_query: Any = None,
        targets: torch.Tensor | None = None,
        target_mask: torch.Tensor | None = None,
        t0: Any = None,
        kl_weight: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> LatentODEELBO:
        """The ELBO (batch mean) of one posterior sample: Gaussian log-likelihood of the observed
        targets minus ``kl_weight`` times :math:`\\mathrm{KL}(q(z_0 \\mid x) \\,\\|\\, \\mathcal N(0, I))`.

        By default the targets are the observations themselves (``values`` at ``times`` under
        ``mask``); pass ``t_query``, ``targets`` ``[B, Q, C]`` and ``target_mask`` to score other
        points (for example the whole series given only a part of it).
        """
        t, values, full = check_series(times, values, mask, type(self).__name__)
        if targets is None:
            if t_query is not None or target_mask is not None:
                raise ValueError("LatentODE.elbo: t_query and target_mask go with targets=; pass all three")
            query, targets, target_mask = t, values, full
        else:
            if t_query is None:
                raise ValueError("LatentODE.elbo: targets= needs the times they are at, t_query=")
            query = t_query
            _, targets, target_mask = check_series(t_query, targets, target_mask, "LatentODE.elbo targets")
        out = self.forward(t, values, full, query, t0=t0, generator=generator)
        if out.prediction.shape != targets.shape:
            raise ValueError(
                f"LatentODE.elbo: the decoder gives {tuple(out.prediction.shape)} but targets are "
                f"{tuple(targets.shape)}; the decoder must map latent_dim to the data's channels"
            )
        var = self.obs_std**2
        point = -0.5 * ((targets - out.prediction) ** 2 / var + math.log(2 * math.pi * var))
        loglik = torch.where(target_mask, point, torch.zeros_like(point)).sum((1, 2))
        kl = (0.5 * (out.mean**2 + out.std**2 - 1.0) - out.std.log()).sum(-1)
        value = (loglik - kl_weight * kl).mean()
        return LatentODEELBO(value, loglik.mean(), kl.mean(), out.prediction)

    def predict(
        self, times: Any, values: torch.Tensor, mask: torch.Tensor | None, t_query: Any, *, t0: Any = None
    ) -> torch.Tensor:
        """``[B, Q, C]`` at ``t_query`` decoded from the posterior mean: interpolation between the
        observations and extrapolation past them."""
        return self.forward(times, values, mask, t_query, t0=t0, sample=False).prediction

    def sample(
        self, t_query: Any, n: int, *, t0: float = 0.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``[n, Q, C]``: ``n`` trajectories decoded from prior draws :math:`z_0 \\sim \\mathcal N(0, I)`."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"LatentODE.sample: n must be a positive integer, got {n!r}")
        ref = self.to_posterior.weight
        z0 = torch.randn(n, self.latent_dim, generator=generator, dtype=ref.dtype, device=ref.device)
        return self.decode(z0, t_query, t0=float(t0))
