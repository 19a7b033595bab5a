r"""Symplectic integrators for separable systems in a pair ``(q, p)``.

The state is a 2-tuple of equally shaped tensors and ``f(t, (q, p))`` returns
``(dq/dt, dp/dt)`` with ``dq/dt`` depending on ``(t, p)`` only and ``dp/dt`` on ``(t, q)``
only: a separable Hamiltonian :math:`H = T(p) + V(q)` (``dq/dt = ∂T/∂p``,
``dp/dt = -∂V/∂q``) or a second-order system ``(x, v)`` with ``dx/dt = v``,
``dv/dt = a(t, x)``. Being symplectic, these methods keep the energy error bounded over
exponentially long times instead of letting it drift (Hairer, Lubich & Wanner, *Geometric
Numerical Integration*, 2nd ed., Springer 2006, ch. VI and VIII). They take fixed steps.

- ``leapfrog``: Störmer–Verlet in its velocity form (kick–drift–kick), second order, two
  evaluations of ``f`` per step (the last kick's force is reused by the next step).
- ``yoshida4``: Yoshida's fourth-order composition of three leapfrog steps with weights
  :math:`w_1 = 1/(2 - 2^{1/3})`, :math:`w_0 = 1 - 2 w_1` (H. Yoshida, *Construction of higher
  order symplectic integrators*, Phys. Lett. A 150, 1990; also Forest & Ruth 1990), six
  evaluations per step.

Outputs between steps use the cubic Hermite interpolant, which evaluates ``f`` at both ends of
the steps that contain output times.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from ..terms import ODETerm
from .base import AbstractSolver, Func, StepResult, stack_stages
from .tableau import DensePolynomial

__all__ = ["Leapfrog", "Yoshida4"]

# y(theta) = y0 + dt * [f0, f1, (y1 - y0)/dt] @ P @ [theta, theta^2, theta^3]
_HERMITE = DensePolynomial(
    np.array([[1.0, -2.0, 1.0], [0.0, -1.0, 1.0], [0.0, 3.0, -2.0]]),
    order=3,
)


def _scale(dt: Any, like: torch.Tensor) -> Any:
    """``dt`` as a float, or per sample as a ``[B, 1]`` column."""
    return dt.to(like.dtype).view(-1, 1) if isinstance(dt, torch.Tensor) else dt


class _Symplectic(AbstractSolver):
    """A composition of velocity-Verlet substeps with fractions ``weights`` of the step."""

    weights: ClassVar[tuple[float, ...]]
    dense_order: ClassVar[int] = 3
    separable_pair: ClassVar[bool] = True
    terms: ClassVar[tuple[type, ...]] = (ODETerm,)  # a CDE's state is one tensor, not a pair

    @property
    def fsal(self) -> bool:
        return True  # the force at the end (dp/dt) starts the next step

    @property
    def f1_exact(self) -> bool:
        return False  # its dq/dt half is the last drift's, not f(t1, y1)'s

    @property
    def evaluations_per_step(self) -> int:
        return 2 * len(self.weights)

    def step(
        self, func: Func, t0: Any, y0: torch.Tensor, f0: torch.Tensor, dt: Any, need_error: bool = True,
        state: Any = None,
    ) -> StepResult:  # fmt: skip
        n = y0.shape[-1] // 2
        q, p = y0[..., :n], y0[..., n:]
        force = f0[..., n:]
        t = t0
        velocity = force
        for w in self.weights:
            h = _scale(dt * w, y0)
            p_half = p + 0.5 * h * force
            velocity = func(t + 0.5 * dt * w, torch.cat([q, p_half], -1))[..., :n]
            q = q + h * velocity
            t = t + dt * w
            force = func(t, torch.cat([q, p_half], -1))[..., n:]
            p = p_half + 0.5 * h * force
        y1 = torch.cat([q, p], -1)
        return StepResult(y1, (), (f0,), torch.cat([velocity, force], -1))

    def dense_stages(
        self, func: Func, t0: Any, y0: torch.Tensor, dt: Any, result: StepResult, f1: torch.Tensor
    ) -> torch.Tensor:
        f0 = func(t0, y0)  # the step's f0 may carry a drift's dq/dt: evaluate it exactly
        slope = (result.y1 - y0) / _scale(dt, y0)
        return stack_stages([f0, f1, slope])

    @property
    def dense_polynomial(self) -> DensePolynomial:
        return _HERMITE


class Leapfrog(_Symplectic):
    """Störmer–Verlet (velocity Verlet, kick–drift–kick): second order, symplectic,
    time-reversible; two evaluations per step. See the module docstring for the state."""

    name: ClassVar[str] = "leapfrog"
    order: ClassVar[int] = 2
    weights: ClassVar[tuple[float, ...]] = (1.0,)


_W1 = 1.0 / (2.0 - 2.0 ** (1.0 / 3.0))
_W0 = 1.0 - 2.0 * _W1


class Yoshida4(_Symplectic):
    """Yoshida's (Forest–Ruth) fourth-order symplectic composition of three leapfrog steps,
    the middle one backwards in time; six evaluations per step."""

    name: ClassVar[str] = "yoshida4"
    order: ClassVar[int] = 4
    weights: ClassVar[tuple[float, ...]] = (_W1, _W0, _W1)
