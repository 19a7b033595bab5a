"""An SDE term bound to its problem: the diffusion in the loop's layout, the Brownian motion and
the product of the diffusion with a Brownian increment, for each noise type.

:func:`bind_sde` runs once per solve, after ``Problem.build`` (the drift is the problem's vector
field). It checks what the SDE solvers need (one tensor state, the global layout, forward time),
evaluates the diffusion once at the initial point to check its shape and learn the number of
Brownian motions, and makes the Brownian motion when the term has none: a stored
:class:`~torchnde.BrownianPath` for fixed steps, a :class:`~torchnde.BrownianInterval` over the
solve's span for adaptive steps (which refuse a path that depends on the order of the queries). The result hangs on the
problem (``Problem.sde``) and on the loop's vector field (``func.sde``), where the stochastic
solvers read it: the ODE hot path is untouched. For the KL channel of a latent SDE
(:mod:`.kl`) under diagonal noise, the Brownian motion has the user's shape and is padded with
a zero entry for the channel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ..brownian import AbstractBrownian, BrownianInterval, BrownianPath
from ..terms import SDETerm
from .kl import KLTerm, PaddedBrownian

__all__ = ["BoundSDE", "bind_sde"]


class BoundSDE:
    """The SDE as the stochastic solvers see it (global layout, forward time ``s = t``).

    - ``diffusion(s, y)``: ``g`` at the host time ``s`` (evaluations counted with the drift's);
    - ``increment(s, h)``: ``W(s + h) - W(s)``; ``levy(s, h)``: ``(W, H)`` over the same step;
    - ``prod(g, dw)``: :math:`g\\,dW` for the noise type;
    - ``noise``, ``calculus``, ``brownian``, ``m`` (Brownian motions per row; the state size for
      diagonal noise);
    - ``g``: the term's own diffusion ``g(t, y)`` (``t`` a tensor), uncounted, for the gradient
      strategies' backward passes; :meth:`counted` rebinds the counted one to another counter.
    """

    __slots__ = ("brownian", "calculus", "diffusion", "g", "m", "noise", "prod")

    def __init__(self, g: Callable, counter: list[int], dtype: torch.dtype, device: torch.device,
                 noise: str, calculus: str, brownian: AbstractBrownian, m: int):  # fmt: skip
        self.g, self.noise, self.calculus, self.brownian, self.m = g, noise, calculus, brownian, m
        self.diffusion = _counting(g, counter, dtype, device)
        self.prod = _PRODUCTS[noise]

    def counted(self, counter: list[int], dtype: torch.dtype, device: torch.device) -> BoundSDE:
        """The same SDE with its diffusion's evaluations counted in ``counter``."""
        return BoundSDE(self.g, counter, dtype, device, self.noise, self.calculus, self.brownian, self.m)

    def increment(self, s: float, h: float) -> torch.Tensor:
        return self.brownian.increment(s, s + h)

    def levy(self, s: float, h: float) -> tuple[torch.Tensor, torch.Tensor]:
        return self.brownian.levy(s, s + h)


def _diagonal(g: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
    return g * dw


def _scalar(g: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
    return g.squeeze(-1) * dw  # [*lead, d] * [*lead, 1]


def _matrix(g: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
    return torch.matmul(g, dw.unsqueeze(-1)).squeeze(-1)


_PRODUCTS = {"diagonal": _diagonal, "scalar": _scalar, "additive": _matrix, "general": _matrix}


def bind_sde(term: SDETerm, problem: Any, solver: Any, ctrl: Any) -> BoundSDE:
    """Check the SDE against the problem and solver, and bind its diffusion and noise."""
    if problem.is_tuple:
        raise ValueError(
            "SDE terms take a tensor state, not a tuple yet: concatenate the parts into one tensor"
        )
    if problem.per_sample:
        raise ValueError("SDE terms do not support per_sample=True yet: solve the batch in the global layout")
    if problem.direction < 0:
        raise ValueError("SDE terms are solved forwards in time: pass increasing t_eval")
    y0 = problem.y0
    dtype, device, counter = problem.dtype, problem.device, problem.nfe_counter
    diffusion = _counting(term.diffusion, counter, dtype, device)
    s0, s1 = problem.s_host[0], problem.s_host[-1]
    g0 = diffusion(s0, y0)
    shape = _noise_shape(term.noise, y0, g0, dtype)
    pad = isinstance(term, KLTerm) and term.noise == "diagonal"  # the KL channel has no noise
    if pad:
        shape = (*shape[:-1], shape[-1] - 1)
    brownian = term.brownian
    levy = bool(getattr(solver, "levy_area", False))
    adaptive = bool(getattr(ctrl, "adaptive", False))  # ctrl None: fixed steps
    if brownian is None and adaptive:  # steps of any size, rejected ones revisited
        brownian = BrownianInterval(s0, s1, shape, dtype=dtype, device=device, levy_area=levy)
    elif brownian is None:
        brownian = BrownianPath(s0, shape, dtype=dtype, device=device, levy_area=levy)
    else:
        _check_brownian(brownian, shape, dtype, device, s0, s1, levy, solver)
        if adaptive and not brownian.any_order:
            raise ValueError(
                f"adaptive steps query the Brownian motion at times chosen as the solve goes and revisit "
                f"rejected steps, which needs a path that is the same in any order of queries: build a "
                f"BrownianInterval(t0, t1, {tuple(shape)}, seed=...) instead of a {type(brownian).__name__}, "
                "or take fixed steps with dt=..."
            )
    if pad:
        brownian = PaddedBrownian(brownian)
    m = shape[-1] if term.noise != "diagonal" else math.prod(shape)
    return BoundSDE(term.diffusion, counter, dtype, device, term.noise, term.calculus, brownian, m)


def _counting(g: Callable, counter: list[int], dtype: torch.dtype, device: torch.device) -> Callable:
    """``g`` at a host (or tensor) time, its evaluations counted in ``counter``."""
    scalar = torch.scalar_tensor

    def diffusion(s: Any, y: torch.Tensor) -> torch.Tensor:
        counter[0] += 1
        t = s.to(dtype) if isinstance(s, torch.Tensor) else scalar(s, dtype=dtype, device=device)
        return g(t, y)

    return diffusion


def _noise_shape(noise: str, y0: torch.Tensor, g0: Any, dtype: torch.dtype) -> tuple[int, ...]:
    """The Brownian motion's shape, after checking the diffusion's output at the initial point."""
    if not isinstance(g0, torch.Tensor):
        raise TypeError(f"the diffusion g(t, y) must return a tensor, got {type(g0).__name__}")
    if g0.dtype != dtype:
        raise TypeError(f"the diffusion returned dtype {g0.dtype} but y is {dtype}: cast inside g")
    y_shape = tuple(y0.shape)
    got = tuple(g0.shape)
    if noise == "diagonal":
        if got != y_shape:
            raise ValueError(
                f"diagonal noise: g(t, y) must be shaped like y {y_shape}, got {got}; for m Brownian "
                "motions use noise='general' with g of shape (*y.shape, m)"
            )
        return y_shape
    if not y_shape:
        raise ValueError(f"{noise} noise needs a state with at least one axis (y is 0-d): reshape y0 to (1,)")
    want = "(*y.shape, 1)" if noise == "scalar" else "(*y.shape, m)"
    if got[:-1] != y_shape or len(got) != len(y_shape) + 1 or (noise == "scalar" and got[-1] != 1):
        raise ValueError(
            f"{noise} noise: g(t, y) must have shape {want} with y of shape {y_shape}, got {got}"
        )
    return (*y_shape[:-1], got[-1])


def _check_brownian(bm: AbstractBrownian, shape: tuple, dtype: torch.dtype, device: torch.device,
                    s0: float, s1: float, levy: bool, solver: Any) -> None:  # fmt: skip
    if tuple(bm.shape) != tuple(shape):
        raise ValueError(f"the Brownian motion has shape {tuple(bm.shape)} but this SDE needs {tuple(shape)}")
    if bm.dtype != dtype or bm.device != device:
        raise TypeError(
            f"the Brownian motion is {bm.dtype} on {bm.device} but the state is {dtype} on {device}: "
            "build it with the state's dtype and device"
        )
    if not (bm.t0 <= s0 and s1 <= bm.t1):
        raise ValueError(f"the Brownian motion covers [{bm.t0}, {bm.t1}] but the solve spans [{s0}, {s1}]")
    if levy and not bm.levy_area:
        raise ValueError(
            f"solver {solver.name!r} needs the space-time Lévy area: build the Brownian motion with "
            "levy_area=True"
        )
