r"""Fixed-step Adams multistep methods: Adams–Bashforth and the Adams–Bashforth–Moulton
predictor–corrector.

A ``k``-step Adams method advances with the derivatives at the last ``k`` grid points,

.. math:: y_{n+1} = y_n + h \sum_{j=0}^{k-1} \beta_j\, f_{n-j}

(Adams–Bashforth, explicit), or, for Adams–Moulton, with :math:`f_{n+1}` as well; the weights are
the integrals over one step of the Lagrange polynomials through those points, computed here in
exact rational arithmetic. The past derivatives are the solver state
(:class:`AdamsState`), so the methods run in the ordinary loop with a
:class:`~torchnde.ConstantStep`.

The schedule is torchdiffeq 0.2.5's ``explicit_adams``/``implicit_adams``: the history holds the
derivatives at up to ``max_order - 1`` grid points (the newest, ``f0``, included); while it holds
fewer than three, the step is Kutta's 3/8 rule; then the Adams–Bashforth formula of as many steps
as the history holds. The implicit method corrects that prediction with the Adams–Moulton
formula of one order more, by functional iteration (at most ``max_iters`` evaluations, until
successive increments agree to ``rtol``/``atol`` in the max norm); when the iteration does not
converge it warns and drops the oldest derivative from the history, as 0.2.5 does.

The formulas assume equal steps. The state records the step size its history was built with,
and a step of another size (the last step shortened onto a ``step_ts`` point or ``t1``) restarts
from the 3/8 rule (``restart=True``, the default). torchdiffeq 0.2.5 keeps the history across a
change of step size; ``restart=False`` reproduces that (the compatibility layer uses it).

Outputs between grid points use the cubic Hermite interpolant through ``(y0, f0, y1, f1)``.

The defaults differ from torchdiffeq's where its make a poor native method: ``max_order=5``
(0.2.5: 12, whose high-order Adams–Bashforth formulas are unstable unless the step is tiny),
``max_iters=8`` and a corrector tolerance of ``rtol=1e-10``, ``atol=1e-12`` (0.2.5: 4 iterations
to odeint's ``1e-7``/``1e-9``, which often do not converge and then lower the order). The global
order is set by the lowest-order steps: the third-order Adams–Bashforth step at the start makes
``adams_bashforth`` fourth order; ``adams_moulton`` (fourth-order prediction, fifth-order
correction, 3/8 starting steps) is fifth order (see ``tests/test_adams.py``).

??? cite "Reference"
    E. Hairer, S. P. Nørsett, G. Wanner, *Solving Ordinary Differential Equations I: Nonstiff
    Problems*, 2nd ed., Springer, 1993, Section III.1 (Adams methods).
"""

from __future__ import annotations

import warnings
from fractions import Fraction
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from .base import AbstractSolver, Func, StepResult
from .tableau import DensePolynomial

__all__ = ["AdamsBashforth", "AdamsBashforthMoulton", "AdamsState", "adams_coefficients"]

_MIN_ORDER = 4  # fewer than _MIN_ORDER - 1 derivatives in the history: a 3/8-rule step
_MAX_ORDER = 12


def _integral_of_lagrange(nodes: list[int]) -> list[Fraction]:
    """``[int_0^1 L_j(x) dx]`` for the Lagrange basis polynomials ``L_j`` through ``nodes``."""
    out = []
    for j, xj in enumerate(nodes):
        poly = [Fraction(1)]  # coefficients, lowest degree first
        for i, xi in enumerate(nodes):
            if i == j:
                continue
            denom = Fraction(xj - xi)
            shifted = [Fraction(0), *poly]  # x * poly
            poly = [
                (shifted[m] - xi * (poly[m] if m < len(poly) else 0)) / denom for m in range(len(shifted))
            ]
        out.append(sum(c / (m + 1) for m, c in enumerate(poly)))
    return out


def adams_coefficients(steps: int, implicit: bool) -> tuple[float, ...]:
    """The weights of the ``steps``-step Adams–Bashforth formula (derivatives at ``t_n``,
    ``t_{n-1}``, ...), or of the Adams–Moulton formula with ``steps`` derivatives (``t_{n+1}``,
    ``t_n``, ...), exact rationals rounded once."""
    nodes = list(range(1, 1 - steps, -1)) if implicit else list(range(0, -steps, -1))
    return tuple(float(c) for c in _integral_of_lagrange(nodes))


_BASHFORTH = [adams_coefficients(k, False) if k else () for k in range(_MAX_ORDER + 1)]
_MOULTON = [adams_coefficients(k, True) if k else () for k in range(_MAX_ORDER + 1)]

# Cubic Hermite over the stages (f0, f1, (y1 - y0) / dt): columns multiply theta, theta^2, theta^3.
_HERMITE = DensePolynomial(np.array([[1.0, -2.0, 1.0], [0.0, -1.0, 1.0], [0.0, 3.0, -2.0]]), order=3)


class AdamsState(NamedTuple):
    """The derivatives at earlier grid points, newest first (``f0`` of the next step not
    included), and the step size ``dt`` they were taken with (``None`` before the first step)."""

    history: tuple[torch.Tensor, ...] = ()
    dt: float | None = None


def _same_step(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def _sum(weights: tuple[float, ...], fs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    out = weights[0] * fs[0]
    for w, f in zip(weights[1:], fs[1:]):
        out = out + w * f
    return out


class AdamsBashforthMoulton(AbstractSolver):
    """Adams–Bashforth predictor, Adams–Moulton corrector by functional iteration, variable
    order up to ``max_order`` on a fixed grid (torchdiffeq 0.2.5's ``implicit_adams``).

    Arguments: ``max_order`` (at most 12; the history holds ``max_order - 1`` derivatives; the
    declared ``order`` is that of the default ``max_order=5``),
    ``max_iters`` (corrector evaluations per step), ``rtol``/``atol`` (the corrector's
    convergence test), ``restart`` (restart the history when the step size changes).
    """

    name = "adams_moulton"
    order = 5
    dense_order = 3
    supports_per_sample: ClassVar[bool] = False  # the order would differ between samples
    corrector: ClassVar[bool] = True

    def __init__(
        self,
        max_order: int = 5,
        max_iters: int = 8,
        rtol: float = 1e-10,
        atol: float = 1e-12,
        restart: bool = True,
    ) -> None:
        if not 1 <= int(max_order) <= _MAX_ORDER:
            raise ValueError(f"max_order must be between 1 and {_MAX_ORDER}, got {max_order}")
        if int(max_order) < _MIN_ORDER:
            warnings.warn(
                f"max_order is below {_MIN_ORDER}, so the solver reduces to the 3/8 rule", stacklevel=2
            )
        self.max_order = int(max_order)
        self.max_iters = int(max_iters)
        self.rtol = float(rtol)
        self.atol = float(atol)
        self.restart = bool(restart)

    def init_state(self, ctrl: Any) -> AdamsState:
        return AdamsState()

    def step(
        self,
        func: Func,
        t0: Any,
        y0: torch.Tensor,
        f0: torch.Tensor,
        dt: Any,
        need_error: bool = True,
        state: Any = None,
    ) -> StepResult:
        state = AdamsState() if state is None else state
        h = float(dt)
        keep = state.history
        if self.restart and state.dt is not None and not _same_step(h, state.dt):
            keep = ()
        history = ((f0, *keep))[: max(self.max_order - 1, 1)]
        k = len(history)
        t1 = t0 + dt
        if k < _MIN_ORDER - 1:
            y1 = y0 + self._rk38(func, t0, y0, f0, dt, t1)
        else:
            dy = dt * _sum(_BASHFORTH[k], history)
            if self.corrector:
                moulton = _MOULTON[k + 1]
                delta = dt * _sum(moulton[1:], history)
                converged = False
                for _ in range(self.max_iters):
                    previous = dy
                    dy = dt * moulton[0] * func(t1, y0 + dy) + delta
                    scale = self.atol + self.rtol * torch.maximum(previous.abs(), dy.abs())
                    ratio = float(((previous - dy).abs() / scale).max())
                    converged = ratio < 1
                    if converged:
                        break
                if not converged:
                    warnings.warn(
                        "Functional iteration did not converge. Solution may be incorrect.", stacklevel=2
                    )
                    history = history[:-1]
            y1 = y0 + dy
        return StepResult(y1, (), (f0,), None, state=AdamsState(history, h))

    @staticmethod
    def _rk38(func: Func, t0: Any, y0: torch.Tensor, k1: torch.Tensor, dt: Any, t1: Any) -> torch.Tensor:
        """Kutta's 3/8 rule, the increment ``y1 - y0`` (the starting steps)."""
        k2 = func(t0 + dt / 3, y0 + dt * k1 / 3)
        k3 = func(t0 + dt * 2 / 3, y0 + dt * (k2 - k1 / 3))
        k4 = func(t1, y0 + dt * (k1 - k2 + k3))
        return (k1 + 3 * (k2 + k3) + k4) * dt * 0.125

    def dense_stages(
        self, func: Func, t0: Any, y0: torch.Tensor, dt: Any, result: StepResult, f1: torch.Tensor
    ) -> torch.Tensor:
        return torch.stack([result.ks[0], f1, (result.y1 - y0) / dt]).movedim(0, -1)

    @property
    def dense_polynomial(self) -> DensePolynomial:
        return _HERMITE

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(max_order={self.max_order}, max_iters={self.max_iters}, "
            f"rtol={self.rtol}, atol={self.atol}, restart={self.restart})"
        )


class AdamsBashforth(AdamsBashforthMoulton):
    """Adams–Bashforth, variable order up to ``max_order`` on a fixed grid, started with the
    3/8 rule (torchdiffeq 0.2.5's ``explicit_adams``). Arguments as
    :class:`AdamsBashforthMoulton` (``max_iters``, ``rtol``, ``atol`` unused)."""

    name = "adams_bashforth"
    order = 4
    corrector: ClassVar[bool] = False
