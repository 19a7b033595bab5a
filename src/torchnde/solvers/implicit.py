r"""Diagonally implicit Runge–Kutta methods for stiff problems, with a Newton solver.

An ESDIRK method (explicit first stage, singly diagonal) computes, for stages
:math:`i = 1, \dots, s-1`,

.. math:: Y_i = y_0 + h \sum_{j<i} a_{ij} k_j + h\gamma\, k_i, \qquad k_i = f(t_0 + c_i h, Y_i),

one nonlinear system of the state's size per stage, all with the same matrix
:math:`M = I - h\gamma J`. Each is solved by simplified Newton iterations on
:math:`G(Y) = Y - y_0 - h\sum_{j<i} a_{ij}k_j - h\gamma f(t_i, Y)` with :math:`J` the Jacobian of
``f`` at the step's start (from autograd, reused across steps while Newton converges
fast) and one LU factorisation of :math:`M` per step. Convergence follows Hairer & Wanner
(*Solving ODEs II*, IV.8): with the contraction rate :math:`\theta_k = \|\Delta_k\|/\|\Delta_{k-1}\|`
the iteration stops when :math:`\theta/(1-\theta)\,\|\Delta\| \le \kappa` in the step's error
norm, and fails (the step is rejected and shrunk, never accepted unconverged) when
:math:`\theta \ge 1` or after ``max_iters`` iterations. ``k_i`` is recovered as
:math:`(Y_i - y_0 - h\sum_{j<i} a_{ij} k_j)/(h\gamma)`, which does not amplify the Newton
residual through a stiff ``f``.

Gradients do not go through the iterations: when autograd is recording, each converged stage
takes one more Newton step with the exact Jacobian at the solution,
:math:`Y \leftarrow \bar Y - M_*^{-1} G(\bar Y)` with :math:`\bar Y` and :math:`M_*` held
constant, whose derivative is the implicit function theorem's
:math:`\partial Y/\partial\theta = -M_*^{-1}\,\partial G/\partial\theta`.

The Jacobian, its factorisation and the last Newton rate are reused from step to step. They
are the solver's *state* (:class:`ImplicitState`), an immutable value created per solve by
:meth:`~DiagonallyImplicitRK.init_state` and returned updated by every step in
``StepResult.state``; the solver object itself is never mutated, so a step replayed with the
same state (checkpointing) repeats exactly.

Methods: implicit Euler (with the explicit-Euler difference as its error estimate) and
Kværnø's ESDIRK pairs 3(2), 4(3) and 5(4) (A. Kværnø, *Singly diagonally implicit Runge–Kutta
methods with an explicit first stage*, BIT 44, 2004), all L-stable and stiffly accurate (the
last stage is the solution, so it is also the next step's first: FSAL). Dense output is the
cubic Hermite interpolant.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from .._names import checked_keywords, did_you_mean
from .base import AbstractSolver, Func, StepResult, stack_stages
from .explicit_rk import hermite_interpolant
from .jacobian import check_jacobian_option, dense_solver, jacobians
from .tableau import DensePolynomial

__all__ = [
    "SDIRK2",
    "TRBDF2",
    "ESDIRKTableau",
    "ImplicitEuler",
    "ImplicitState",
    "Kvaerno3",
    "Kvaerno4",
    "Kvaerno5",
    "Newton",
    "Trapezoid",
]

_TOL = 1e-10


@checked_keywords
@dataclass(frozen=True)
class Newton:
    """Options of the Newton iterations of the implicit stages.

    - ``max_iters``: iterations before the stage counts as failed (the step is then rejected
      and retried with a quarter of the step size and a fresh Jacobian).
    - ``kappa``: the iteration stops when the estimated remaining error is below ``kappa``
      times the step's error tolerance (Hairer & Wanner recommend 0.01–0.1).
    - ``rtol``, ``atol``: the tolerances of that norm; default: the step-size controller's
      (``1e-6``/``1e-9`` with constant steps).
    - ``reuse_jacobian``: keep the Jacobian across steps while iterations converge at a rate
      below ``0.1``; otherwise evaluate it at the start of every step.
    - ``linear_solver``: ``"dense"`` (an ``N x N`` Jacobian and its LU factorisation) or
      ``"gmres"``: matrix-free, each Newton correction solved by GMRES (Saad & Schultz, SIAM J.
      Sci. Stat. Comput. 7, 1986) with Jacobian-vector products by finite differences of ``f``
      (Jacobian-free Newton–Krylov; Knoll & Keyes, J. Comput. Phys. 193, 2004) -- for states too
      large for a dense Jacobian. Global layout only.
    - ``krylov_iters``, ``krylov_rtol``: the GMRES iteration limit and relative residual.
    """

    max_iters: int = 10
    kappa: float = 0.01
    rtol: float | None = None
    atol: float | None = None
    reuse_jacobian: bool = True
    linear_solver: str = "dense"
    krylov_iters: int = 200
    krylov_rtol: float = 1e-6

    def __post_init__(self) -> None:
        if self.linear_solver not in ("dense", "gmres"):
            raise ValueError(
                f"Newton(linear_solver=...) must be 'dense' or 'gmres', got {self.linear_solver!r}."
                f"{did_you_mean(self.linear_solver, ('dense', 'gmres'))}"
            )
        if not isinstance(self.krylov_iters, int) or self.krylov_iters < 1:
            raise ValueError(f"Newton(krylov_iters=...) must be a positive int, got {self.krylov_iters!r}")
        if not isinstance(self.max_iters, int) or self.max_iters < 1:
            raise ValueError(f"Newton(max_iters=...) must be a positive int, got {self.max_iters!r}")
        if not 0 < self.kappa < 1:
            raise ValueError(f"Newton(kappa=...) must lie in (0, 1), got {self.kappa!r}")


@dataclass(frozen=True)
class ESDIRKTableau:
    """An ESDIRK tableau: ``c``; ``a`` as rows ``1..s-1`` of the lower triangle *including* the
    diagonal (row ``i`` has ``i + 1`` entries, the last being ``gamma``); weights ``b`` and error
    weights ``e`` (``b - b_hat``). Validated on construction."""

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    e: tuple[float, ...]
    gamma: float = field(init=False)
    stages: int = field(init=False)
    a_matrix: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        s = len(self.c)
        if len(self.a) != s - 1 or len(self.b) != s or len(self.e) != s or self.c[0] != 0:
            raise ValueError("ESDIRK tableau shapes disagree or c[0] != 0")
        a = np.zeros((s, s))
        for i, row in enumerate(self.a, start=1):
            if len(row) != i + 1:
                raise ValueError(f"row {i} of a must have {i + 1} entries (diagonal included)")
            a[i, : i + 1] = row
            if abs(sum(row) - self.c[i]) > _TOL:
                raise ValueError(f"row {i} of a sums to {sum(row)!r}, not c[{i}] = {self.c[i]!r}")
        gamma = a[1, 1]
        if not np.allclose(np.diag(a)[1:], gamma, rtol=0, atol=1e-15):
            raise ValueError("an ESDIRK tableau needs one diagonal value for the implicit stages")
        if abs(math.fsum(self.b) - 1) > _TOL or abs(math.fsum(self.e)) > _TOL:
            raise ValueError("weights b must sum to 1 and error weights e to 0")
        object.__setattr__(self, "gamma", float(gamma))
        object.__setattr__(self, "stages", s)
        object.__setattr__(self, "a_matrix", a)

    @property
    def stiffly_accurate(self) -> bool:
        """The last stage is the solution (its row of ``a`` equals ``b``, ``c = 1``)."""
        return self.c[-1] == 1 and bool(np.allclose(self.a_matrix[-1], self.b, rtol=0, atol=1e-15))


class ImplicitState(NamedTuple):
    """The state an ESDIRK solve carries from step to step (immutable: a step returns a new one).

    - ``rtol``, ``atol``: the tolerances of the Newton iterations' convergence norm.
    - ``jacobian``: ``df/dy`` at the start of the step that evaluated it, ``[N, N]``, reused
      while Newton converges fast; ``None``: evaluate it at the next step.
    - ``factor``: ``(solve, h*gamma)``, the factorisation ``b -> (I - h gamma J)^{-1} b`` of
      ``jacobian`` and the ``h*gamma`` it was made for; ``None`` when there is none.
    - ``eta``: Hairer's ``theta / (1 - theta)`` of the last converged Newton iteration.
    """

    rtol: float = 1e-6
    atol: float = 1e-9
    jacobian: torch.Tensor | None = None
    factor: tuple[Callable[[torch.Tensor], torch.Tensor], float] | None = None
    eta: float = 1.0


_DEFAULT_STATE = ImplicitState()  # a direct step call without a state: the defaults


class NewtonSolver(AbstractSolver):
    """What the implicit Runge–Kutta engines (ESDIRK here, fully implicit in
    :mod:`.fully_implicit`) share: the options ``newton`` (a :class:`Newton`) and ``jacobian``
    (``None`` or ``"autograd"``: autograd; ``"fd"``: forward differences of ``f``; or the exact
    ``jacobian(t, y) -> df/dy``, ``[N, N]`` or per sample ``[B, N, N]``, as for
    :class:`~torchnde.solvers.Rodas5P`), the Newton tolerances as the
    state a solve starts from, and a continuous extension ``_dense`` set by the engine."""

    implicit: ClassVar[bool] = True
    _dense: DensePolynomial

    def __init__(
        self, newton: Newton | None = None, jacobian: Callable[..., torch.Tensor] | str | None = None
    ):
        if newton is not None and not isinstance(newton, Newton):
            raise TypeError(f"newton must be a torchnde.solvers.Newton, got {type(newton).__name__}")
        self.newton = newton or Newton()
        self.jacobian = check_jacobian_option(type(self).__name__, jacobian)

    def __repr__(self) -> str:
        extra = "" if self.jacobian is None else f", jacobian={self.jacobian!r}"
        return f"{type(self).__name__}(newton={self.newton!r}{extra})"

    @property
    def dense_order(self) -> int:  # type: ignore[override]
        return self._dense.order

    def dense_stages(
        self, func: Func, t0: Any, y0: torch.Tensor, dt: Any, result: StepResult, f1: torch.Tensor
    ) -> torch.Tensor:
        """The stages and ``f1``: the Hermite extension's data."""
        return stack_stages([*result.ks, f1])

    @property
    def dense_polynomial(self) -> DensePolynomial:
        return self._dense

    def init_state(self, ctrl: Any) -> ImplicitState:
        """The state a solve starts from: the Newton tolerances (``newton.rtol``/``atol``, else
        the controller's, else ``1e-6``/``1e-9``) and no Jacobian yet."""
        rtol = self.newton.rtol if self.newton.rtol is not None else _float(ctrl.rtol, 1e-6)
        atol = self.newton.atol if self.newton.atol is not None else _float(ctrl.atol, 1e-9)
        return ImplicitState(rtol, atol)


class DiagonallyImplicitRK(NewtonSolver):
    """Engine for ESDIRK methods; subclasses set ``tableau``, ``order``, ``error_order``,
    ``name``. Options as :class:`NewtonSolver`'s (``jacobian`` is unused by the matrix-free
    ``gmres`` linear solver)."""

    tableau: ClassVar[ESDIRKTableau]
    supports_per_sample: ClassVar[bool] = True  # dense linear solver only (gmres: global layout)

    def __init__(
        self, newton: Newton | None = None, jacobian: Callable[..., torch.Tensor] | str | None = None
    ):
        super().__init__(newton, jacobian)
        self._dense = hermite_interpolant(self.tableau.b, self.order)

    @property
    def fsal(self) -> bool:
        return self.tableau.stiffly_accurate

    @property
    def f1_exact(self) -> bool:
        r"""``False``: ``StepResult.f1`` is the last stage's derivative recovered from the Newton
        solution, :math:`k_s = (Y_s - y_0 - h\sum_{j<s} a_{sj} k_j)/(h\gamma)`, not
        :math:`f(t_1, y_1)`. The two differ by the Newton residual over :math:`h\gamma`, about
        :math:`J` times the Newton error, large where ``f`` is stiff; nothing may use ``f1`` as
        ``f(t1, y1)`` (a finite-difference Jacobian based on it diverged on Robertson)."""
        return False

    @property
    def needs_end_derivative(self) -> bool:
        """Only without a last stage at the step's end: a stiffly accurate method's continuous
        extension takes the recovered ``f1`` (see :meth:`dense_stages`)."""
        return not self.tableau.stiffly_accurate

    def dense_stages(
        self, func: Func, t0: Any, y0: torch.Tensor, dt: Any, result: StepResult, f1: torch.Tensor
    ) -> torch.Tensor:
        r"""The stages and the end slope of the Hermite extension: the recovered last-stage
        derivative ``result.f1`` when there is one, else ``f1 = f(t1, y1)``. The recovered slope
        is off the exact one by the Newton error over :math:`h\gamma`, where :math:`f(t_1, y_1)` is
        off by :math:`J` times it: on Robertson (rtol 1e-6) interpolating with :math:`f(t_1, y_1)`
        raised Kvaerno3's largest error at 40 interior outputs from 2.4e-4 to 3.9e-2."""
        return stack_stages([*result.ks, f1 if result.f1 is None else result.f1])

    @property
    def evaluations_per_step(self) -> int | None:
        return None  # depends on the Newton iterations

    # -- one step -------------------------------------------------------------------------------

    def step(
        self, func: Func, t0: Any, y0: torch.Tensor, f0: torch.Tensor, dt: Any, need_error: bool = True,
        state: ImplicitState | None = None,
    ) -> StepResult:  # fmt: skip
        """One step from ``state`` (an :class:`ImplicitState`; ``None``: the defaults, no
        Jacobian yet); ``StepResult.state`` is the state for the next step, also when the
        Newton iterations failed (then without its Jacobian)."""
        if state is None:
            state = _DEFAULT_STATE
        if isinstance(dt, torch.Tensor):
            if self.newton.linear_solver != "dense":
                raise ValueError(
                    "Newton(linear_solver='gmres') supports the global layout only, not per_sample=True"
                )
            return self._step_per_sample(func, t0, y0, f0, dt, need_error, state)
        rtol, atol, jacobian, factor, eta = state
        tab = self.tableau
        h = float(dt)
        hg = h * tab.gamma
        a = tab.a_matrix
        shape = y0.shape
        recording = torch.is_grad_enabled()
        krylov = self.newton.linear_solver == "gmres"
        with torch.no_grad():
            if krylov:  # matrix-free: the corrections solve (I - hg J(t0, y0)) d = g by GMRES
                f_ref = func(t0, y0.detach())
                lu: Any = _KrylovOperator(func, t0, y0.detach(), f_ref, hg, self.newton)
            else:
                if jacobian is None or not self.newton.reuse_jacobian:
                    jacobian, factor = jacobians(func, t0, y0, batched=False)[0], None
                factor = _factor(jacobian, factor, hg)
                lu = factor[0]
        ks = [f0]
        theta_max = 0.0
        rows, error_row = _stage_rows(tab, y0)
        for i in range(1, tab.stages):
            if i == 1:  # y0 + h a_10 k_0
                base = torch.add(y0, f0, alpha=h * a[1, 0]) if a[1, 0] != 0 else y0
            else:  # y0 + h sum_j a_ij k_j, one product over the stacked stages
                base = torch.add(y0, torch.stack(ks, -1) @ rows[i], alpha=h)
            t_i = t0 + tab.c[i] * h
            with torch.no_grad():
                guess = base + hg * _predicted_derivative(tab.c, i, ks)
                inv_scale = _norm_weights(guess, rtol, atol)
                y_i, ok, theta, eta = self._newton(
                    func, t_i, base.detach(), guess.detach(), hg, lu, eta, shape, inv_scale
                )
            if not ok:  # retry the smaller step with a fresh Jacobian
                failed = ImplicitState(rtol, atol, None, None, eta)
                return StepResult(y0, (), tuple(ks), None, converged=False, state=failed)
            theta_max = max(theta_max, theta)
            if recording and (y0.requires_grad or f0.requires_grad):  # f0 sees f's parameters
                if krylov:
                    y_i = _krylov_implicit_function_step(func, t_i, base, y_i, hg, self.newton)
                else:
                    y_i = self._implicit_function_step(func, t_i, base, y_i, hg, shape)
            ks.append((y_i - base) / hg)
        if self.newton.reuse_jacobian and theta_max > 0.1:
            jacobian = None  # converging slowly: re-evaluate at the next step
        y1 = y_i if tab.stiffly_accurate else y0 + sum((h * bj) * k for bj, k in zip(tab.b, ks) if bj != 0)
        errors: tuple[torch.Tensor, ...] = ()
        if need_error and error_row is not None:  # fixed-step tableaux have no error weights
            errors = (torch.stack(ks, -1) @ error_row,)
        f1 = ks[-1] if tab.stiffly_accurate else None
        return StepResult(y1, errors, tuple(ks), f1, state=ImplicitState(rtol, atol, jacobian, factor, eta))

    def _step_per_sample(
        self,
        func: Func,
        t0: torch.Tensor,
        y0: torch.Tensor,
        f0: torch.Tensor,
        dt: torch.Tensor,
        need_error: bool,
        state: ImplicitState,
    ) -> StepResult:
        """The step for a batch ``[B, ...]`` with its own ``dt [B]``: per-sample Jacobians
        ``[B, N, N]`` at the step's start (rows of ``f`` are independent samples), batched
        factorisations, and Newton iterations whose convergence is judged per sample; a sample
        whose iterations fail gets ``converged = False`` (the loop rejects and shrinks its step).
        Nothing is reused across steps: ``state`` (tolerances, last rate) is returned as is."""
        tab = self.tableau
        a = tab.a_matrix
        batch, shape = y0.shape[0], y0.shape
        n = y0[0].numel()
        col = (batch,) + (1,) * (len(shape) - 1)
        moving = dt > 0
        h = torch.where(moving, dt, 1.0).to(y0.dtype)
        hg = (h * tab.gamma).view(col)
        recording = torch.is_grad_enabled() and (y0.requires_grad or f0.requires_grad)
        with torch.no_grad():
            jac = jacobians(func, t0, y0, batched=True)[0]
            eye = torch.eye(n, dtype=jac.dtype, device=jac.device)
            solve = dense_solver(eye - hg.view(-1, 1, 1) * jac)
        ks = [f0]
        converged = torch.ones(batch, dtype=torch.bool, device=y0.device)
        y_i = y0
        rows, error_row = _stage_rows(tab, y0)
        h_col = h.view(col)
        for i in range(1, tab.stages):
            if i == 1:
                base = torch.addcmul(y0, h_col, f0, value=a[1, 0]) if a[1, 0] != 0 else y0
            else:  # y0 + h sum_j a_ij k_j, one product over the stacked stages
                base = torch.addcmul(y0, h_col, torch.stack(ks, -1) @ rows[i])
            t_i = t0 + tab.c[i] * dt
            with torch.no_grad():
                guess = base + hg * _predicted_derivative(tab.c, i, ks)
                y_i, ok = self._newton_batched(func, t_i, base.detach(), guess.detach(), hg, solve, state,
                                               moving & converged)  # fmt: skip
            converged = converged & ok
            if recording:
                y_i = self._implicit_function_step_batched(func, t_i, base, y_i, hg)
            ks.append((y_i - base) / hg)
        y1 = (
            y_i
            if tab.stiffly_accurate
            else y0 + sum((h * bj).view(col) * k for bj, k in zip(tab.b, ks) if bj != 0)
        )
        errors: tuple[torch.Tensor, ...] = ()
        if need_error and error_row is not None:
            errors = (torch.stack(ks, -1) @ error_row,)
        y1 = torch.where(moving.view(col), y1, y0)
        return StepResult(
            y1, errors, tuple(ks), ks[-1] if tab.stiffly_accurate else None, converged | ~moving, state=state
        )

    def _newton_batched(self, func: Func, t: torch.Tensor, base: torch.Tensor, y: torch.Tensor, hg: torch.Tensor,
                        solve: Callable[[torch.Tensor], torch.Tensor], state: ImplicitState,
                        active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Per-sample simplified Newton: returns the stages and which samples converged."""
        batch, shape = y.shape[0], y.shape
        col = (batch,) + (1,) * (len(shape) - 1)
        done = ~active
        failed = torch.zeros_like(active)
        prev = torch.full((batch,), math.inf, dtype=torch.float64, device=y.device)
        eta = torch.full((batch,), max(state.eta, 1e-16) ** 0.8, dtype=torch.float64, device=y.device)
        inv_scale = _norm_weights(y, state.rtol, state.atol)
        for it in range(self.newton.max_iters):
            g = y - base - hg * func(t, y)
            delta = solve(g.reshape(batch, -1)).view(shape)
            live = ~done & ~failed
            y = torch.where(live.view(col), y - delta, y)
            norm = torch.linalg.vector_norm((delta * inv_scale).reshape(batch, -1), dim=-1).to(torch.float64)
            norm = norm / math.sqrt(delta[0].numel())
            theta = norm / prev
            if it > 0:
                eta = theta / (1.0 - theta)
                failed = failed | (live & (theta >= 1.0))
            failed = failed | (live & ~torch.isfinite(norm))
            newly = live & ~failed & (eta * norm <= self.newton.kappa)
            done = done | newly
            prev = norm
            if not bool((~done & ~failed).any()):  # one host read per iteration
                break
        converged = done & ~failed
        return y, converged | ~active

    def _implicit_function_step_batched(
        self, func: Func, t: torch.Tensor, base: torch.Tensor, y: torch.Tensor, hg: torch.Tensor
    ) -> torch.Tensor:
        """The per-sample implicit-function-theorem step (see :meth:`_implicit_function_step`)."""
        batch, shape = y.shape[0], y.shape
        y = y.detach()
        with torch.no_grad():
            jac = jacobians(func, t, y, batched=True)[0]
            eye = torch.eye(jac.shape[-1], dtype=jac.dtype, device=jac.device)
            m = eye - hg.view(-1, 1, 1) * jac
        g = y - base - hg * func(t, y)
        return y - torch.linalg.solve(m, g.reshape(batch, -1, 1)).view(shape)

    def _newton(
        self,
        func: Func,
        t: Any,
        base: torch.Tensor,
        y: torch.Tensor,
        hg: float,
        lu: Any,
        last_eta: float,
        shape: torch.Size,
        inv_scale: torch.Tensor,
    ) -> tuple[torch.Tensor, bool, float, float]:
        """Simplified Newton on ``G(Y) = Y - base - hg f(t, Y)`` from ``last_eta`` (the last
        converged iteration's ``eta``) with the norm's weights ``inv_scale``
        (:func:`_norm_weights`); returns ``(Y, converged, rate, eta)``, the ``eta`` to carry on
        (the new one when converged, else the one given)."""
        prev = None
        theta = 0.0
        eta = max(last_eta, 1e-16) ** 0.8  # until a rate is measured, the last one's
        root_n = math.sqrt(y.numel())
        for _ in range(self.newton.max_iters):
            g = torch.sub(y - base, func(t, y), alpha=hg)
            if isinstance(lu, _KrylovOperator):
                delta = lu.solve(g)
            else:
                delta = lu(g.reshape(-1)).view(shape)
            y = y - delta
            norm = float(torch.linalg.vector_norm(delta * inv_scale)) / root_n
            if not math.isfinite(norm):
                return y, False, math.inf, last_eta
            if prev is not None:
                theta = norm / prev if prev > 0 else 0.0
                if theta >= 1.0:
                    return y, False, theta, last_eta
                eta = theta / (1.0 - theta)
            if eta * norm <= self.newton.kappa:
                return y, True, theta, eta
            prev = norm
        return y, False, theta, last_eta

    def _implicit_function_step(
        self, func: Func, t: Any, base: torch.Tensor, y: torch.Tensor, hg: float, shape: torch.Size
    ) -> torch.Tensor:
        """One Newton step with the exact Jacobian at the converged stage, recorded: its
        derivative is the implicit function theorem's (see the module docstring)."""
        y = y.detach()
        with torch.no_grad():
            jac = jacobians(func, t, y, batched=False)[0]
            m = torch.eye(jac.shape[0], dtype=jac.dtype, device=jac.device) - hg * jac
        g = y - base - hg * func(t, y)
        return y - torch.linalg.solve(m, g.reshape(-1, 1)).view(shape)


# (tableau, dtype, device) -> (rows of a as tensors, the error weights or None): constants
_ROWS: dict[
    tuple[ESDIRKTableau, torch.dtype, torch.device], tuple[list[torch.Tensor | None], torch.Tensor | None]
] = {}


def _stage_rows(tab: ESDIRKTableau, y: torch.Tensor) -> tuple[list[torch.Tensor | None], torch.Tensor | None]:
    """Row ``i`` of ``a`` below the diagonal (``a_i0 .. a_i,i-1``) as a tensor for each stage
    ``i >= 2``, and the error weights ``e`` (``None`` when all are zero), cached per dtype and
    device: a stage's base ``y0 + h sum_j a_ij k_j`` is then one stack and one product instead
    of two operations per term."""
    key = (tab, y.dtype, y.device)
    cached = _ROWS.get(key)
    if cached is None:
        with torch.inference_mode(False):  # a cached constant must outlive inference mode
            rows: list[torch.Tensor | None] = [None, None] + [
                torch.tensor(tab.a_matrix[i, :i], dtype=y.dtype, device=y.device)
                for i in range(2, tab.stages)
            ]
            error = torch.tensor(tab.e, dtype=y.dtype, device=y.device) if any(tab.e) else None
        cached = _ROWS[key] = (rows, error)
    return cached


def _norm_weights(guess: torch.Tensor, rtol: float, atol: float) -> torch.Tensor:
    """``1 / (atol + rtol |guess|)``: the weights of a stage's Newton norm, fixed for all its
    iterations from the starting guess, so that the rate ``theta`` compares corrections in one
    norm (Hairer & Wanner fix theirs for the whole step, from ``y0``). Taking them from each new
    iterate instead gave the same steps and errors on ``benchmarks/stiff.py`` at three more
    operations per iteration."""
    return torch.reciprocal(torch.add(guess.abs(), atol / rtol).mul_(rtol))


def _predicted_derivative(c: tuple[float, ...], i: int, ks: list[torch.Tensor]) -> torch.Tensor:
    """Newton's starting guess for stage ``i``'s derivative: the last two stage derivatives
    extrapolated linearly in stage time to ``c_i`` (the last one alone when their times
    coincide). Measured against the last derivative alone: 15% fewer evaluations on Van der Pol
    (mu = 1000) and 9% on Robertson with Kvaerno5."""
    if i < 2 or c[i - 1] == c[i - 2]:
        return ks[-1]
    slope = (c[i] - c[i - 1]) / (c[i - 1] - c[i - 2])
    return ks[-1] + slope * (ks[-1] - ks[-2])


def _factor(
    jacobian: torch.Tensor | None,
    factor: tuple[Callable[[torch.Tensor], torch.Tensor], float] | None,
    hg: float,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], float]:
    """``(b -> (I - hg J)^{-1} b, hg)``: ``factor`` itself while it was made for this ``hg``
    (and the same ``J``: a new Jacobian comes with ``factor = None``), else a new one."""
    if factor is not None and factor[1] == hg:
        return factor
    assert jacobian is not None
    eye = torch.eye(jacobian.shape[0], dtype=jacobian.dtype, device=jacobian.device)
    return dense_solver(eye - hg * jacobian), hg


def _float(value: Any, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (tuple, list)):
        return min(_float(v, default) for v in value)
    return float(torch.as_tensor(value).min())


# -- the methods ---------------------------------------------------------------------------------


class ImplicitEuler(DiagonallyImplicitRK):
    """Backward Euler, first order, L-stable; error estimate ``h/2 (f1 - f0)`` (its difference
    from explicit Euler, which estimates the local error ``-h^2/2 y''``)."""

    name: ClassVar[str] = "implicit_euler"
    order: ClassVar[int] = 1
    error_order: ClassVar[int | None] = 2
    tableau = ESDIRKTableau(c=(0.0, 1.0), a=((0.0, 1.0),), b=(0.0, 1.0), e=(-0.5, 0.5))


_G3 = 0.4358665215
_K3_LAST = (0.30880996997303606, 1.490563388254108, -1.2352398797271447, _G3)


class Kvaerno3(DiagonallyImplicitRK):
    """Kværnø's ESDIRK 3(2), four stages, ``gamma = 0.4358665215`` (Kværnø 2004)."""

    name: ClassVar[str] = "kvaerno3"
    order: ClassVar[int] = 3
    error_order: ClassVar[int | None] = 3
    tableau = ESDIRKTableau(
        c=(0.0, 2 * _G3, 1.0, 1.0),
        a=((_G3, _G3), (0.4905633884191082, 0.0735700900808919, _G3), _K3_LAST),
        b=_K3_LAST,  # stiffly accurate: the last stage is the solution
        e=(-0.18175341844607212, 1.416993298173216, -1.6711064012271446, _G3),
    )


_G4 = 0.5728160625
_K4_LAST = (0.1972165483210286, 0.1768437839066134, 0.8154421814035516, -0.762318576131193, _G4)


class Kvaerno4(DiagonallyImplicitRK):
    """Kværnø's ESDIRK 4(3), five stages, ``gamma = 0.5728160625`` (Kværnø 2004)."""

    name: ClassVar[str] = "kvaerno4"
    order: ClassVar[int] = 4
    error_order: ClassVar[int | None] = 4
    tableau = ESDIRKTableau(
        c=(0.0, 2 * _G4, 0.5971049876806123, 1.0, 1.0),
        a=(
            (_G4, _G4),
            (0.16723546204189954, -0.14294653686128728, _G4),
            (0.26260329027397794, -0.3119043274147849, 0.4764849746408077, _G4),
            _K4_LAST,
        ),
        b=_K4_LAST,  # stiffly accurate
        e=(-0.06538674195294933, 0.4887481113213983, 0.33895720676274393, -1.3351346386311929, _G4),
    )


_G5 = 0.26
_K5_LAST = (
    0.13659751177640292,
    0.0,
    -0.05496908796538376,
    -0.04118626728321046,
    0.629933048990164,
    0.06962479448202728,
    _G5,
)


class Kvaerno5(DiagonallyImplicitRK):
    """Kværnø's ESDIRK 5(4), seven stages, ``gamma = 0.26`` (Kværnø 2004): the default stiff
    solver."""

    name: ClassVar[str] = "kvaerno5"
    order: ClassVar[int] = 5
    error_order: ClassVar[int | None] = 5
    tableau = ESDIRKTableau(
        c=(0.0, 0.52, 1.230333209967908, 0.8957659843500759, 0.43639360985864756, 1.0, 1.0),
        a=(
            (_G5, _G5),
            (0.13, 0.8403332099679081, _G5),
            (0.22371961478320504, 0.476755323197997, -0.06470895363112615, _G5),
            (0.16648564323248322, 0.1045001884159172, 0.03631482272098715, -0.13090704451073998, _G5),
            (0.13855640231268224, 0.0, -0.04245337201752043, 0.02446657898003141, 0.6194303907248068, _G5),
            _K5_LAST,
        ),
        b=_K5_LAST,  # stiffly accurate
        e=(
            -0.00195889053627932,
            0.0,
            -0.01251571594786333,
            -0.06565284626324187,
            0.01050265826535723,
            -0.1903752055179727,
            _G5,
        ),
    )


class Trapezoid(DiagonallyImplicitRK):
    """The trapezoidal rule (Crank–Nicolson), order 2, A-stable but not L-stable, as a two-stage
    ESDIRK (the Lobatto IIIA method with two stages; Hairer & Wanner, *Solving ODEs II*, IV.3).
    Fixed steps (no error estimate)."""

    name: ClassVar[str] = "trapezoid"
    order: ClassVar[int] = 2
    tableau = ESDIRKTableau(c=(0.0, 1.0), a=((0.5, 0.5),), b=(0.5, 0.5), e=(0.0, 0.0))


_G_SDIRK2 = 1.0 - math.sqrt(2.0) / 2


class SDIRK2(DiagonallyImplicitRK):
    """Alexander's two-stage SDIRK, order 2, L-stable, stiffly accurate, ``gamma = 1 - 1/sqrt(2)``
    (R. Alexander, *Diagonally implicit Runge–Kutta methods for stiff ODEs*, SIAM J. Numer. Anal.
    14, 1977), the coefficients of torchdiffeq's ``sdirk2``. Written as an ESDIRK whose explicit
    first stage (``f0``) has weight zero. Fixed steps."""

    name: ClassVar[str] = "sdirk2"
    order: ClassVar[int] = 2
    tableau = ESDIRKTableau(
        c=(0.0, _G_SDIRK2, 1.0),
        a=((0.0, _G_SDIRK2), (0.0, 1.0 - _G_SDIRK2, _G_SDIRK2)),
        b=(0.0, 1.0 - _G_SDIRK2, _G_SDIRK2),
        e=(0.0, 0.0, 0.0),
    )


_D_TRBDF2 = 1.0 - math.sqrt(2.0) / 2  # half of gamma = 2 - sqrt(2)
_W_TRBDF2 = math.sqrt(2.0) / 4


class TRBDF2(DiagonallyImplicitRK):
    """TR-BDF2 as a three-stage ESDIRK, order 2, L-stable, stiffly accurate: a trapezoidal stage
    to ``t0 + gamma h`` with ``gamma = 2 - sqrt(2)``, then BDF2 (R. E. Bank et al., *Transient
    simulation of silicon devices and circuits*, IEEE Trans. CAD 4, 1985; the ESDIRK form of
    M. E. Hosea & L. F. Shampine, *Analysis and implementation of TR-BDF2*, Appl. Numer. Math.
    20, 1996). Fixed steps."""

    name: ClassVar[str] = "trbdf2"
    order: ClassVar[int] = 2
    tableau = ESDIRKTableau(
        c=(0.0, 2 * _D_TRBDF2, 1.0),
        a=((_D_TRBDF2, _D_TRBDF2), (_W_TRBDF2, _W_TRBDF2, _D_TRBDF2)),
        b=(_W_TRBDF2, _W_TRBDF2, _D_TRBDF2),
        e=(0.0, 0.0, 0.0),
    )


def gmres(matvec: Any, b: torch.Tensor, rtol: float, max_iters: int, strict: bool = False) -> torch.Tensor:
    """Solve ``A x = b`` by GMRES (Arnoldi with modified Gram–Schmidt, one cycle of at most
    ``max_iters`` iterations), stopping at a residual ``rtol * |b|``; ``matvec(v) = A v``.
    With ``strict``, not reaching the residual is an error (inside Newton it is not: the
    iteration corrects an inexact solve)."""
    shape = b.shape
    r = b.reshape(-1)
    beta = float(torch.linalg.vector_norm(r))
    if beta == 0.0 or not math.isfinite(beta):
        return torch.zeros_like(b)
    residual = math.inf
    m = min(max_iters, r.numel())
    basis = [r / beta]
    hess = torch.zeros(m + 1, m, dtype=torch.float64, device=b.device)
    e1 = torch.zeros(m + 1, dtype=torch.float64, device=b.device)
    e1[0] = beta
    coef = None
    for j in range(m):
        w = matvec(basis[j].view(shape)).reshape(-1)
        for i in range(j + 1):
            hess[i, j] = torch.dot(w, basis[i]).to(torch.float64)
            w = w - hess[i, j].to(w.dtype) * basis[i]
        hess[j + 1, j] = torch.linalg.vector_norm(w).to(torch.float64)
        sub = hess[: j + 2, : j + 1]
        coef = torch.linalg.lstsq(sub, e1[: j + 2].unsqueeze(-1)).solution.squeeze(-1)
        residual = float(torch.linalg.vector_norm(e1[: j + 2] - sub @ coef))
        if residual <= rtol * beta or float(hess[j + 1, j]) <= 1e-300:
            break
        basis.append(w / hess[j + 1, j].to(w.dtype))
    assert coef is not None
    if strict and residual > rtol * beta:
        raise RuntimeError(
            f"GMRES reached a relative residual of {residual / beta:.1e} > {rtol:g} in {m} iterations: "
            "raise Newton(krylov_iters=...) (or loosen krylov_rtol)"
        )
    x = sum(c.to(b.dtype) * v for c, v in zip(coef, basis))
    return x.view(shape)  # type: ignore[union-attr]


class _KrylovOperator:
    """``M = I - hg J(t, y)`` applied matrix-free: ``J v`` by a forward difference of ``f``."""

    def __init__(self, func: Any, t: Any, y: torch.Tensor, f_ref: torch.Tensor, hg: float, newton: Newton):
        self.func, self.t, self.y, self.f_ref, self.hg, self.newton = func, t, y, f_ref, hg, newton
        self.y_norm = float(torch.linalg.vector_norm(y))

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        v_norm = float(torch.linalg.vector_norm(v))
        if v_norm == 0.0:
            return v
        eps = math.sqrt(torch.finfo(v.dtype).eps) * (1.0 + self.y_norm) / v_norm
        jv = (self.func(self.t, self.y + eps * v) - self.f_ref) / eps
        return v - self.hg * jv

    def solve(self, g: torch.Tensor) -> torch.Tensor:
        return gmres(self.matvec, g, self.newton.krylov_rtol, self.newton.krylov_iters)


class _KrylovSolveFn(torch.autograd.Function):
    """``x = M^{-1} g`` for the implicit-function step: GMRES forward, and GMRES with the
    transposed operator (vector-Jacobian products, exact) backward."""

    @staticmethod
    def forward(
        ctx: Any, g: torch.Tensor, func: Any, t: Any, y: torch.Tensor, hg: float, newton: Newton
    ) -> torch.Tensor:
        ctx.func, ctx.t, ctx.y, ctx.hg, ctx.newton = func, t, y, hg, newton
        with torch.no_grad():
            op = _KrylovOperator(func, t, y, func(t, y), hg, newton)
            return gmres(op.matvec, g, newton.krylov_rtol, newton.krylov_iters, strict=True)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        func, t, y, hg, newton = ctx.func, ctx.t, ctx.y, ctx.hg, ctx.newton
        with torch.enable_grad():
            y_ = y.detach().requires_grad_(True)
            out = func(t, y_)

        def rmatvec(v: torch.Tensor) -> torch.Tensor:
            (jtv,) = torch.autograd.grad(out, y_, v, retain_graph=True)
            return v - hg * jtv

        solved = gmres(rmatvec, grad, newton.krylov_rtol, newton.krylov_iters, strict=True)
        return solved, None, None, None, None, None


def _krylov_implicit_function_step(func: Any, t: Any, base: torch.Tensor, y: torch.Tensor, hg: float,
                                   newton: Newton) -> torch.Tensor:  # fmt: skip
    """The implicit-function-theorem step of :class:`DiagonallyImplicitRK` without a matrix."""
    y = y.detach()
    g = y - base - hg * func(t, y)
    return y - _KrylovSolveFn.apply(g, func, t, y, hg, newton)
