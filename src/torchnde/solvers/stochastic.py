r"""Stochastic solvers: fixed-step methods for :math:`dy = f(t, y)\,dt + g(t, y)\,dW`.

Every method here steps an :class:`~torchnde.SDETerm` in the common step contract
(:class:`~torchnde.solvers.AbstractSolver`): the loop hands over ``func``, the drift in the loop's
layout, and ``func.sde`` (:class:`torchnde._loop.sde.BoundSDE`) carries the diffusion, the
Brownian motion and the product :math:`g\,\Delta W` for the noise type. With
:math:`h` the step and :math:`\Delta W = W(t_0 + h) - W(t_0)`:

| solver | calculus | noise | strong order |
|---|---|---|---|
| ``euler`` (Euler–Maruyama) | Itô | all | 0.5; 1 for additive noise |
| ``milstein`` | Itô, Stratonovich | diagonal, scalar, additive | 1 |
| ``srk`` (Rößler SRA1/SRI2) | Itô | additive, diagonal, scalar | 1.5 |
| ``heun``, ``midpoint``, ``euler_heun`` | Stratonovich | all | 1 (commutative noise); 0.5 general |
| ``reversible_heun`` | Stratonovich | all | 1 (commutative noise); 0.5 general |

Diagonal, scalar and additive noise are commutative, so the Stratonovich Runge–Kutta methods
reach strong order 1 there; general (non-commutative) noise limits every method without Lévy
area to order 0.5. A solver refuses a noise type or calculus it does not support; ``solve`` then
names the solvers that do. Between steps the solution is interpolated linearly (as torchsde
does). No method here has an embedded error estimate: with ``dt=`` (``ConstantStep``) they take
fixed steps; with ``rtol=``/``atol=`` (a ``PIDController``) ``solve`` wraps them in
:class:`~torchnde.StepDoubling`, whose error estimate is one step against two half steps on the
same Brownian path, of order strong order + 1/2 (:mod:`torchnde.solvers.step_doubling`; not
``reversible_heun``, which steps on a fixed grid).

In the per-sample layout (``per_sample=True``) ``t0`` and ``dt`` are ``[B]`` tensors: the times
stay float64 and the arithmetic on the state takes the step as a ``[B, 1, ..., 1]`` column
(:func:`step_columns`); a sample that has finished stands still with ``dt = 0``, and the methods
that divide by the step (``srk``, the derivative-free ``milstein``, the linear interpolation)
divide by 1 there, so its (discarded) step stays finite and its gradient zero. Every method here
runs per sample except ``reversible_heun``, whose exact reverse needs one grid for the batch.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from ..terms import SDETerm
from .base import AbstractSolver, Func, StepResult
from .tableau import DensePolynomial

__all__ = [
    "AbstractSDESolver",
    "EulerHeun",
    "EulerMaruyama",
    "Milstein",
    "ReversibleHeunState",
    "StochasticHeun",
    "StochasticMidpoint",
    "StochasticReversibleHeun",
    "along_itself",
    "axpy",
    "step_columns",
]

_LINEAR = DensePolynomial(np.array([[1.0]]), order=1)
_ALL_NOISES = ("diagonal", "additive", "scalar", "general")


class AbstractSDESolver(AbstractSolver):
    """The base of the stochastic solvers. Besides the ODE solver attributes each declares:

    - ``noises``: the noise types it integrates; ``calculi``: ``"ito"`` and/or ``"stratonovich"``;
    - ``strong_orders``: the strong order of convergence by noise type
      (:meth:`strong_order`), and ``weak_order``;
    - ``levy_area``: whether it needs the space-time Lévy area from the Brownian motion.

    ``order`` is the method's order on an ODE (zero diffusion).
    """

    terms: ClassVar[tuple[type, ...]] = (SDETerm,)
    noises: ClassVar[tuple[str, ...]] = _ALL_NOISES
    calculi: ClassVar[tuple[str, ...]] = ("ito",)
    strong_orders: ClassVar[dict[str, float]]
    weak_order: ClassVar[float] = 1.0
    levy_area: ClassVar[bool] = False
    dense_order: ClassVar[int] = 1

    @classmethod
    def strong_order(cls, noise: str) -> float:
        """The strong order of convergence for the noise type ``noise``."""
        return cls.strong_orders[noise]

    @classmethod
    def unsupported(cls, term: Any) -> str | None:
        parts = []
        if term.noise not in cls.noises:
            parts.append(f"{term.noise} noise")
        if term.calculus not in cls.calculi:
            parts.append(
                f"the {term.calculus} calculus"
                + (
                    " (use calculus='ito')"
                    if term.calculus == "stratonovich" and cls.calculi == ("ito",)
                    else ""
                )
            )
        return " or ".join(parts) or None

    @property
    def needs_end_derivative(self) -> bool:
        return False

    def dense_stages(self, func: Func, t0: Any, y0: torch.Tensor, dt: Any, result: StepResult,
                     f1: torch.Tensor) -> torch.Tensor:  # fmt: skip
        return ((result.y1 - y0) / step_columns(dt, y0)[1]).unsqueeze(-1)  # linear interpolation

    @property
    def dense_polynomial(self) -> DensePolynomial:
        return _LINEAR


def step_columns(dt: Any, y: torch.Tensor) -> tuple[Any, Any]:
    """``(h, divisor)``: the step as the arithmetic on the state ``y`` takes it, and the same
    for divisions. Globally both are the host float ``dt``; per sample (``dt`` a ``[B]``
    tensor) a ``[B, 1, ..., 1]`` column in the state's dtype, the divisor with 1 where a
    finished sample stands still (``dt = 0``; its increments are zero, so what it divides is)."""
    if not isinstance(dt, torch.Tensor):
        return dt, dt
    h = dt.to(y.dtype).view(-1, *([1] * (y.ndim - 1)))
    return h, torch.where(h == 0, 1.0, h)


def axpy(y: torch.Tensor, x: torch.Tensor, a: Any) -> torch.Tensor:
    """``y + a x`` for a float ``a`` or a per-sample column ``a`` (:func:`step_columns`)."""
    return torch.addcmul(y, x, a) if isinstance(a, torch.Tensor) else torch.add(y, x, alpha=a)


class EulerMaruyama(AbstractSDESolver):
    r"""The Euler–Maruyama method, :math:`y_1 = y_0 + f(t_0, y_0)\,h + g(t_0, y_0)\,\Delta W`.

    Itô, every noise type; strong order 0.5 (1 for additive noise), weak order 1. One drift and
    one diffusion evaluation per step.

    ??? cite "Reference"
        G. Maruyama, Continuous Markov processes and stochastic equations, *Rend. Circ. Mat.
        Palermo* 4 (1955) 48–90; P. E. Kloeden, E. Platen, *Numerical Solution of Stochastic
        Differential Equations*, Springer 1992, section 10.2.

    ```python
    import torch, torchnde as nde
    term = nde.SDETerm(lambda t, y: -y, lambda t, y: 0.1 * torch.ones_like(y))
    sol = nde.solve(term, torch.ones(8), torch.linspace(0, 1, 3), solver=nde.EulerMaruyama(), dt=0.05)
    ```
    """

    name: ClassVar[str] = "euler"
    order: ClassVar[int] = 1
    strong_orders: ClassVar[dict[str, float]] = {
        "diagonal": 0.5,
        "scalar": 0.5,
        "general": 0.5,
        "additive": 1.0,
    }

    def step(self, func: Func, t0: Any, y0: torch.Tensor, f0: torch.Tensor, dt: Any, need_error: bool = False,
             state: Any = None) -> StepResult:  # fmt: skip
        sde = func.sde  # type: ignore[attr-defined]
        dw = sde.increment(t0, dt)
        h, _ = step_columns(dt, y0)
        y1 = axpy(y0, f0, h) + sde.prod(sde.diffusion(t0, y0), dw)
        return StepResult(y1, (), (), None)


def _derivative_along(sde: Any, t0: Any, y0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(g, L g)`` at ``(t0, y0)``: the diffusion and its derivative along itself,
    :math:`(\partial g / \partial y)\,g` (diagonal noise: :math:`g_i\,\partial g_i/\partial y_i`;
    scalar noise: the Jacobian times the one column), by autograd. The graph is kept when autograd
    records and something the diffusion reads requires a gradient, so gradients flow through the
    correction term; otherwise both come back without a graph."""
    if torch.is_grad_enabled() and y0.requires_grad:
        return along_itself(sde.noise, y0, sde.diffusion(t0, y0), keep=True)
    if torch.is_grad_enabled():
        g = sde.diffusion(t0, y0)
        if g.requires_grad:  # parameters of g are differentiated: keep their graph
            with torch.enable_grad():
                y = y0.detach().requires_grad_(True)
                return g, along_itself(sde.noise, y, sde.diffusion(t0, y), keep=True)[1]
    with torch.enable_grad():
        y = y0.detach().requires_grad_(True)
        g, lg = along_itself(sde.noise, y, sde.diffusion(t0, y), keep=False)
    return g.detach(), lg


def along_itself(
    noise: str, y: torch.Tensor, g: torch.Tensor, keep: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(g, (dg/dy) g)`` with ``g = g(t, y)`` on a graph from ``y``, for diagonal noise (where
    ``g_i`` is taken to depend on ``y_i`` only, as Milstein's method assumes) and scalar noise;
    ``keep`` keeps the graph of the result (``create_graph``)."""
    lg = None
    if g.requires_grad:
        if noise == "diagonal":  # the Jacobian is diagonal: J^T g = J g
            (lg,) = torch.autograd.grad(g, y, g, create_graph=keep, allow_unused=True)
        else:  # scalar: J g by the double-backward trick (J^T u is linear in u)
            col = g.squeeze(-1)
            # u = 0 made from col rather than a fresh leaf: autograd prunes its graph walk at the
            # inputs' depth, so the second grad does not visit the whole solve behind y
            u = col * 0.0
            (vjp,) = torch.autograd.grad(col, y, u, create_graph=True, allow_unused=True)
            if vjp is not None:
                (lg,) = torch.autograd.grad(vjp, u, col, create_graph=keep, allow_unused=True)
    if lg is None:  # g does not depend on y
        lg = torch.zeros(y.shape, dtype=g.dtype, device=g.device)
    return g, lg


class Milstein(AbstractSDESolver):
    r"""Milstein's method: Euler–Maruyama plus the term that lifts the strong order to 1,

    .. math:: y_1 = y_0 + f\,h + g\,\Delta W + \tfrac12\,(\partial_y g)\,g\,(\Delta W^2 - h)
              \quad\text{(Itô; Stratonovich drops the } -h\text{)},

    for diagonal, scalar and additive noise (commutative noise: no Lévy area needed). The
    derivative :math:`(\partial_y g)\,g` comes from autograd (one vector-Jacobian product;
    scalar noise two). ``derivative_free=True`` replaces it by a difference (Kloeden & Platen's
    Runge–Kutta forms, section 11.1): Itô, :math:`\tfrac12(g(\bar y) - g(y_0))(\Delta W^2 -
    h)/\sqrt h` with :math:`\bar y = y_0 + f h + g\sqrt h`; Stratonovich,
    :math:`\tfrac12(g(\bar y) - g(y_0))\,\Delta W` with :math:`\bar y = y_0 + f h + g\,\Delta
    W` (a support value of :math:`\sqrt h` would leave a bias against the mean of
    :math:`\Delta W^2`): one more diffusion evaluation, no autograd. For
    additive noise the correction vanishes and the method is Euler–Maruyama.

    ??? cite "Reference"
        G. N. Mil'shtein, Approximate integration of stochastic differential equations, *Theory
        Probab. Appl.* 19 (1975) 557–562; Kloeden & Platen 1992, sections 10.3 and 11.1.

    ```python
    import torch, torchnde as nde
    term = nde.SDETerm(lambda t, y: 0.5 * y, lambda t, y: 0.3 * y, calculus="stratonovich")
    y0 = torch.ones(16, 1, dtype=torch.float64)
    sol = nde.solve(term, y0, torch.linspace(0, 1, 2), solver=nde.Milstein(derivative_free=True), dt=0.01)
    ```
    """

    name: ClassVar[str] = "milstein"
    order: ClassVar[int] = 1
    noises: ClassVar[tuple[str, ...]] = ("diagonal", "scalar", "additive")
    calculi: ClassVar[tuple[str, ...]] = ("ito", "stratonovich")
    strong_orders: ClassVar[dict[str, float]] = {"diagonal": 1.0, "scalar": 1.0, "additive": 1.0}

    def __init__(self, derivative_free: bool = False):
        if not isinstance(derivative_free, bool):
            raise TypeError(f"derivative_free must be True or False, got {derivative_free!r}")
        self.derivative_free = derivative_free

    def step(self, func: Func, t0: Any, y0: torch.Tensor, f0: torch.Tensor, dt: Any, need_error: bool = False,
             state: Any = None) -> StepResult:  # fmt: skip
        sde = func.sde  # type: ignore[attr-defined]
        dw = sde.increment(t0, dt)
        h, divisor = step_columns(dt, y0)
        drift = axpy(y0, f0, h)
        if sde.noise == "additive":
            return StepResult(drift + sde.prod(sde.diffusion(t0, y0), dw), (), (), None)
        if not self.derivative_free:
            g, lg = _derivative_along(sde, t0, y0)
            sq = dw * dw if sde.calculus == "stratonovich" else dw * dw - h
            return StepResult(drift + sde.prod(g, dw) + 0.5 * lg * sq, (), (), None)
        g = sde.diffusion(t0, y0)
        scalar = sde.noise == "scalar"
        col = g.squeeze(-1) if scalar else g
        if sde.calculus == "ito":  # (g(y + f h + g sqrt h) - g) / sqrt(h) ~ g' g, times (dW^2 - h) / 2
            diff = sde.diffusion(t0, axpy(drift, col, h**0.5)) - g
            weight = (dw * dw - h) / (2 * divisor**0.5)
        else:  # (g(y + f h + g dW) - g) dW / 2 ~ g' g dW^2 / 2, with no bias from the mean of dW^2
            diff = sde.diffusion(t0, drift + col * dw) - g
            weight = 0.5 * dw
        y1 = drift + col * dw + (diff.squeeze(-1) if scalar else diff) * weight
        return StepResult(y1, (), (), None)

    def __repr__(self) -> str:
        return f"Milstein(derivative_free={self.derivative_free})"


class _Stratonovich(AbstractSDESolver):
    """The Stratonovich Runge–Kutta methods: strong order 1 for commutative noise (diagonal,
    scalar, additive), 0.5 for general noise."""

    calculi: ClassVar[tuple[str, ...]] = ("stratonovich",)
    strong_orders: ClassVar[dict[str, float]] = {
        "diagonal": 1.0,
        "scalar": 1.0,
        "additive": 1.0,
        "general": 0.5,
    }


class StochasticHeun(_Stratonovich):
    r"""Heun's method for Stratonovich SDEs (the stochastic trapezoidal rule):

    .. math:: \tilde y = y_0 + f_0 h + g_0\,\Delta W,\qquad
              y_1 = y_0 + \tfrac h2\,(f_0 + f(t_1, \tilde y)) + \tfrac12\,(g_0 + g(t_1, \tilde y))\,\Delta W.

    Strong order 1 for commutative noise (diagonal, scalar, additive), 0.5 for general noise;
    second order on an ODE. Two drift and two diffusion evaluations per step.

    ??? cite "Reference"
        W. Rümelin, Numerical treatment of stochastic differential equations, *SIAM J. Numer.
        Anal.* 19 (1982) 604–613.
    """

    name: ClassVar[str] = "heun"
    order: ClassVar[int] = 2

    def step(self, func: Func, t0: Any, y0: torch.Tensor, f0: torch.Tensor, dt: Any, need_error: bool = False,
             state: Any = None) -> StepResult:  # fmt: skip
        sde = func.sde  # type: ignore[attr-defined]
        dw = sde.increment(t0, dt)
        h, _ = step_columns(dt, y0)
        g0 = sde.diffusion(t0, y0)
        y_tilde = axpy(y0, f0, h) + sde.prod(g0, dw)
        t1 = t0 + dt
        f1, g1 = func(t1, y_tilde), sde.diffusion(t1, y_tilde)
        y1 = axpy(y0, f0 + f1, 0.5 * h) + 0.5 * sde.prod(g0 + g1, dw)
        return StepResult(y1, (), (), None)


class StochasticMidpoint(_Stratonovich):
    r"""The midpoint method for Stratonovich SDEs:

    .. math:: \tilde y = y_0 + \tfrac h2 f_0 + \tfrac12 g_0\,\Delta W,\qquad
              y_1 = y_0 + f(t_{1/2}, \tilde y)\,h + g(t_{1/2}, \tilde y)\,\Delta W.

    Strong order 1 for commutative noise, 0.5 for general noise; second order on an ODE.

    ??? cite "Reference"
        K. Burrage, P. M. Burrage, T. Tian, Numerical methods for strong solutions of stochastic
        differential equations: an overview, *Proc. R. Soc. Lond. A* 460 (2004) 373–402.
    """

    name: ClassVar[str] = "midpoint"
    order: ClassVar[int] = 2

    def step(self, func: Func, t0: Any, y0: torch.Tensor, f0: torch.Tensor, dt: Any, need_error: bool = False,
             state: Any = None) -> StepResult:  # fmt: skip
        sde = func.sde  # type: ignore[attr-defined]
        dw = sde.increment(t0, dt)
        h, _ = step_columns(dt, y0)
        y_half = axpy(y0, f0, 0.5 * h) + 0.5 * sde.prod(sde.diffusion(t0, y0), dw)
        t_half = t0 + 0.5 * dt
        y1 = axpy(y0, func(t_half, y_half), h) + sde.prod(sde.diffusion(t_half, y_half), dw)
        return StepResult(y1, (), (), None)


class EulerHeun(_Stratonovich):
    r"""The Euler–Heun method for Stratonovich SDEs: Euler in the drift, Heun in the diffusion,

    .. math:: \bar y = y_0 + g_0\,\Delta W,\qquad
              y_1 = y_0 + f_0 h + \tfrac12\,(g_0 + g(t_1, \bar y))\,\Delta W.

    Strong order 1 for commutative noise, 0.5 for general noise; one drift and two diffusion
    evaluations per step.

    ??? cite "Reference"
        Kloeden & Platen 1992, section 11.1 (the Stratonovich Heun scheme with an Euler drift);
        P. Kidger, J. Foster, X. Li, T. Lyons, Efficient and accurate gradients for neural SDEs,
        *NeurIPS* 2021.
    """

    name: ClassVar[str] = "euler_heun"
    order: ClassVar[int] = 1

    def step(self, func: Func, t0: Any, y0: torch.Tensor, f0: torch.Tensor, dt: Any, need_error: bool = False,
             state: Any = None) -> StepResult:  # fmt: skip
        sde = func.sde  # type: ignore[attr-defined]
        dw = sde.increment(t0, dt)
        g0 = sde.diffusion(t0, y0)
        y_bar = y0 + sde.prod(g0, dw)
        h, _ = step_columns(dt, y0)
        y1 = axpy(y0, f0, h) + 0.5 * sde.prod(g0 + sde.diffusion(t0 + dt, y_bar), dw)
        return StepResult(y1, (), (), None)


class ReversibleHeunState(NamedTuple):
    """The stochastic reversible Heun method's state beside ``y``: its second state ``z`` and the
    drift and diffusion there."""

    z: torch.Tensor
    fz: torch.Tensor
    gz: torch.Tensor


class StochasticReversibleHeun(_Stratonovich):
    r"""The reversible Heun method for Stratonovich SDEs (Kidger, Foster, Li & Lyons 2021, eq. 4):

    .. math:: z_1 = 2y_0 - z_0 + f(t_0, z_0)\,h + g(t_0, z_0)\,\Delta W,

    .. math:: y_1 = y_0 + \tfrac h2\,(f(t_0, z_0) + f(t_1, z_1)) + \tfrac12\,(g(t_0, z_0) + g(t_1, z_1))\,\Delta W,

    one drift and one diffusion evaluation per step (those at :math:`z_1` are reused). Strong order
    0.5 for general noise; the paper proves order 1 for additive noise, and order 1 is also what
    the convergence tests measure for diagonal and scalar (commutative) noise. The step is
    algebraically reversible (:meth:`reverse_step`: the same map with :math:`-h`,
    :math:`-\Delta W`), so ``gradient="reversible"`` gives the exact gradient of the
    discretisation at O(1) memory: the backward pass rebuilds each step's start from its end on
    the same Brownian increment and differentiates that step alone. Like the ODE method it steps
    onto the output times (they join the step grid) rather than interpolating between steps.

    ??? cite "Reference"
        P. Kidger, J. Foster, X. Li, T. Lyons, Efficient and accurate gradients for neural SDEs,
        *NeurIPS* 2021, section 3.
    """

    name: ClassVar[str] = "reversible_heun"
    order: ClassVar[int] = 2
    reversible: ClassVar[bool] = True
    supports_per_sample: ClassVar[bool] = False  # its exact reverse steps one grid for the batch

    @property
    def fsal(self) -> bool:
        return True  # the next step reads f(t, z) from its state; f0 only starts the method

    @property
    def f1_exact(self) -> bool:
        return False  # StepResult.f1 is f(t1, z1), not f(t1, y1)

    def step(self, func: Func, t0: Any, y0: torch.Tensor, f0: torch.Tensor, dt: Any, need_error: bool = False,
             state: ReversibleHeunState | None = None) -> StepResult:  # fmt: skip
        """One step; ``state=None`` starts the method (:math:`z_0 = y_0`)."""
        sde = func.sde  # type: ignore[attr-defined]
        z, fz, gz = (y0, f0, sde.diffusion(t0, y0)) if state is None else state
        dw = sde.increment(t0, dt)
        z1 = torch.add(2 * y0 - z, fz, alpha=dt) + sde.prod(gz, dw)
        t1 = t0 + dt
        f1, g1 = func(t1, z1), sde.diffusion(t1, z1)
        y1 = torch.add(y0, fz + f1, alpha=0.5 * dt) + 0.5 * sde.prod(gz + g1, dw)
        # f1 = f(t1, z1) is not f(t1, y1), but handing it on spares the loop an evaluation of the
        # drift at y1, which the next step would not read (it reads its state)
        return StepResult(y1, (), (), f1, state=ReversibleHeunState(z1, f1, g1))

    def reverse_step(self, func: Func, t1: Any, y1: torch.Tensor, state: ReversibleHeunState,
                     dt: Any, t0: Any = None) -> tuple[torch.Tensor, ReversibleHeunState]:  # fmt: skip
        """Undo the step of size ``dt`` that ended at ``(t1, y1)`` with ``state``: the previous
        ``(y0, state0)`` at ``t0`` (default ``t1 - dt``), on the same Brownian increment."""
        sde = func.sde  # type: ignore[attr-defined]
        z1, f1, g1 = state
        t0 = t1 - dt if t0 is None else t0
        dw = sde.increment(t0, dt)
        z0 = torch.add(2 * y1 - z1, f1, alpha=-dt) - sde.prod(g1, dw)
        f0, g0 = func(t0, z0), sde.diffusion(t0, z0)
        y0 = torch.add(y1, f0 + f1, alpha=-0.5 * dt) - 0.5 * sde.prod(g0 + g1, dw)
        return y0, ReversibleHeunState(z0, f0, g0)

    def restart(self, func: Func, t: Any, state: ReversibleHeunState) -> ReversibleHeunState:
        """``state`` with its drift evaluated again at ``t``, after a step landing on a jump of
        the drift (``t`` its far side)."""
        return ReversibleHeunState(state.z, func(t, state.z), state.gz)
