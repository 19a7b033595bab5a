r"""Sample paths of stochastic processes with closed-form laws: the data of neural SDE models.

- :class:`OrnsteinUhlenbeck` — the (time-dependent) Ornstein–Uhlenbeck process

  .. math:: dY = \big(\theta(\mu - Y) + \kappa\,t\big)\,dt + \sigma\,dW,\qquad
            Y(0) \sim \mathcal N(m_0, s_0^2),

  plain for :math:`\kappa = 0`; with :math:`\kappa \ne 0` its mean drifts in time, as in the
  time-dependent OU data of the SDE-GAN paper (P. Kidger, J. Foster, X. Li, H. Oberhauser,
  T. Lyons, *Neural SDEs as Infinite-Dimensional GANs*, ICML 2021, arXiv 2102.03657; torchsde's
  ``examples/sde_gan.py`` uses :math:`\theta = 0.1`, :math:`\mu = 0`, :math:`\kappa = 0.02`,
  :math:`\sigma = 0.4`). Its law at each time is Gaussian with

  .. math:: \mathbb E\,Y(t) = \mu + (m_0 - \mu)e^{-\theta t}
            + \kappa\Big(\frac{t}{\theta} - \frac{1 - e^{-\theta t}}{\theta^2}\Big),\qquad
            \operatorname{Var} Y(t) = s_0^2 e^{-2\theta t} + \frac{\sigma^2}{2\theta}\big(1 - e^{-2\theta t}\big).

- :class:`GeometricBrownianMotion` — :math:`dY = \mu Y\,dt + \sigma Y\,dW`, :math:`Y(0) = y_0`,
  solved by :math:`Y(t) = y_0 \exp\big((\mu - \sigma^2/2)t + \sigma W(t)\big)`:

  .. math:: \mathbb E\,Y(t) = y_0 e^{\mu t},\qquad
            \operatorname{Std} Y(t) = y_0 e^{\mu t}\sqrt{e^{\sigma^2 t} - 1}.

Paths are drawn *exactly* on the time grid (no discretisation error): OU by its Gaussian
transition :math:`Y(t') - m(t') = e^{-\theta(t'-t)}\,(Y(t) - m(t)) + \mathcal N\big(0,
\tfrac{\sigma^2}{2\theta}(1 - e^{-2\theta(t'-t)})\big)`, GBM from the Brownian path. Both
generators are deterministic given ``seed`` (a private ``torch.Generator``; the global RNGs are
left alone), compute in float64 and cast to ``dtype`` at the end. Paths are time first,
``[time, n, 1]``, as :func:`torchnde.solve` returns them.

```python
import torch
from torchnde.datasets import ornstein_uhlenbeck
data = ornstein_uhlenbeck(n=20000, t_end=2.0, steps=5, seed=0)
data.paths.shape                                               # torch.Size([5, 20000, 1])
torch.allclose(data.paths[..., 0].mean(1), data.mean, atol=0.02)   # the analytic mean: True
```
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from ._checks import check_count, check_dtype

__all__ = [
    "GeometricBrownianMotion",
    "OrnsteinUhlenbeck",
    "SamplePaths",
    "geometric_brownian_motion",
    "ornstein_uhlenbeck",
]


class SamplePaths(NamedTuple):
    """Paths of a process on a time grid with the law's moments there: ``(t, paths, mean, std, process)``.

    - ``t``: the times ``[time]``, from 0.
    - ``paths``: ``[time, n, 1]`` (time first, as :func:`torchnde.solve`).
    - ``mean``, ``std``: the analytic mean and standard deviation at ``t``, ``[time]``.
    - ``process``: the :class:`OrnsteinUhlenbeck` or :class:`GeometricBrownianMotion` drawn from
      (its ``mean(t)`` and ``std(t)`` give the moments at any other time).
    """

    t: torch.Tensor
    paths: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    process: Any


def _times(t: Any) -> torch.Tensor:
    """``t`` as a float64 tensor; a ``ValueError`` if it is negative or not finite."""
    t = torch.as_tensor(t, dtype=torch.float64)
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise ValueError("the times must be finite and >= 0 (the processes start at t = 0)")
    return t


def _grid(t_end: float, steps: int) -> torch.Tensor:
    check_count(steps, "steps", minimum=2)
    if not (math.isfinite(t_end) and t_end > 0):
        raise ValueError(f"t_end must be a positive finite time, got {t_end!r}")
    return torch.linspace(0.0, float(t_end), steps, dtype=torch.float64)


def _check_positive(value: float, name: str, strict: bool = True) -> float:
    value = float(value)
    ok = value > 0 if strict else value >= 0
    if not (math.isfinite(value) and ok):
        raise ValueError(f"{name} must be {'> 0' if strict else '>= 0'} and finite, got {value!r}")
    return value


@dataclass(frozen=True)
class OrnsteinUhlenbeck:
    r"""The time-dependent Ornstein–Uhlenbeck process
    :math:`dY = (\theta(\mu - Y) + \kappa t)\,dt + \sigma\,dW`, :math:`Y(0) \sim \mathcal N(m_0, s_0^2)`
    (see the module docstring for its moments).

    **Arguments:** ``theta`` (:math:`\theta > 0`, the rate of mean reversion), ``mu``
    (:math:`\mu`), ``sigma`` (:math:`\sigma \ge 0`), ``slope`` (:math:`\kappa`, 0 for the plain
    process), ``y0_mean`` (:math:`m_0`), ``y0_std`` (:math:`s_0 \ge 0`).

    ```python
    import torch
    from torchnde.datasets import OrnsteinUhlenbeck
    ou = OrnsteinUhlenbeck(theta=1.0, mu=0.5, sigma=0.6, slope=1.0, y0_std=0.1)
    t = torch.tensor([0.0, 100.0], dtype=torch.float64)
    ou.std(t)                         # tensor([0.1000, 0.4243]): s0, then sigma / sqrt(2 theta)
    ```
    """

    theta: float = 1.0
    mu: float = 0.0
    sigma: float = 0.5
    slope: float = 0.0
    y0_mean: float = 0.0
    y0_std: float = 0.0

    def __post_init__(self) -> None:
        _check_positive(self.theta, "theta")
        _check_positive(self.sigma, "sigma", strict=False)
        _check_positive(self.y0_std, "y0_std", strict=False)
        for name in ("mu", "slope", "y0_mean"):
            if not math.isfinite(float(getattr(self, name))):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")

    def mean(self, t: Any) -> torch.Tensor:
        r""":math:`\mathbb E\,Y(t)` at the times ``t`` (float64)."""
        t = _times(t)
        th, decay = self.theta, torch.exp(-self.theta * t)
        return self.mu + (self.y0_mean - self.mu) * decay + self.slope * (t / th - (1 - decay) / th**2)

    def std(self, t: Any) -> torch.Tensor:
        r""":math:`\operatorname{Std} Y(t)` at the times ``t`` (float64)."""
        decay2 = torch.exp(-2 * self.theta * _times(t))
        var = self.y0_std**2 * decay2 + self.sigma**2 / (2 * self.theta) * (1 - decay2)
        return var.sqrt()

    def sample(self, n: int, t: Any, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``n`` exact sample paths at the increasing times ``t`` (from 0): ``[time, n, 1]``."""
        check_count(n, "n")
        t = _increasing(_times(t))
        gen = torch.Generator().manual_seed(seed)
        mean = self.mean(t)
        dev = torch.empty(len(t), n, 1, dtype=torch.float64)
        # the deviation from the mean at t[0]: s(t0) N(0, 1) (the law at t0 is Gaussian)
        dev[0] = self.std(t[:1]) * torch.randn(n, 1, generator=gen, dtype=torch.float64)
        for i in range(1, len(t)):
            h = float(t[i] - t[i - 1])
            decay = math.exp(-self.theta * h)
            scale = self.sigma * math.sqrt((1 - decay**2) / (2 * self.theta))
            dev[i] = decay * dev[i - 1] + scale * torch.randn(n, 1, generator=gen, dtype=torch.float64)
        return (mean.view(-1, 1, 1) + dev).to(check_dtype(dtype))


@dataclass(frozen=True)
class GeometricBrownianMotion:
    r"""Geometric Brownian motion :math:`dY = \mu Y\,dt + \sigma Y\,dW`, :math:`Y(0) = y_0` (Itô):
    :math:`Y(t) = y_0\exp((\mu - \sigma^2/2)t + \sigma W(t))`, mean :math:`y_0 e^{\mu t}`, standard
    deviation :math:`y_0 e^{\mu t}\sqrt{e^{\sigma^2 t} - 1}`.

    ```python
    import torch
    from torchnde.datasets import GeometricBrownianMotion
    gbm = GeometricBrownianMotion(mu=0.5, sigma=0.3, y0=1.0)
    gbm.mean(torch.tensor([1.0], dtype=torch.float64))   # tensor([1.6487]): e^0.5
    ```
    """

    mu: float = 0.5
    sigma: float = 0.3
    y0: float = 1.0

    def __post_init__(self) -> None:
        _check_positive(self.sigma, "sigma", strict=False)
        _check_positive(self.y0, "y0")
        if not math.isfinite(float(self.mu)):
            raise ValueError(f"mu must be finite, got {self.mu!r}")

    def mean(self, t: Any) -> torch.Tensor:
        r""":math:`\mathbb E\,Y(t) = y_0 e^{\mu t}` (float64)."""
        return self.y0 * torch.exp(self.mu * _times(t))

    def std(self, t: Any) -> torch.Tensor:
        r""":math:`y_0 e^{\mu t}\sqrt{e^{\sigma^2 t} - 1}` (float64)."""
        t = _times(t)
        return self.mean(t) * torch.expm1(self.sigma**2 * t).sqrt()

    def sample(self, n: int, t: Any, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``n`` exact sample paths at the increasing times ``t`` (from 0): ``[time, n, 1]``."""
        check_count(n, "n")
        t = _increasing(_times(t))
        gen = torch.Generator().manual_seed(seed)
        steps = torch.diff(t, prepend=t.new_zeros(1)).sqrt().view(-1, 1, 1)
        w = (steps * torch.randn(len(t), n, 1, generator=gen, dtype=torch.float64)).cumsum(0)
        log = (self.mu - self.sigma**2 / 2) * t.view(-1, 1, 1) + self.sigma * w
        return (self.y0 * torch.exp(log)).to(check_dtype(dtype))


def _increasing(t: torch.Tensor) -> torch.Tensor:
    if t.ndim != 1 or len(t) < 1 or bool((t[1:] <= t[:-1]).any()):
        raise ValueError("t must be a 1-D tensor of strictly increasing times")
    return t


def ornstein_uhlenbeck(
    n: int = 1024,
    t_end: float = 3.0,
    steps: int = 16,
    *,
    theta: float = 1.0,
    mu: float = 0.5,
    sigma: float = 0.6,
    slope: float = 1.0,
    y0_mean: float = 0.0,
    y0_std: float = 0.1,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> SamplePaths:
    r"""``n`` exact paths of the time-dependent Ornstein–Uhlenbeck process
    :math:`dY = (\theta(\mu - Y) + \kappa t)\,dt + \sigma\,dW` (``slope`` :math:`= \kappa`; 0 for
    the plain process) at ``steps`` equally spaced times on ``[0, t_end]``, with the analytic mean
    and standard deviation there (:class:`SamplePaths`). The defaults (:math:`\theta = 1`,
    :math:`\mu = 0.5`, :math:`\kappa = 1`, :math:`\sigma = 0.6`, :math:`Y(0) \sim \mathcal N(0,
    0.1^2)`, :math:`t \in [0, 3]`) are the ``sde-gan-ou`` experiment's process (which samples it
    on :math:`[0, 4]`): a mean that rises from 0 to 2.5 at :math:`t = 3` and a spread that grows
    from 0.1 to 0.42.

    ```python
    from torchnde.datasets import ornstein_uhlenbeck
    data = ornstein_uhlenbeck(n=8, steps=4, seed=1)
    data.t.tolist(), data.paths.shape        # ([0.0, 1.0, 2.0, 3.0], torch.Size([4, 8, 1]))
    ```
    """
    process = OrnsteinUhlenbeck(theta, mu, sigma, slope, y0_mean, y0_std)
    return _paths(process, n, _grid(t_end, steps), seed, dtype)


def geometric_brownian_motion(
    n: int = 1024,
    t_end: float = 1.0,
    steps: int = 16,
    *,
    mu: float = 0.5,
    sigma: float = 0.3,
    y0: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> SamplePaths:
    r"""``n`` exact paths of geometric Brownian motion :math:`dY = \mu Y\,dt + \sigma Y\,dW`,
    :math:`Y(0) = y_0`, at ``steps`` equally spaced times on ``[0, t_end]``, with the analytic
    mean and standard deviation there (:class:`SamplePaths`).

    ```python
    import torch
    from torchnde.datasets import geometric_brownian_motion
    data = geometric_brownian_motion(n=20000, steps=3, seed=0, dtype=torch.float64)
    (data.paths[-1, :, 0].mean() / data.mean[-1]).item()   # about 1 (mean e^0.5 at t = 1)
    ```
    """
    return _paths(GeometricBrownianMotion(mu, sigma, y0), n, _grid(t_end, steps), seed, dtype)


def _paths(process: Any, n: int, t: torch.Tensor, seed: int, dtype: torch.dtype) -> SamplePaths:
    dtype = check_dtype(dtype)
    paths = process.sample(n, t, seed=seed, dtype=dtype)
    return SamplePaths(t.to(dtype), paths, process.mean(t).to(dtype), process.std(t).to(dtype), process)
