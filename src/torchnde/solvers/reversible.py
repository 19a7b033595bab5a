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
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch

from .base import AbstractSolver, Func, StepResult
from .tableau import DensePolynomial

__all__ = ["ReversibleHeun", "ReversibleState"]


class ReversibleState(NamedTuple):
    """``(y, z, f(t, z))`` of the reversible Heun method."""

    y: torch.Tensor
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
    """

    name: ClassVar[str] = "reversible_heun"
    order: ClassVar[int] = 2
    dense_order: ClassVar[int] = 2
    reversible: ClassVar[bool] = True

    def init(self, func: Func, t0: Any, y0: torch.Tensor) -> ReversibleState:
        """The initial solver state: :math:`z_0 = y_0`."""
        return ReversibleState(y0, y0, func(t0, y0))

    def forward(self, func: Func, t0: Any, state: ReversibleState, dt: Any) -> ReversibleState:
        """One step from ``t0`` to ``t0 + dt``."""
        y, z, fz = state
        z1 = torch.add(torch.sub(y, z, alpha=1.0).add_(y), fz, alpha=dt)  # 2y - z + dt f
        f1 = func(t0 + dt, z1)
        y1 = torch.add(y, fz + f1, alpha=0.5 * dt)
        return ReversibleState(y1, z1, f1)

    def reverse(self, func: Func, t1: Any, state: ReversibleState, dt: Any) -> ReversibleState:
        """Undo the step that ended at ``t1`` with size ``dt``: the state at ``t1 - dt``."""
        y1, z1, f1 = state
        z0 = torch.add(torch.sub(y1, z1, alpha=1.0).add_(y1), f1, alpha=-dt)  # 2y1 - z1 - dt f1
        f0 = func(t1 - dt, z0)
        y0 = torch.add(y1, f0 + f1, alpha=-0.5 * dt)
        return ReversibleState(y0, z0, f0)

    def step(self, func: Func, t0: Any, y0: torch.Tensor, f0: torch.Tensor, dt: Any) -> StepResult:
        raise NotImplementedError("reversible_heun is stepped by its own loop (solve() selects it)")

    def dense_stages(self, func: Func, t0: Any, y0: torch.Tensor, dt: Any, result: StepResult,
                     f1: torch.Tensor) -> torch.Tensor:  # fmt: skip
        raise NotImplementedError("reversible_heun has no continuous extension: outputs are stepped onto")

    @property
    def dense_polynomial(self) -> DensePolynomial:
        raise NotImplementedError("reversible_heun has no continuous extension: outputs are stepped onto")
