r"""The KL path term of a latent SDE (``SDETerm(..., prior_drift=h)``), accumulated as one more
state channel.

The solve integrates the SDE over :math:`[y, \ell]`: the last axis of ``y`` grows by one entry
whose drift is :math:`\tfrac12\lVert u\rVert^2` (summed over the last axis; :math:`u = (f - h)/g`
for diagonal noise, :math:`u = g^+(f - h)` otherwise, :math:`g^+` the pseudo-inverse) and whose
diffusion is zero. So every solver, every gradient strategy and the stochastic adjoint treat it
like the rest of the state, and the stages of a method see it exactly as torchsde's
``logqp=True`` does (its ``SDELogqp``). For diagonal noise the Brownian motion keeps the user's
shape: :class:`PaddedBrownian` appends a zero increment for the new channel, whose diffusion is
zero anyway.

A division by a diffusion entry below ``1e-7`` in magnitude divides by ``±1e-7`` instead (zero
counts as positive), as torchsde's ``stable_division`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..brownian import AbstractBrownian
from ..terms import SDETerm

__all__ = ["EPSILON", "KLTerm", "PaddedBrownian", "split_kl", "with_kl"]

EPSILON = 1e-7


class KLTerm(SDETerm):
    """The SDE over ``[y, l]`` (see the module docstring); ``base`` is the user's term, whose
    Brownian motion (or the default one) has the user's shape."""

    __slots__ = ("base",)

    def __init__(self, base: SDETerm):
        super().__init__(
            _drift(base), _diffusion(base.diffusion, base.noise), base.noise, base.calculus, base.brownian
        )
        self.base = base

    @property
    def owner(self) -> Any:
        """The user's modules, or (for discovery, which evaluates at the augmented state) the
        augmented drift and diffusion, which call the user's drift, diffusion and prior."""
        base = self.base.owner
        return base if isinstance(base, torch.nn.Module) else SDETerm.owner.fget(self)  # type: ignore[attr-defined]


def with_kl(term: SDETerm, y0: Any) -> tuple[KLTerm, torch.Tensor]:
    """The term over ``[y, l]`` and its initial state ``[y0, 0]`` (differentiable in ``y0``)."""
    if not isinstance(y0, torch.Tensor):
        raise ValueError("SDETerm(prior_drift=...) takes a tensor state, not a tuple")
    if y0.ndim == 0:
        raise ValueError("SDETerm(prior_drift=...) needs a state with at least one axis: reshape y0 to (1,)")
    zero = torch.zeros((*y0.shape[:-1], 1), dtype=y0.dtype, device=y0.device)
    return KLTerm(term), torch.cat([y0, zero], -1)


def split_kl(ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, l)`` from the augmented outputs ``[n, *lead, d + 1]``."""
    return ys[..., :-1], ys[..., -1]


def _stable(g: torch.Tensor) -> torch.Tensor:
    small = g.detach().abs() <= EPSILON
    return torch.where(small, torch.where(g < 0, -EPSILON, EPSILON).to(g.dtype), g)


def _drift(term: SDETerm) -> Callable[[Any, torch.Tensor], torch.Tensor]:
    f, g, h, noise = term.drift, term.diffusion, term.prior_drift, term.noise

    def drift(t: Any, ya: torch.Tensor) -> torch.Tensor:
        y = ya[..., :-1]
        fy, gy, hy = f(t, y), g(t, y), h(t, y)
        if noise == "diagonal":
            u = (fy - hy) / _stable(gy)
        else:  # [*lead, m, d] @ [*lead, d, 1]
            u = torch.matmul(torch.linalg.pinv(gy), (fy - hy).unsqueeze(-1)).squeeze(-1)
        rate = 0.5 * (u * u).sum(-1, keepdim=True)
        return torch.cat([fy, rate], -1)

    return drift


def _diffusion(g: Callable, noise: str) -> Callable[[Any, torch.Tensor], torch.Tensor]:
    def diffusion(t: Any, ya: torch.Tensor) -> torch.Tensor:
        gy = g(t, ya[..., :-1])
        if noise == "diagonal":
            return torch.cat([gy, gy.new_zeros((*gy.shape[:-1], 1))], -1)
        return torch.cat([gy, gy.new_zeros((*gy.shape[:-2], 1, gy.shape[-1]))], -2)

    return diffusion


class PaddedBrownian(AbstractBrownian):
    """A Brownian motion with one more entry on its last axis, always zero: the noise of the KL
    channel under diagonal noise (its diffusion is zero)."""

    def __init__(self, base: AbstractBrownian):
        self.base = base
        self.t0, self.t1 = base.t0, base.t1
        self.shape = torch.Size((*base.shape[:-1], base.shape[-1] + 1))
        self.dtype, self.device, self.levy_area = base.dtype, base.device, base.levy_area

    def _point(self, t: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        w, a = self.base._point(t)
        return _pad(w), None if a is None else _pad(a)

    def increment(self, s: Any, t: Any) -> torch.Tensor:
        """The base's increment padded (a base queried by interval only works too)."""
        return _pad(self.base.increment(s, t))

    def levy(self, s: Any, t: Any) -> tuple[torch.Tensor, torch.Tensor]:
        w, hh = self.base.levy(s, t)
        return _pad(w), _pad(hh)


def _pad(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros((*x.shape[:-1], 1))], -1)
