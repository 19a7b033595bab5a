"""Shared pieces of the SDE tests: a small nonlinear SDE in torchsde's form for every noise type
and calculus, and torchsde's Brownian interface over a torchnde Brownian motion, so that both
libraries step on the same increments."""

from __future__ import annotations

import torch
import torchsde

import torchnde as nde

DTYPE = torch.float64
BATCH = 8


class SharedBrownian(torchsde.BrownianInterval):
    """torchsde's Brownian interface over a torchnde Brownian motion: both libraries step on the
    same increments (and the same I_(1,0) for ``srk``). ``pad=True`` appends a zero column, the
    noise of torchsde's ``logqp`` channel under diagonal noise."""

    def __init__(
        self, bm: nde.BrownianInterval, pad: bool = False
    ):  # no super().__init__: only the interface
        self.bm, self.pad = bm, pad

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        w, h = self.bm.levy(float(ta), float(tb))
        if self.pad:
            w, h = (torch.cat([x, torch.zeros_like(x[..., :1])], -1) for x in (w, h))
        dt = float(tb) - float(ta)
        return (w, dt * (0.5 * w + h)) if return_U else w

    def __repr__(self):
        return "SharedBrownian()"

    dtype = property(lambda self: self.bm.dtype)
    device = property(lambda self: self.bm.device)
    shape = property(lambda self: (*self.bm.shape[:-1], self.bm.shape[-1] + self.pad))
    levy_area_approximation = property(lambda self: "space-time")


class SmallSDE(torch.nn.Module):
    """A small nonlinear SDE in torchsde's form (state [batch, 2]), with a prior drift ``h``."""

    def __init__(self, noise: str, calculus: str):
        super().__init__()
        self.noise_type, self.sde_type = noise, calculus
        gen = torch.Generator().manual_seed(0)
        self.a = torch.nn.Parameter(torch.randn(2, 2, generator=gen, dtype=DTYPE) * 0.5)
        self.b = torch.nn.Parameter(torch.rand(2, 3, generator=gen, dtype=DTYPE) * 0.5)
        self.c = torch.nn.Parameter(torch.tensor([0.7, -0.3], dtype=DTYPE))

    def f(self, t, y):
        return torch.tanh(y @ self.a.T) - 0.1 * y * (1 + t)

    def g(self, t, y):
        if self.noise_type == "diagonal":
            return self.b[:, 0] * torch.sin(y) + 0.2
        if self.noise_type == "scalar":
            return (self.b[:, 0] * torch.cos(y) + 0.1).unsqueeze(-1)
        if self.noise_type == "additive":
            return (self.b * (1 + t)).expand(y.shape[0], 2, 3)
        return self.b * torch.cos(y).unsqueeze(-1)  # general

    def h(self, t, y):
        return self.c * y - 0.2 * t

    def term(self, bm, prior: bool = False) -> nde.SDETerm:
        return nde.SDETerm(self.f, self.g, self.noise_type, self.sde_type, bm, self.h if prior else None)


def bm_shape(noise: str) -> tuple[int, int]:
    """The Brownian motion's shape for ``SmallSDE`` with ``noise``."""
    return (BATCH, {"diagonal": 2, "scalar": 1, "additive": 3, "general": 3}[noise])


def small_y0() -> torch.Tensor:
    return torch.linspace(-0.5, 0.8, 2 * BATCH, dtype=DTYPE).reshape(BATCH, 2)


def brownian(noise: str, seed: int) -> nde.BrownianInterval:
    """A Brownian interval on [0, 1] for ``SmallSDE`` with ``noise``, with Lévy area."""
    return nde.BrownianInterval(0.0, 1.0, bm_shape(noise), dtype=DTYPE, seed=seed, levy_area=True)


def relative_error(got, want) -> float:
    """The largest relative 2-norm error over pairs of tensors."""
    return max(float((g - w).norm() / w.norm()) for g, w in zip(got, want))


class LinearBrownian(nde.brownian.AbstractBrownian):
    """A Brownian path drawn on a uniform grid of ``2**levels`` steps over ``[0, 1]`` and linear
    in between (with its time integral, so the space-time Lévy area follows too). It is
    continuous in time: two libraries whose step ends differ in the last bit of a float see
    increments that agree to rounding, which a ``BrownianInterval`` does not promise (inside a
    leaf it bridges with draws seeded by the time's bits). Fine-scale steps see a smooth path,
    the same for both libraries: an oracle comparison's path, not a convergence test's."""

    def __init__(self, shape: tuple[int, ...], seed: int, levels: int = 14):
        self.t0, self.t1, self.n = 0.0, 1.0, 2**levels
        self._init(shape, DTYPE, None, True)
        gen = torch.Generator().manual_seed(seed)
        steps = torch.randn((self.n, *shape), generator=gen, dtype=DTYPE) / self.n**0.5
        self.w = torch.cat([torch.zeros((1, *shape), dtype=DTYPE), steps.cumsum(0)])
        # A at the grid points: the trapezoidal rule is exact for a piecewise linear W
        pieces = 0.5 * (self.w[1:] + self.w[:-1]) / self.n
        self.a = torch.cat([torch.zeros((1, *shape), dtype=DTYPE), pieces.cumsum(0)])

    def _point(self, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        x = t * self.n
        k = min(int(x), self.n - 1)
        theta = x - k  # in [0, 1]
        w0, w1 = self.w[k], self.w[k + 1]
        w = w0 + theta * (w1 - w0)
        a = self.a[k] + (theta / self.n) * 0.5 * (w0 + w)
        return w, a
