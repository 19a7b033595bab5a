r"""Rosenbrock (linearly implicit) methods for stiff problems: no Newton iterations, one LU
factorisation of :math:`I/(h\gamma) - J` per step.

In the transformed form of Hairer & Wanner (*Solving ODEs II*, IV.7, eq. (7.25)) stage ``i``
solves the linear system

.. math:: \Bigl(\frac{I}{h\gamma} - J\Bigr) k_i = f\Bigl(t_0 + \alpha_i h,\; y_0 + \sum_{j<i} a_{ij} k_j\Bigr)
          + \sum_{j<i} \frac{c_{ij}}{h} k_j + h\, d_i\, \partial_t f,

with :math:`J = \partial_y f` and :math:`\partial_t f` at :math:`(t_0, y_0)` (exact, from autograd),
and :math:`y_1 = y_0 + \sum_i m_i k_i`. Gradients go through the linear solves and, when
autograd is recording, through :math:`J` itself (it is built with ``create_graph``), so
backpropagation gives the exact derivative of the discrete solution.

``Rodas5P``: G. Steinebach, *Construction of Rosenbrock–Wanner method Rodas5P and numerical
benchmarks within the Julia Differential Equations package*, BIT 63 (2023). Fifth order with a
fourth-order embedded solution (the last stage's input; the last stage's increment is the
error estimate). Dense output is the cubic Hermite interpolant.

Little is reused from step to step, since the method's order needs the exact Jacobian at each
step's start: whether ``f`` reads ``t`` at all (then :math:`\partial_t f = 0` is not computed),
and the Jacobian of a rejected step for its retry from the same point. Both are the solver's
state, carried in ``StepResult.state`` (see :class:`RosenbrockState`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from .base import AbstractSolver, Func, StepResult, stack_stages
from .jacobian import check_jacobian_option, dense_solver, ignores_time, jacobians
from .tableau import DensePolynomial

__all__ = ["Rodas5P", "RosenbrockState"]


class RosenbrockState(NamedTuple):
    """What a Rosenbrock solve carries from step to step (immutable: a step returns a new one).

    - ``autonomous``: whether ``f`` ignores ``t`` (so that ``df/dt = 0`` need not be computed),
      learnt by the first step. The first step's state is ``None`` (``init_state``): it is learnt
      then; a direct step call without a state learns it anew.
    - ``point``: ``(t0, y0)`` of the last step, and ``jacobian``: ``(df/dy, df/dt or None)``
      there. A step from the same point (the retry of a rejected step: the same ``y0`` object and
      ``t0``) reuses them, since the method needs the Jacobian at the step's start and that has
      not moved. Kept only while autograd is not recording the step (a recorded step builds its
      own, differentiable, Jacobian) and in the global layout.
    """

    autonomous: bool
    point: tuple[Any, torch.Tensor] | None = None
    jacobian: tuple[torch.Tensor, torch.Tensor | None] | None = None


class Rodas5P(AbstractSolver):
    r"""Steinebach's Rodas5P (see the module docstring): eight stages, one Jacobian and one LU
    factorisation per step, no nonlinear iterations.

    Option ``jacobian``: ``None`` (default) takes :math:`\partial f/\partial y` from autograd; a
    callable ``jacobian(t, y)`` returns it instead, as a tensor ``[N, N]`` over the flattened state
    (per sample ``[B, N, N]``; a tuple state's parts concatenated in order), with ``t`` and ``y`` as
    ``f`` receives them. It must be the exact Jacobian (the method's order depends on it), and
    written in torch operations if gradients through the solve are wanted. On small systems
    autograd's Jacobian (one vectorised backward pass) is a large part of the step (Robertson:
    40% of the solve time, 70 vs 42 ms); an analytic one is the fix, as with scipy's ``jac``::

        def f(t, y):
            a, b, c = y.unbind()
            return torch.stack([-0.04 * a + 1e4 * b * c, 0.04 * a - 1e4 * b * c - 3e7 * b * b,
                                3e7 * b * b])

        def jac(t, y):
            a, b, c = y.unbind()
            z = torch.zeros_like(a)
            return torch.stack([torch.stack([z - 0.04, 1e4 * c, 1e4 * b]),
                                torch.stack([z + 0.04, -1e4 * c - 6e7 * b, -1e4 * b]),
                                torch.stack([z, 6e7 * b, z])])

        sol = torchnde.solve(f, y0, t, torchnde.solvers.Rodas5P(jacobian=jac), rtol=1e-6, atol=1e-10)

    ``jacobian="fd"`` takes it by forward differences of ``f`` instead (scipy's default; see
    :func:`~torchnde.solvers.jacobian.finite_difference_jacobian`): ``N`` more evaluations per
    step, accurate to about :math:`\sqrt{\varepsilon}`, cheaper than autograd's pass on 2- and
    3-state problems; ``jacobian="autograd"`` is the default.
    """

    name: ClassVar[str] = "rodas5p"
    order: ClassVar[int] = 5
    error_order: ClassVar[int | None] = 5
    implicit: ClassVar[bool] = True
    supports_per_sample: ClassVar[bool] = True
    gamma: ClassVar[float] = 0.21193756319429014
    alpha: ClassVar[tuple[float, ...]] = (
        0.0, 0.6358126895828704, 0.4095798393397535, 0.9769306725060716, 0.4288403609558664, 1.0, 1.0, 1.0,
    )  # fmt: skip
    d: ClassVar[tuple[float, ...]] = (
        0.21193756319429014, -0.42387512638858027, -0.3384627126235924, 1.8046452872882734,
        2.325825639765069, 0.0, 0.0, 0.0,
    )  # fmt: skip
    _LAST = (-7.502846399306121, 2.561846144803919, -11.627539656261098, -0.18268767659942256,
             0.030198172008377946)  # fmt: skip
    a: ClassVar[tuple[tuple[float, ...], ...]] = (
        (3.0,),
        (2.849394379747939, 0.45842242204463923),
        (-6.954028509809101, 2.489845061869568, -10.358996098473584),
        (2.8029986275628964, 0.5072464736228206, -0.3988312541770524, -0.04721187230404641),
        _LAST,
        (*_LAST, 1.0),
        (*_LAST, 1.0, 1.0),
    )
    c: ClassVar[tuple[tuple[float, ...], ...]] = (
        (-14.155112264123755,),
        (-17.97296035885952, -2.859693295451294),
        (147.12150275711716, -1.41221402718213, 71.68940251302358),
        (165.43517024871676, -0.4592823456491126, 42.90938336958603, -5.961986721573306),
        (24.854864614690072, -3.0009227002832186, 47.4931110020768, 5.5814197821558125, -0.6610691825249471),
        (30.91273214028599, -3.1208243349937974, 77.79954646070892, 34.28646028294783, -19.097331116725623,
         -28.087943162872662),
        (37.80277123390563, -3.2571969029072276, 112.26918849496327, 66.9347231244047, -40.06618937091002,
         -54.66780262877968, -9.48861652309627),
    )  # fmt: skip
    # y1 = Y_8 + k_8 (fifth order); Y_8, the last stage's input, is the fourth-order embedded
    # solution, so k_8 is the error estimate
    m: ClassVar[tuple[float, ...]] = (*_LAST, 1.0, 1.0, 1.0)

    def __init__(self, jacobian: Callable[..., torch.Tensor] | str | None = None) -> None:
        self.jacobian = check_jacobian_option("Rodas5P", jacobian)
        # Hermite over [f0, f1] with y1 - y0 = h * slope: stages are (f0, f1, slope)
        self._dense = DensePolynomial(
            np.array([[1.0, -2.0, 1.0], [0.0, -1.0, 1.0], [0.0, 3.0, -2.0]]), order=3
        )
        self._rows: dict[
            tuple[torch.dtype, torch.device], tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]
        ] = {}

    def __repr__(self) -> str:
        return "Rodas5P()" if self.jacobian is None else f"Rodas5P(jacobian={self.jacobian!r})"

    def _coefficients(self, y: torch.Tensor) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """Per stage ``i >= 1`` the rows ``a_i`` and ``c_i``, and the weights ``m``, as tensors (cached)."""
        key = (y.dtype, y.device)
        cached = self._rows.get(key)
        if cached is None:
            with torch.inference_mode(False):  # a cached constant must outlive inference mode
                rows = [
                    (
                        torch.tensor(a, dtype=y.dtype, device=y.device),
                        torch.tensor(c, dtype=y.dtype, device=y.device),
                    )
                    for a, c in zip(self.a, self.c)
                ]
                cached = self._rows[key] = (rows, torch.tensor(self.m, dtype=y.dtype, device=y.device))
        return cached

    @property
    def dense_order(self) -> int:  # type: ignore[override]
        return 3

    def step(
        self, func: Func, t0: Any, y0: torch.Tensor, f0: torch.Tensor, dt: Any, need_error: bool = True,
        state: RosenbrockState | None = None,
    ) -> StepResult:  # fmt: skip
        """One step; ``state``: a :class:`RosenbrockState`, or ``None`` (it is learnt); the step
        returns it in ``StepResult.state``."""
        if state is None:
            state = RosenbrockState(ignores_time(func, t0, y0))
        if isinstance(dt, torch.Tensor):
            return self._step_per_sample(func, t0, y0, f0, dt, need_error, state)
        h = float(dt)
        shape = y0.shape
        differentiate = torch.is_grad_enabled() and (y0.requires_grad or f0.requires_grad)
        point = state.point
        if point is not None and point[1] is y0 and point[0] == t0 and not differentiate:
            jac, ft = state.jacobian  # type: ignore[misc]  # a retry from the same point
        else:
            jac, ft = jacobians(
                func, t0, y0, batched=False, create_graph=differentiate, with_time=not state.autonomous, f0=f0
            )
            state = (
                state._replace(point=None, jacobian=None)
                if differentiate
                else state._replace(point=(t0, y0), jacobian=(jac, ft))
            )
        n = jac.shape[0]
        w = torch.eye(n, dtype=jac.dtype, device=jac.device) / (h * self.gamma) - jac
        solve = dense_solver(w)  # an inverse for small systems, else LU
        rows, weights = self._coefficients(y0)
        flat = y0.dim() == 1
        y0f = y0 if flat else y0.reshape(-1)
        ks: list[torch.Tensor] = []  # flat [N] increments
        rhs = f0 if flat else f0.reshape(-1)
        for i in range(8):
            if i > 0:  # one product per row: y0 + K a_i, and the c-terms K c_i / h
                kmat = torch.stack(ks, 1)  # [N, i]
                a_i, c_i = rows[i - 1]
                y_i = torch.addmv(y0f, kmat, a_i)
                fy = func(t0 + self.alpha[i] * h, y_i if flat else y_i.view(shape))
                rhs = torch.addmv(fy if flat else fy.reshape(-1), kmat, c_i, alpha=1.0 / h)
            if ft is not None and self.d[i] != 0:
                rhs = rhs + (h * self.d[i]) * ft
            ks.append(solve(rhs))
        y1 = torch.addmv(y0f, torch.stack(ks, 1), weights)
        if not flat:
            y1 = y1.view(shape)
        errors = ((ks[-1] if flat else ks[-1].view(shape)) / h,) if need_error else ()
        return StepResult(y1, errors, (f0,), None, state=state)  # f(t1, y1) is not among the stages

    def _step_per_sample(
        self,
        func: Func,
        t0: torch.Tensor,
        y0: torch.Tensor,
        f0: torch.Tensor,
        dt: torch.Tensor,
        need_error: bool,
        state: RosenbrockState,
    ) -> StepResult:
        """The same step for a batch ``[B, ...]`` with its own ``dt [B]``: per-sample Jacobians
        ``[B, N, N]`` (rows of ``f`` are independent samples) and batched factorisations."""
        batch, shape = y0.shape[0], y0.shape
        differentiate = torch.is_grad_enabled() and (y0.requires_grad or f0.requires_grad)
        jac, ft = jacobians(
            func, t0, y0, batched=True, create_graph=differentiate, with_time=not state.autonomous, f0=f0
        )
        n = jac.shape[-1]
        h = torch.where(dt > 0, dt, 1.0).to(y0.dtype)  # finished samples (dt = 0) stand still
        eye = torch.eye(n, dtype=jac.dtype, device=jac.device)
        solve = dense_solver(eye / (h * self.gamma).view(-1, 1, 1) - jac)
        rows, weights = self._coefficients(y0)
        y0f = y0.reshape(batch, n)
        inv_h = (1.0 / h).view(-1, 1)
        ks: list[torch.Tensor] = []  # [B, N] increments
        fy = f0
        for i in range(8):
            rhs = fy.reshape(batch, n)
            if i > 0:
                kmat = torch.stack(ks, -1)  # [B, N, i]
                a_i, c_i = rows[i - 1]
                t_i = t0 + self.alpha[i] * dt
                fy = func(t_i, (y0f + kmat @ a_i).view(shape))
                rhs = fy.reshape(batch, n) + inv_h * (kmat @ c_i)
            if ft is not None and self.d[i] != 0:
                rhs = rhs + (h * self.d[i]).view(-1, 1) * ft
            ks.append(solve(rhs))
        kmat = torch.stack(ks, -1)
        y1 = (y0f + kmat @ weights).view(shape)
        errors = ((ks[-1] * inv_h).view(shape),) if need_error else ()
        return StepResult(
            torch.where((dt > 0).view(-1, *([1] * (len(shape) - 1))), y1, y0),
            errors,
            (f0,),
            None,
            state=state,
        )

    def dense_stages(self, func: Func, t0: Any, y0: torch.Tensor, dt: Any, result: StepResult,
                     f1: torch.Tensor) -> torch.Tensor:  # fmt: skip
        if isinstance(dt, torch.Tensor):
            h = torch.where(dt > 0, dt, 1.0).to(y0.dtype).view(-1, *([1] * (y0.ndim - 1)))
            return stack_stages([result.ks[0], f1, (result.y1 - y0) / h])
        return stack_stages([result.ks[0], f1, (result.y1 - y0) / float(dt)])

    @property
    def dense_polynomial(self) -> DensePolynomial:
        return self._dense
