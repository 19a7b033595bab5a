r"""Fully implicit Runge–Kutta methods (all stages coupled): Radau IIA and Gauss–Legendre.

An ``s``-stage method with a full matrix :math:`A` solves, per step, one nonlinear system for
the stage increments :math:`Z_i = Y_i - y_0`,

.. math:: G(Z) = Z - h\,(A \otimes I)\,F(Z) = 0, \qquad F_j(Z) = f(t_0 + c_j h,\; y_0 + Z_j),

of size :math:`sN`, by simplified Newton iterations with the iteration matrix
:math:`M = I_{sN} - h\,(A \otimes J)`, :math:`J` the Jacobian of ``f`` at the step's start
(Hairer & Wanner, *Solving ODEs II*, IV.8). ``M`` is dense (``sN x sN``) and factorised once per
step size; ``J`` is reused across steps while Newton converges fast, as in the ESDIRK engine
(:mod:`torchnde.solvers.implicit`), with the same stopping rule: with the rate
:math:`\theta_k = \|\Delta_k\|/\|\Delta_{k-1}\|`, stop when :math:`\theta/(1-\theta)\,\|\Delta\|
\le \kappa`, fail (``converged=False``: the loop retries smaller, or stops with constant steps)
when :math:`\theta \ge 1` or after ``max_iters`` iterations.

The stage derivatives are recovered as :math:`K = (hA)^{-1} Z` and the solution as
:math:`y_1 = y_0 + (b^T A^{-1}) Z` (:math:`Z_s` itself for the stiffly accurate Radau IIA
methods), which does not amplify the Newton residual through a stiff ``f`` (Hairer & Wanner
IV.8, eq. 8.2b).

Gradients do not go through the iterations: while autograd records, the converged stages take
one Newton step with the exact Jacobian :math:`M_* = I - h\,[a_{ij} J(Y_j)]` at the solution,
:math:`Z \leftarrow \bar Z - M_*^{-1} G(\bar Z)` with :math:`\bar Z` and :math:`M_*` held
constant, whose derivative is the implicit function theorem's.

The solver's state is the ESDIRK engine's :class:`~torchnde.solvers.ImplicitState` (Newton
tolerances, Jacobian, factorisation keyed by ``h``, last rate). Per-sample steps (``[B]``
step sizes) evaluate per-sample Jacobians every step and judge convergence per sample. Dense
output is the cubic Hermite interpolant. Radau IIA5 has an embedded error estimate (adaptive
steps); the other methods have none (fixed steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from .base import Func, StepResult
from .explicit_rk import hermite_interpolant
from .implicit import ImplicitState, Newton, NewtonSolver
from .jacobian import dense_solver, jacobians

__all__ = [
    "FIRKTableau",
    "FullyImplicitRK",
    "GaussLegendre4",
    "GaussLegendre6",
    "ImplicitMidpoint",
    "RadauIIA3",
    "RadauIIA5",
]

_TOL = 1e-12
_DEFAULT_STATE = ImplicitState()


@dataclass(frozen=True)
class FIRKTableau:
    """A fully implicit tableau: nodes ``c``, the full ``s x s`` matrix ``a`` (rows) and weights
    ``b``. ``a`` must be invertible (the stage derivatives are recovered from the increments).
    An embedded estimate (optional): ``gamma0``, the weight of ``f0``, and ``e``, the weights of
    the stage increments ``Z`` in ``y_hat - y1 = gamma0 h f0 + sum_j e_j Z_j``. Validated on
    construction."""

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    gamma0: float = 0.0
    e: tuple[float, ...] = ()
    stages: int = field(init=False)
    a_matrix: np.ndarray = field(init=False, repr=False, compare=False)
    a_inverse: np.ndarray = field(init=False, repr=False, compare=False)
    d: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        s = len(self.c)
        if len(self.a) != s or len(self.b) != s or any(len(row) != s for row in self.a):
            raise ValueError("FIRK tableau shapes disagree: a must be s x s, b and c of length s")
        a = np.array(self.a, dtype=np.float64)
        for i in range(s):
            if abs(math.fsum(self.a[i]) - self.c[i]) > _TOL:
                raise ValueError(f"row {i} of a sums to {math.fsum(self.a[i])!r}, not c[{i}] = {self.c[i]!r}")
        if abs(math.fsum(self.b) - 1) > _TOL:
            raise ValueError("weights b must sum to 1")
        if self.e and len(self.e) != s:
            raise ValueError("error weights e must have one entry per stage")
        if abs(np.linalg.det(a)) < 1e-14:
            raise ValueError("a fully implicit tableau needs an invertible a")
        a_inv = np.linalg.inv(a)
        object.__setattr__(self, "stages", s)
        object.__setattr__(self, "a_matrix", a)
        object.__setattr__(self, "a_inverse", a_inv)
        object.__setattr__(self, "d", np.array(self.b) @ a_inv)

    @property
    def stiffly_accurate(self) -> bool:
        """The last stage is the solution (the last row of ``a`` equals ``b``, ``c_s = 1``)."""
        return self.c[-1] == 1 and bool(np.allclose(self.a_matrix[-1], self.b, rtol=0, atol=1e-15))


class FullyImplicitRK(NewtonSolver):
    """Engine for fully implicit Runge–Kutta methods; subclasses set ``tableau``, ``order``,
    ``name``. Options as :class:`~torchnde.solvers.implicit.NewtonSolver`'s (dense linear
    solver only)."""

    tableau: ClassVar[FIRKTableau]
    supports_per_sample: ClassVar[bool] = True
    error_order: ClassVar[int | None] = None

    def __init__(
        self, newton: Newton | None = None, jacobian: Callable[..., torch.Tensor] | str | None = None
    ):
        super().__init__(newton, jacobian)
        if self.newton.linear_solver != "dense":
            raise ValueError(f"{type(self).__name__} supports Newton(linear_solver='dense') only")
        # ks holds f0 first (weight 0), then the stages: the Hermite interpolant's layout
        self._dense = hermite_interpolant((0.0, *self.tableau.b), self.order)

    # -- one step -------------------------------------------------------------------------------

    def step(
        self, func: Func, t0: Any, y0: torch.Tensor, f0: torch.Tensor, dt: Any, need_error: bool = True,
        state: ImplicitState | None = None,
    ) -> StepResult:  # fmt: skip
        """One step from ``state`` (``None``: the defaults, no Jacobian yet); ``StepResult.state``
        is the next step's, also after a failed Newton solve (then without its Jacobian)."""
        if state is None:
            state = _DEFAULT_STATE
        per_sample = isinstance(dt, torch.Tensor)
        rtol, atol, jacobian, factor, eta = state
        tab = self.tableau
        s = tab.stages
        shape = y0.shape
        batch = shape[0] if per_sample else 1
        n = y0.numel() // batch
        recording = torch.is_grad_enabled() and (y0.requires_grad or f0.requires_grad)
        if per_sample:
            moving = dt > 0
            h: Any = torch.where(moving, dt, 1.0).to(y0.dtype)  # [B]
            h_col = h.view(batch, 1, 1)
            times = [t0 + ci * dt for ci in tab.c]
        else:
            h = float(dt)
            h_col = h
            times = [t0 + ci * h for ci in tab.c]
        a = torch.as_tensor(tab.a_matrix, dtype=y0.dtype, device=y0.device)

        def stage_state(z: torch.Tensor, j: int) -> torch.Tensor:  # z: [B, s, N]
            return y0 + (z[:, j].reshape(shape) if per_sample else z[0, j].view(shape))

        def residual(z: torch.Tensor) -> torch.Tensor:
            fs = torch.stack([func(times[j], stage_state(z, j)).reshape(batch, n) for j in range(s)], 1)
            return z - h_col * torch.einsum("ij,bjn->bin", a, fs)

        with torch.no_grad():
            if per_sample:
                jac = jacobians(func, t0, y0, batched=True)[0]  # [B, N, N]
                solve = dense_solver(self._iteration_matrix(jac, h))
            active = moving if per_sample else torch.ones(1, dtype=torch.bool, device=y0.device)
            # Newton starts from the explicit Euler guess Z_i = c_i h f0
            c = torch.as_tensor(tab.c, dtype=y0.dtype, device=y0.device).view(1, s, 1)
            z0 = (h_col * c) * f0.reshape(batch, 1, n)
            if per_sample:
                z, ok, theta, new_eta = self._newton(residual, solve, z0, y0.reshape(batch, n), state, active)
            else:
                # a reused Jacobian that fails is replaced by a fresh one before the step fails
                for _ in range(2):
                    fresh = jacobian is None or not self.newton.reuse_jacobian
                    if fresh:
                        jacobian, factor = jacobians(func, t0, y0, batched=False)[0], None
                    if factor is None or factor[1] != h:
                        matrix = self._iteration_matrix(jacobian[None], torch.tensor([h]))[0]
                        factor = (dense_solver(matrix), h)
                    solve = _unbatched(factor[0])
                    z, ok, theta, new_eta = self._newton(residual, solve, z0, y0.reshape(1, n), state, active)
                    if fresh or bool(ok[0]):
                        break
                    jacobian = None
                jac = jacobian[None]
        if per_sample:
            converged: Any = ok | ~moving
        else:
            converged = bool(ok[0])
            if not converged:
                failed = ImplicitState(rtol, atol, None, None, eta)
                return StepResult(y0, (), (f0,), None, converged=False, state=failed)
            eta = float(new_eta[0])
            if self.newton.reuse_jacobian and float(theta[0]) > 0.1:
                jacobian = None  # converging slowly: re-evaluate at the next step
        if recording:
            z = self._implicit_function_step(func, times, y0, z.detach(), h_col, residual, per_sample)
        a_inv = torch.as_tensor(tab.a_inverse, dtype=y0.dtype, device=y0.device)
        ks_flat = torch.einsum("ij,bjn->bin", a_inv, z) / h_col
        if tab.stiffly_accurate:
            incr = z[:, -1]
        else:
            incr = torch.einsum("j,bjn->bn", torch.as_tensor(tab.d, dtype=y0.dtype, device=y0.device), z)
        y1 = y0 + incr.reshape(shape)
        ks = (f0, *(ks_flat[:, j].reshape(shape) for j in range(s)))
        errors: tuple[torch.Tensor, ...] = ()
        if need_error and tab.e:
            h_b = h.view(batch, 1) if per_sample else h
            errors = (self._error_estimate(f0.reshape(batch, n), z, h_b, jac).reshape(shape),)
        if per_sample:
            y1 = torch.where(moving.view((batch,) + (1,) * (len(shape) - 1)), y1, y0)
            return StepResult(y1, errors, ks, None, converged, state=state)
        return StepResult(y1, errors, ks, None, state=ImplicitState(rtol, atol, jacobian, factor, eta))

    def _error_estimate(self, f0: torch.Tensor, z: torch.Tensor, h: Any, jac: torch.Tensor) -> torch.Tensor:
        r"""The embedded estimate per unit step, ``[B, N]``: ``(I - h gamma0 J)^{-1} (gamma0 h f0 +
        sum_j e_j Z_j) / h`` (Hairer & Wanner, *Solving ODEs II*, IV.8, eqs. 8.19-8.20: the
        difference to an embedded third-order method with an explicit first stage, filtered by
        the iteration matrix so that it stays bounded for stiff components)."""
        tab = self.tableau
        e = torch.as_tensor(tab.e, dtype=z.dtype, device=z.device)
        raw = (tab.gamma0 * h) * f0 + torch.einsum("j,bjn->bn", e, z)
        with torch.no_grad():
            eye = torch.eye(jac.shape[-1], dtype=jac.dtype, device=jac.device)
            hg = h.view(-1, 1, 1) if isinstance(h, torch.Tensor) else h
            solve = dense_solver(eye - (hg * tab.gamma0) * jac)
        return solve(raw) / h

    def _iteration_matrix(self, jac: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``I - h (A kron J)`` for a batch of Jacobians ``[B, N, N]`` (one ``J`` for every stage)
        and step sizes ``[B]``: ``[B, sN, sN]``."""
        s = self.tableau.stages
        stacked = jac.unsqueeze(1).expand(-1, s, -1, -1)
        return self._stage_matrix(stacked, h)

    def _stage_matrix(self, jacs: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``I - h [a_ij J_j]`` from per-stage Jacobians ``[B, s, N, N]`` and ``h [B]``: block
        ``(i, j)`` is ``delta_ij I - h a_ij J_j``."""
        batch, s, n = jacs.shape[0], jacs.shape[1], jacs.shape[-1]
        a = torch.as_tensor(self.tableau.a_matrix, dtype=jacs.dtype, device=jacs.device)
        # blocks[b, i, p, j, q] = a[i, j] * J_j[b, p, q]
        blocks = a.view(1, s, 1, s, 1) * jacs.permute(0, 2, 1, 3).unsqueeze(1)
        eye = torch.eye(s * n, dtype=jacs.dtype, device=jacs.device)
        hv = h.to(device=jacs.device, dtype=jacs.dtype).view(-1, 1, 1)
        return eye - hv * blocks.reshape(batch, s * n, s * n)

    def _newton(
        self,
        residual: Callable[[torch.Tensor], torch.Tensor],
        solve: Callable[[torch.Tensor], torch.Tensor],
        z: torch.Tensor,
        y0: torch.Tensor,
        state: ImplicitState,
        active: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Simplified Newton on the stacked stage system, convergence judged per sample (one
        sample in the global layout). Returns ``(Z, converged [B], last rate [B], eta [B])``."""
        batch, s, n = z.shape
        done = ~active
        failed = torch.zeros_like(active)
        prev = torch.full((batch,), math.inf, dtype=torch.float64, device=z.device)
        theta = torch.zeros(batch, dtype=torch.float64, device=z.device)
        eta = torch.full((batch,), max(state.eta, 1e-16) ** 0.8, dtype=torch.float64, device=z.device)
        for it in range(self.newton.max_iters):
            delta = solve(residual(z).reshape(batch, s * n)).view(batch, s, n)
            live = ~done & ~failed
            z = torch.where(live.view(-1, 1, 1), z - delta, z)
            scale = state.atol + state.rtol * (y0.unsqueeze(1) + z).abs()
            norm = torch.linalg.vector_norm((delta / scale).reshape(batch, -1), dim=-1).to(torch.float64)
            norm = norm / math.sqrt(s * n)
            if it > 0:
                rate = torch.where(prev > 0, norm / prev, torch.zeros_like(norm))
                theta = torch.where(live, rate, theta)
                failed = failed | (live & (rate >= 1.0))
                eta = torch.where(live & (rate < 1.0), rate / (1.0 - rate), eta)
            failed = failed | (live & ~torch.isfinite(norm))
            done = done | (live & ~failed & (eta * norm <= self.newton.kappa))
            prev = norm
            if not bool((~done & ~failed).any()):  # one host read per iteration
                break
        converged = done & ~failed
        eta = torch.where(converged, eta, torch.full_like(eta, state.eta))
        return z, converged | ~active, theta, eta

    def _implicit_function_step(
        self,
        func: Func,
        times: list[Any],
        y0: torch.Tensor,
        z: torch.Tensor,
        h_col: Any,
        residual: Callable[[torch.Tensor], torch.Tensor],
        per_sample: bool,
    ) -> torch.Tensor:
        """One Newton step with the exact Jacobians at the converged stages, recorded: its
        derivative is the implicit function theorem's (see the module docstring)."""
        batch, s, n = z.shape
        with torch.no_grad():
            stage_jacs = []
            for j in range(s):
                y_j = y0 + (z[:, j].reshape(y0.shape) if per_sample else z[0, j].view(y0.shape))
                jac = jacobians(func, times[j], y_j, batched=per_sample)[0]
                stage_jacs.append(jac if per_sample else jac[None])
            h = h_col.view(-1) if per_sample else torch.tensor([h_col])
            m = self._stage_matrix(torch.stack(stage_jacs, 1), h)
        g = residual(z)
        return z - torch.linalg.solve(m, g.reshape(batch, s * n, 1)).view(batch, s, n)


def _unbatched(lu: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ``[1, M]`` batch solved by the global layout's ``b [M] -> x [M]``."""
    return lambda g: lu(g[0])[None]


# -- the methods ---------------------------------------------------------------------------------

_S3 = math.sqrt(3.0)
_S6 = math.sqrt(6.0)
_S15 = math.sqrt(15.0)


class ImplicitMidpoint(FullyImplicitRK):
    """The implicit midpoint rule, the one-stage Gauss–Legendre method: order 2, A-stable,
    symplectic (Hairer, Lubich & Wanner, *Geometric Numerical Integration*, 2nd ed., II.1)."""

    name: ClassVar[str] = "implicit_midpoint"
    order: ClassVar[int] = 2
    tableau = FIRKTableau(c=(0.5,), a=((0.5,),), b=(1.0,))


class GaussLegendre4(FullyImplicitRK):
    """Two-stage Gauss–Legendre collocation, order 4, A-stable, symplectic (J. C. Butcher,
    *Implicit Runge–Kutta processes*, Math. Comp. 18, 1964; Hairer & Wanner, *Solving ODEs II*,
    Table IV.5.1)."""

    name: ClassVar[str] = "gl4"
    order: ClassVar[int] = 4
    tableau = FIRKTableau(
        c=(0.5 - _S3 / 6, 0.5 + _S3 / 6),
        a=((0.25, 0.25 - _S3 / 6), (0.25 + _S3 / 6, 0.25)),
        b=(0.5, 0.5),
    )


class GaussLegendre6(FullyImplicitRK):
    """Three-stage Gauss–Legendre collocation, order 6, A-stable, symplectic (Butcher 1964;
    Hairer & Wanner, *Solving ODEs II*, Table IV.5.2)."""

    name: ClassVar[str] = "gl6"
    order: ClassVar[int] = 6
    tableau = FIRKTableau(
        c=(0.5 - _S15 / 10, 0.5, 0.5 + _S15 / 10),
        a=(
            (5 / 36, 2 / 9 - _S15 / 15, 5 / 36 - _S15 / 30),
            (5 / 36 + _S15 / 24, 2 / 9, 5 / 36 - _S15 / 24),
            (5 / 36 + _S15 / 30, 2 / 9 + _S15 / 15, 5 / 36),
        ),
        b=(5 / 18, 4 / 9, 5 / 18),
    )


class RadauIIA3(FullyImplicitRK):
    """Two-stage Radau IIA, order 3, L-stable, stiffly accurate (B. L. Ehle, *On Padé
    approximations to the exponential function and A-stable methods for the numerical solution
    of initial value problems*, Univ. of Waterloo report CSRR 2010, 1969; Hairer & Wanner,
    *Solving ODEs II*, Table IV.5.5)."""

    name: ClassVar[str] = "radauiia3"
    order: ClassVar[int] = 3
    tableau = FIRKTableau(c=(1 / 3, 1.0), a=((5 / 12, -1 / 12), (0.75, 0.25)), b=(0.75, 0.25))


# the real eigenvalue of the Radau IIA5 matrix: 1 / (3 + 3^(2/3) - 3^(1/3))
_G0_RADAU5 = 1.0 / (3.0 + 3.0 ** (2 / 3) - 3.0 ** (1 / 3))


class RadauIIA5(FullyImplicitRK):
    """Three-stage Radau IIA, order 5, L-stable, stiffly accurate: the method of Hairer &
    Wanner's RADAU5 (*Solving ODEs II*, Table IV.5.6; Ehle 1969). Adaptive: the embedded
    third-order estimate of Hairer & Wanner IV.8 (eqs. 8.19-8.20), with ``gamma0`` the real
    eigenvalue of ``A`` and ``e = gamma0 (-13 - 7 sqrt 6, -13 + 7 sqrt 6, -1) / 3``, filtered by
    ``(I - h gamma0 J)^{-1}`` (local error ``O(h^4)``)."""

    name: ClassVar[str] = "radauiia5"
    order: ClassVar[int] = 5
    error_order: ClassVar[int | None] = 4
    tableau = FIRKTableau(
        c=(0.4 - _S6 / 10, 0.4 + _S6 / 10, 1.0),
        a=(
            (11 / 45 - 7 * _S6 / 360, 37 / 225 - 169 * _S6 / 1800, -2 / 225 + _S6 / 75),
            (37 / 225 + 169 * _S6 / 1800, 11 / 45 + 7 * _S6 / 360, -2 / 225 - _S6 / 75),
            (4 / 9 - _S6 / 36, 4 / 9 + _S6 / 36, 1 / 9),
        ),
        b=(4 / 9 - _S6 / 36, 4 / 9 + _S6 / 36, 1 / 9),
        gamma0=_G0_RADAU5,
        e=(_G0_RADAU5 * (-13 - 7 * _S6) / 3, _G0_RADAU5 * (-13 + 7 * _S6) / 3, -_G0_RADAU5 / 3),
    )
