r"""Irregularly sampled time series with observation masks, for latent ODEs and ODE-RNNs.

- :func:`irregular_spirals` — 2-D Archimedean spirals, half clockwise and half
  counter-clockwise, each a random window of a long spiral, with Gaussian noise and a random
  subset of its times observed. The spiral formulas and default sizes follow the ``latent_ode``
  example of ``torchdiffeq`` (R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, *Neural
  Ordinary Differential Equations*, NeurIPS 2018, arXiv 1806.07366, Sec. 5): on the angle grid
  :math:`\theta \in [0, 6\pi]` (``n_total`` points) the counter-clockwise spiral is
  :math:`r = b\,\theta` centred at :math:`(+5, 0)` and the clockwise one is
  :math:`r = 50 b / \theta'` with :math:`\theta' = 6\pi + 1 - \theta`, centred at :math:`(-5, 0)`.
- :func:`periodic_signals` — 1-D sine waves with a random amplitude, frequency and phase at
  irregular (sorted uniform) times, in the spirit of the periodic toy of Y. Rubanova, R. T. Q.
  Chen, D. Duvenaud, *Latent ODEs for Irregularly-Sampled Time Series*, NeurIPS 2019, arXiv
  1907.03907.

Both return an :class:`IrregularSeries` on a grid shared by the batch (batch first:
``values[b, i]`` is sample ``b`` at ``times[i]``) with a boolean ``mask`` that is True where a
point is observed, so a model sees ``values`` only under ``mask`` and is scored on the rest.
Every generator is deterministic given ``seed`` (a private ``torch.Generator``; the global RNG
is left alone), samples in float64 and casts to ``dtype`` at the end.

```python
from torchnde.datasets import irregular_spirals
data = irregular_spirals(n=8, seed=0)
data.times.shape, data.values.shape, data.mask.shape   # [100], [8, 100, 2], [8, 100, 2]
```
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from ._checks import check_count, check_dtype
from .toys import _generator

__all__ = ["IrregularSeries", "irregular_spirals", "periodic_signals"]


class IrregularSeries(NamedTuple):
    """Time series on a grid shared by the batch, with the points observed marked by a mask.

    - ``times``: ``[T]``, increasing.
    - ``values``: ``[B, T, C]``, the noisy observations (defined everywhere; a model must only
      look under ``mask``).
    - ``clean``: ``[B, T, C]``, the noise-free series (the truth to score predictions on).
    - ``mask``: ``[B, T, C]`` bool, True where a point is observed.
    - ``params``: the generator's settings and per-sample draws (``labels``, ``amplitude``, ...).

    ```python
    from torchnde.datasets import periodic_signals
    times, values, clean, mask, params = periodic_signals(n=4, seed=0)
    mask.sum(1)[:, 0]          # tensor([50, 50, 50, 50]): 50 observed points each
    ```
    """

    times: torch.Tensor
    values: torch.Tensor
    clean: torch.Tensor
    mask: torch.Tensor
    params: dict[str, Any]


def _check_noise(noise: float) -> float:
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite standard deviation >= 0, got {noise!r}")
    return float(noise)


def _random_subsets(n: int, length: int, observed: int, gen: torch.Generator) -> torch.Tensor:
    """``[n, length]`` bool: ``observed`` distinct points per row, chosen uniformly."""
    order = torch.rand(n, length, generator=gen, dtype=torch.float64).argsort(dim=1)
    mask = torch.zeros(n, length, dtype=torch.bool)
    mask.scatter_(1, order[:, :observed], True)
    return mask


def irregular_spirals(
    n: int = 1000,
    n_points: int = 100,
    *,
    n_observed: int | None = None,
    n_total: int = 1000,
    noise: float = 0.3,
    a: float = 0.0,
    b: float = 0.3,
    seed: int | None = 0,
    dtype: torch.dtype = torch.float32,
) -> IrregularSeries:
    r"""``n`` noisy 2-D spirals, each a random window of ``n_points`` consecutive grid points.

    The angle grid is :math:`\theta_k = 6\pi k / (n_\text{total} - 1)`; sample ``j`` turns
    counter-clockwise (``params["labels"][j] == 1``) or clockwise with probability 1/2, and its
    window starts at a uniform index in ``[n_points, n_total - n_points)`` (as in torchdiffeq's
    ``latent_ode`` example). The times are the window's angles shifted to start at 0, so all
    samples share ``times = θ_0 .. θ_{n_points - 1}``. Gaussian noise of std ``noise`` is added
    to ``values``; ``clean`` is the spiral itself. ``n_observed`` points of each window (all if
    ``None``), chosen uniformly without replacement, are marked observed in ``mask`` (both
    channels together).

    **Arguments:** the sample count ``n``; the window length ``n_points`` (``2 * n_points <
    n_total``); ``n_observed``; the grid size ``n_total``; ``noise``; the spiral constants
    ``a`` and ``b`` (radius :math:`a + b\theta` counter-clockwise, :math:`a + 50b/\theta'`
    clockwise); ``seed``; ``dtype``.

    **Returns:** an :class:`IrregularSeries` with ``times`` ``[n_points]``, ``values``,
    ``clean``, ``mask`` ``[n, n_points, 2]`` and ``params`` (``labels`` ``[n]`` and
    ``start`` ``[n]``, the window's first grid index, besides the settings).

    ```python
    from torchnde.datasets import irregular_spirals
    data = irregular_spirals(n=16, n_points=60, n_observed=30, seed=0)
    data.mask[:, :, 0].sum(1)     # 30 observed times per spiral
    ```
    """
    check_count(n, "n")
    check_count(n_points, "n_points", 2)
    check_count(n_total, "n_total", 3)
    if 2 * n_points >= n_total:
        raise ValueError(
            f"n_points must be below n_total / 2 (windows start in [n_points, n_total - n_points)); got {n_points} and {n_total}"
        )
    observed = n_points if n_observed is None else check_count(n_observed, "n_observed")
    if observed > n_points:
        raise ValueError(f"n_observed must be at most n_points = {n_points}, got {observed}")
    noise = _check_noise(noise)
    dtype = check_dtype(dtype)
    gen = _generator(seed)
    theta = torch.linspace(0.0, 6 * math.pi, n_total, dtype=torch.float64)
    radius_cc = a + b * theta
    counter = torch.stack([radius_cc * theta.cos() + 5.0, radius_cc * theta.sin()], -1)
    turned = 6 * math.pi + 1.0 - theta
    radius_cw = a + b * 50.0 / turned
    clockwise = torch.stack([radius_cw * turned.cos() - 5.0, radius_cw * turned.sin()], -1)
    start = torch.randint(n_points, n_total - n_points, (n,), generator=gen)
    labels = (torch.rand(n, generator=gen, dtype=torch.float64) > 0.5).long()
    index = start[:, None] + torch.arange(n_points)
    clean = torch.where(labels[:, None, None].bool(), counter[index], clockwise[index])
    values = clean + noise * torch.randn(clean.shape, generator=gen, dtype=torch.float64)
    mask = _random_subsets(n, n_points, observed, gen).unsqueeze(-1).expand(n, n_points, 2).clone()
    params = {"labels": labels, "start": start, "noise": noise, "a": a, "b": b, "n_total": n_total}
    return IrregularSeries(theta[:n_points].to(dtype), values.to(dtype), clean.to(dtype), mask, params)


def periodic_signals(
    n: int = 1000,
    n_points: int = 100,
    *,
    n_observed: int | None = 50,
    t_max: float = 5.0,
    noise: float = 0.01,
    amplitude: tuple[float, float] = (0.5, 1.5),
    frequency: tuple[float, float] = (0.5, 1.5),
    seed: int | None = 0,
    dtype: torch.dtype = torch.float32,
) -> IrregularSeries:
    r"""``n`` 1-D sine waves :math:`x(t) = A \sin(2\pi \nu t + \varphi)` at irregular times.

    The ``n_points`` times are sorted uniform draws on ``[0, t_max]`` with ``times[0] = 0``,
    shared by the batch (a union grid); each sample has its own amplitude :math:`A` and
    frequency :math:`\nu` (uniform in the given ranges) and phase :math:`\varphi \sim U[0, 2\pi)`,
    Gaussian noise of std ``noise``, and ``n_observed`` of the times observed (all if ``None``).

    **Returns:** an :class:`IrregularSeries` with ``values`` ``[n, n_points, 1]`` and
    ``params`` holding the draws ``amplitude``, ``frequency``, ``phase`` (each ``[n]``).

    ```python
    from torchnde.datasets import periodic_signals
    data = periodic_signals(n=32, n_points=80, n_observed=40, seed=1)
    data.values.shape          # torch.Size([32, 80, 1])
    ```
    """
    check_count(n, "n")
    check_count(n_points, "n_points", 2)
    observed = n_points if n_observed is None else check_count(n_observed, "n_observed")
    if observed > n_points:
        raise ValueError(f"n_observed must be at most n_points = {n_points}, got {observed}")
    if not (math.isfinite(t_max) and t_max > 0):
        raise ValueError(f"t_max must be a positive time, got {t_max!r}")
    for name, (lo, hi) in (("amplitude", amplitude), ("frequency", frequency)):
        if not (0 < lo <= hi and math.isfinite(hi)):
            raise ValueError(f"{name} must be a range (low, high) with 0 < low <= high, got {(lo, hi)!r}")
    noise = _check_noise(noise)
    dtype = check_dtype(dtype)
    gen = _generator(seed)
    inner = torch.rand(n_points - 1, generator=gen, dtype=torch.float64).sort().values * t_max
    times = torch.cat([torch.zeros(1, dtype=torch.float64), inner])

    def draw(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)

    amp, freq = draw(*amplitude), draw(*frequency)
    phase = draw(0.0, 2 * math.pi)
    clean = (amp[:, None] * torch.sin(2 * math.pi * freq[:, None] * times + phase[:, None])).unsqueeze(-1)
    values = clean + noise * torch.randn(clean.shape, generator=gen, dtype=torch.float64)
    mask = _random_subsets(n, n_points, observed, gen).unsqueeze(-1)
    params = {"amplitude": amp, "frequency": freq, "phase": phase, "noise": noise, "t_max": t_max}
    return IrregularSeries(times.to(dtype), values.to(dtype), clean.to(dtype), mask, params)
