r"""Algebraically reversible solvers: each step can be undone in closed form.

The reversible Heun method (Kidger, Foster, Li & Lyons, *Efficient and Accurate Gradients for
Neural SDEs*, NeurIPS 2021, eq. (4) without noise) carries a second state :math:`z` beside
:math:`y`. With :math:`f_n = f(t_n, z_n)`, one step is

.. math:: z_{n+1} = 2 y_n - z_n + h f_n,\qquad
          y_{n+1} = y_n + \tfrac{h}{2}\,(f_n + f_{n+1}),

one evaluation of :math:`f` per step (:math:`f_{n+1}` is reused), second order, and the exact
inverse is the same map with :math:`-h`:

.. math:: z_n = 2 y_{n+1} - z_{n+1} - h f_{n+1},\qquad
          y_n = y_{n+1} - \tfrac{h}{2}\,(f_n + f_{n+1}).

So a backward pass can rebuild every earlier state from the last one instead of storing them
(``gradient="reversible"``), up to floating-point round-off.

In the common step contract the solution is ``y`` and the pair :math:`(z_n, f_n)` is the solver
state (:class:`ReversibleState`) carried in ``StepResult.state``: :meth:`ReversibleHeun.step`
takes one step forward, :meth:`ReversibleHeun.reverse_step` undoes one.

**Controlled equations.** For a CDE :math:`dz = F(t, z)\,dX` the method is written with the
increments of the control (Kidger et al. 2021, eq. (4) with :math:`X` in place of the Brownian
motion), carrying the matrix :math:`F_n = F(t_n, z_n)` rather than :math:`F_n\,\dot X(t_n)`:

.. math:: z_{n+1} = 2 y_n - z_n + F_n\,\Delta X_n,\qquad
          y_{n+1} = y_n + \tfrac12\,(F_n + F_{n+1})\,\Delta X_n,\qquad
          \Delta X_n = X(t_{n+1}) - X(t_n).

On a smooth path this is second order, as the ODE method is; across a knot of a piecewise
linear path (where :math:`\dot X` jumps) it stays exact in its use of the control, because
:math:`\Delta X_n` is the increment of the piece stepped over, whereas a carried
:math:`f_n = F_n \dot X(t_n)` holds the slope of the piece before the knot (or, at the knot,
of the one after it) and is wrong for the step beside it. Still one evaluation per step, and
the inverse is the same map with :math:`-\Delta X_n`. The reversible loop hands the solver
this form for a :class:`~torchnde.CDETerm` (``func.control``: its ``field``, ``increment`` and
``product``, :class:`torchnde._loop.reversible.BoundControl`).
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch

from .base import AbstractSolver, Func, StepResult
from .tableau import DensePolynomial

__all__ = ["ReversibleHeun", "ReversibleState"]


class ReversibleState(NamedTuple):
    """The reversible Heun method's state beside the solution ``y``: its second state ``z`` and
    ``fz = f(t, z)``."""

    z: torch.Tensor
    fz: torch.Tensor


class ReversibleHeun(AbstractSolver):
    """The reversible Heun method (see the module docstring). Fixed steps, second order.

    Use it with ``gradient="reversible"`` for exact gradients at O(1) memory, or with
    ``gradient="backprop"``. Outputs are stepped onto (``t_eval`` joins the step grid) rather
    than interpolated, so that the backward pass can undo every step exactly.

    ```python
    import torch, torchnde as nde
    y0 = torch.ones(2, requires_grad=True)
    sol = nde.solve(lambda t, y: -y, y0, torch.linspace(0, 1, 3), solver="reversible_heun",
                    dt=0.01, gradient="reversible")
    sol.ys[-1].sum().backward()
    ```

    Stepping by hand (``state=None`` starts the method: :math:`z_0 = y_0`)::

        res = solver.step(f, t0, y0, f(t0, y0), dt)            # y1 = res.y1, state = res.state
        y0_again, state0 = solver.reverse_step(f, t0 + dt, res.y1, res.state, dt)
    """

    name: ClassVar[str] = "reversible_heun"
    order: ClassVar[int] = 2
    dense_order: ClassVar[int] = 2
    reversible: ClassVar[bool] = True

    @property
    def fsal(self) -> bool:
        return True  # the next step reads f(t, z) from its state; f0 only starts the method

    @property
    def f1_exact(self) -> bool:
        return False  # StepResult.f1 is f(t1, z1), not f(t1, y1)

    @property
    def evaluations_per_step(self) -> int:
        return 1

    def step(
        self, func: Func, t0: Any, y0: torch.Tensor, f0: torch.Tensor | None, dt: Any, need_error: bool = False,
        state: ReversibleState | None = None,
    ) -> StepResult:  # fmt: skip
        """One step from ``(t0, y0)`` with ``state = (z0, f(t0, z0))``; ``None`` starts the method
        (:math:`z_0 = y_0`, so ``f(t0, z0) = f0``; ``f0`` is read only then). Returns
        ``StepResult(y1, (), (fz0, f1), f1, state=(z1, f1))`` with ``f1 = f(t0 + dt, z1)`` (not
        ``f(t1, y1)``); no error estimate, no continuous extension. A ``func`` carrying a
        ``control`` (a CDE) is stepped in its controlled form (module docstring): the state's
        ``fz`` is then the matrix :math:`F(t, z)`, and ``f0`` is not read."""
        control = getattr(func, "control", None)
        if control is not None:
            return _controlled_step(control, t0, y0, dt, state)
        z, fz = (y0, f0) if state is None else state
        z1 = torch.add(torch.sub(y0, z, alpha=1.0).add_(y0), fz, alpha=dt)  # 2y - z + dt f
        f1 = func(t0 + dt, z1)
        y1 = torch.add(y0, fz + f1, alpha=0.5 * dt)
        return StepResult(y1, (), (fz, f1), f1, state=ReversibleState(z1, f1))

    def reverse_step(
        self, func: Func, t1: Any, y1: torch.Tensor, state: ReversibleState, dt: Any, t0: Any = None
    ) -> tuple[torch.Tensor, ReversibleState]:
        """Undo the step of size ``dt`` that ended at ``(t1, y1)`` with ``state``: the previous
        ``(y0, state0)`` at ``t0`` (default ``t1 - dt``; pass the step's start where it must be
        that float exactly, e.g. the far side of a jump), in closed form (one evaluation of ``f``)."""
        t0 = t1 - dt if t0 is None else t0
        control = getattr(func, "control", None)
        z1, f1 = state
        if control is not None:  # the controlled form: the same map with -dX
            dx = control.increment(t0, t1)
            z0 = torch.sub(y1, z1, alpha=1.0).add_(y1).sub_(control.product(f1, dx))
            f0 = control.field(t0, z0)
            y0 = y1 - 0.5 * control.product(f0 + f1, dx)
            return y0, ReversibleState(z0, f0)
        z0 = torch.add(torch.sub(y1, z1, alpha=1.0).add_(y1), f1, alpha=-dt)  # 2y1 - z1 - dt f1
        f0 = func(t0, z0)
        y0 = torch.add(y1, f0 + f1, alpha=-0.5 * dt)
        return y0, ReversibleState(z0, f0)

    def restart(self, func: Func, t: Any, state: ReversibleState) -> ReversibleState:
        """``state`` with its carried derivative evaluated again at ``t`` (``z`` unchanged): the
        loop calls it after a step landing on a jump of ``f``, with ``t`` its far side."""
        control = getattr(func, "control", None)
        return ReversibleState(state.z, func(t, state.z) if control is None else control.field(t, state.z))

    def dense_stages(self, func: Func, t0: Any, y0: torch.Tensor, dt: Any, result: StepResult,
                     f1: torch.Tensor) -> torch.Tensor:  # fmt: skip
        raise NotImplementedError("reversible_heun has no continuous extension: outputs are stepped onto")

    @property
    def dense_polynomial(self) -> DensePolynomial:
        raise NotImplementedError("reversible_heun has no continuous extension: outputs are stepped onto")


def _controlled_step(
    control: Any, t0: Any, y0: torch.Tensor, dt: Any, state: ReversibleState | None
) -> StepResult:
    """One step of the controlled form (module docstring): ``state.fz`` is :math:`F(t_0, z_0)`."""
    z, fz = (y0, control.field(t0, y0)) if state is None else state
    t1 = t0 + dt
    dx = control.increment(t0, t1)
    z1 = torch.sub(y0, z, alpha=1.0).add_(y0).add_(control.product(fz, dx))  # 2y - z + F dX
    f1 = control.field(t1, z1)
    y1 = y0 + 0.5 * control.product(fz + f1, dx)
    return StepResult(y1, (), (fz, f1), f1, state=ReversibleState(z1, f1))
