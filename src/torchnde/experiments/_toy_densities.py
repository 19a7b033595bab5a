r"""FFJORD's 2-D toy densities shared by the CNF experiments (``rnode-regularisation``, ``cnf-toys``).

The sets of ``lib/toy_data.py`` in W. Grathwohl et al.'s FFJORD code (ICLR 2019, arXiv
1810.01367), written anew from their definitions: ``8gaussians``, ``2spirals`` and
``checkerboard``, each a sampler ``(n, generator, dtype) -> [n, 2]`` drawing in float64 from
the given ``torch.Generator``, with the exact log-density where it has one, and the test NLL of
the single Gaussian fitted to training samples (the baseline a density model must beat).

```python
import torch
from torchnde.experiments._toy_densities import checkerboard, checkerboard_log_density
x = checkerboard(1000, torch.Generator().manual_seed(0))
checkerboard_log_density(x)      # log(1/32) = -3.466 at every sample
```
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = [
    "DENSITIES",
    "checkerboard",
    "checkerboard_log_density",
    "eight_gaussians",
    "eight_gaussians_log_density",
    "gaussian_nll",
    "two_spirals",
]

_LOG_2PI = math.log(2 * math.pi)
_S = 1 / math.sqrt(2)
# FFJORD lib/toy_data.py "8gaussians": centres 4 * (unit circle, 8 directions), std 0.5, all / 1.414
_CENTRES = torch.tensor(
    [(1, 0), (-1, 0), (0, 1), (0, -1), (_S, _S), (_S, -_S), (-_S, _S), (-_S, -_S)], dtype=torch.float64
) * (4 / 1.414)
_STD = 0.5 / 1.414
# checkerboard: 8 of the 16 squares of side 2 tiling [-4, 4]^2, uniform on their union (area 32)
_BOARD_HALF_WIDTH = 4.0
_BOARD_LOG_DENSITY = -math.log(32.0)


def eight_gaussians(n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` samples of FFJORD's ``8gaussians``: an equal mixture of 8 isotropic Gaussians (std
    0.5/1.414) centred on the circle of radius 4/1.414 at multiples of 45 degrees."""
    idx = torch.randint(0, 8, (n,), generator=generator)
    noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (_CENTRES[idx] + _STD * noise).to(dtype)


def eight_gaussians_log_density(x: torch.Tensor) -> torch.Tensor:
    """The exact log-density of :func:`eight_gaussians` at ``x`` (shape ``[n, 2]``), float64."""
    d2 = (x.double()[:, None, :] - _CENTRES[None]).pow(2).sum(-1)  # [n, 8]
    comp = -0.5 * d2 / _STD**2 - _LOG_2PI - 2 * math.log(_STD) - math.log(8)
    return torch.logsumexp(comp, dim=1)


def two_spirals(n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""``n`` samples of FFJORD's ``2spirals``: two interleaved arms :math:`\pm r(-\cos r, \sin r)/3`
    with :math:`r = \sqrt{u}\cdot 3\pi` (u uniform: 1.5 turns, uniform in area), each coordinate
    shifted by U(0, 0.5)/3 and blurred by N(0, 0.1^2); the first half of the samples on one arm,
    the second half on the other."""
    half = (n + 1) // 2
    r = torch.sqrt(torch.rand(half, 1, generator=generator, dtype=torch.float64)) * 3 * math.pi
    arm = torch.cat([-torch.cos(r) * r, torch.sin(r) * r], 1)
    arm = arm + 0.5 * torch.rand(half, 2, generator=generator, dtype=torch.float64)
    x = torch.cat([arm, -arm])[:n] / 3
    x = x + 0.1 * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return x.to(dtype)


def checkerboard(n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""``n`` samples of FFJORD's ``checkerboard``: uniform on the 8 squares of side 2 of the
    :math:`4\times 4` board on :math:`[-4, 4]^2` whose cell indices :math:`(i, j)`
    (:math:`i = \lfloor x_1/2\rfloor + 2`) have an even sum; density :math:`1/32` there, 0 elsewhere.

    :math:`x_1` is uniform on :math:`[-4, 4)`; :math:`x_2` is uniform on one of the two squares of
    :math:`x_1`'s column, chosen with equal odds.
    """
    x1 = (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * _BOARD_HALF_WIDTH
    column = torch.floor(x1 / 2) + 2  # 0..3
    row = 2 * torch.randint(0, 2, (n,), generator=generator).to(torch.float64) + column.remainder(2)
    x2 = 2 * row - _BOARD_HALF_WIDTH + 2 * torch.rand(n, generator=generator, dtype=torch.float64)
    return torch.stack([x1, x2], 1).to(dtype)


def checkerboard_log_density(x: torch.Tensor) -> torch.Tensor:
    """The exact log-density of :func:`checkerboard` at ``x`` (``[n, 2]``): :math:`-\\log 32` on
    the black squares, :math:`-\\infty` off them; float64."""
    x = x.double()
    inside = (x.abs() < _BOARD_HALF_WIDTH).all(1)
    cells = torch.floor(x / 2) + 2
    black = inside & (cells.sum(1).remainder(2) == 0)
    return torch.where(black, x.new_full((), _BOARD_LOG_DENSITY), x.new_full((), -math.inf))


def gaussian_nll(train: torch.Tensor, test: torch.Tensor) -> float:
    """Test NLL (nats) of the single Gaussian fitted to ``train`` by maximum likelihood."""
    train, test = train.double(), test.double()
    mean = train.mean(0)
    cov = torch.cov(train.T, correction=0)
    dist = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
    return float(-dist.log_prob(test).mean())


# name -> (sampler, exact log-density or None)
DENSITIES: dict[str, tuple[Callable[..., torch.Tensor], Callable[[torch.Tensor], torch.Tensor] | None]] = {
    "8gaussians": (eight_gaussians, eight_gaussians_log_density),
    "2spirals": (two_spirals, None),
    "checkerboard": (checkerboard, checkerboard_log_density),
}
