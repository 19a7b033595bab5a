r"""Fixed points :math:`z^* = f(z^*)` of a batch of maps: Anderson acceleration, Broyden's method
and damped iteration, with a fallback and a status when they do not converge.

The leading dimension of ``z`` is the batch: every sample has its own relative residual

.. math:: r(z) = \frac{\lVert f(z) - z\rVert_2}{\lVert f(z)\rVert_2 + \epsilon},

and the solve has converged when the largest is at most ``tol``. The methods work on the
flattened samples (``[batch, n]``); ``f`` is called on tensors of ``z0``'s shape, once per
iteration, under ``torch.no_grad()`` (the iterations are not differentiated: the deep
equilibrium model's gradients come from the implicit function theorem, see
:class:`torchnde.models.DEQ`).

- ``"anderson"``: Anderson acceleration, type II, in the form of H. F. Walker and P. Ni,
  *Anderson acceleration for fixed-point iterations*, SIAM J. Numer. Anal. 49(4), 2011. With the
  last ``m`` differences of iterates :math:`\Delta X` and of residuals :math:`\Delta G`
  (:math:`g = f(z) - z`), each iteration solves the regularised least-squares problem
  :math:`\gamma = \arg\min \lVert g_k - \Delta G\,\gamma\rVert^2 + \lambda\lVert\gamma\rVert^2`
  and steps to :math:`z_{k+1} = z_k + \beta g_k - (\Delta X + \beta\Delta G)\gamma`
  (``damping`` :math:`\beta`, ``ridge`` :math:`\lambda` relative to the mean of
  :math:`\mathrm{diag}\,\Delta G^\top\Delta G`).
- ``"broyden"``: Broyden's "good" method on :math:`g(z) = f(z) - z = 0` (C. G. Broyden, *A class of
  methods for solving nonlinear simultaneous equations*, Math. Comp. 19, 1965), as the deep
  equilibrium models use it (S. Bai, J. Z. Kolter, V. Koltun, *Deep equilibrium models*,
  NeurIPS 2019): the inverse Jacobian is kept as :math:`H = -I + UV^\top` with at most ``memory``
  rank-one terms (the oldest dropped), the step is :math:`s = -H g`, and the Sherman–Morrison
  update :math:`H \leftarrow H + (s - Hy)\,s^\top H / (s^\top H y)` with :math:`y = \Delta g`.
- ``"damped"``: :math:`z \leftarrow (1-\beta) z + \beta f(z)` (``damping`` :math:`\beta`, default
  0.5): slow, but it converges for every contraction, so it is the default fallback.

Each method returns the iterate of lowest residual per sample (not the last), so a diverging
tail does not spoil a good estimate. When the first method does not reach ``tol`` (or its
iterates become non-finite), the ``fallback`` method restarts from that best estimate with its
own budget, and each sample keeps whichever estimate is better.

```python
import torch
from torchnde.solvers import FixedPoint

A = torch.tensor([[0.5, 0.2], [-0.1, 0.3]])
b = torch.tensor([[1.0, 2.0]])
result = FixedPoint("anderson", tol=1e-8).solve(lambda z: z @ A.T + b, torch.zeros(1, 2))
exact = torch.linalg.solve(torch.eye(2) - A, b[0])
assert result.converged and torch.allclose(result.z[0], exact, atol=1e-6)
print(result.iterations, result.residual)
```
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .._names import did_you_mean
from .._solution import SolveError, Status

__all__ = [
    "FIXED_POINT_METHODS",
    "FixedPoint",
    "FixedPointError",
    "FixedPointResult",
    "FixedPointWarning",
    "relative_residual",
]

FIXED_POINT_METHODS = ("anderson", "broyden", "damped")
ON_FAILURE = ("warn", "raise", "ignore")
_DEFAULT_DAMPING = {"anderson": 1.0, "broyden": 1.0, "damped": 0.5}
_DEFAULT_MEMORY = {"anderson": 5, "broyden": 30, "damped": 0}
_EPS = 1e-12

Map = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class FixedPointResult:
    """What a fixed-point solve found.

    - ``z``: the estimate (``z0``'s shape): per sample, the iterate of lowest residual.
    - ``converged``: whether every sample's relative residual is at most the tolerance.
    - ``iterations``: evaluations of ``f`` (over the method and its fallback).
    - ``residual``: the largest relative residual :math:`\\lVert f(z)-z\\rVert/\\lVert f(z)\\rVert`
      over the batch; ``residuals``: each sample's (a ``[batch]`` tensor).
    - ``method``: the method that ran (``"anderson+damped"`` when the fallback ran too).
    - ``history``: the largest residual after each evaluation (for convergence plots).
    """

    z: torch.Tensor
    converged: bool
    iterations: int
    residual: float
    residuals: torch.Tensor
    method: str
    history: tuple[float, ...]


class FixedPointError(SolveError):
    """A fixed-point solve did not reach its tolerance (``on_failure="raise"``); ``result`` holds
    the :class:`FixedPointResult` with the best estimate."""

    status = Status.NO_CONVERGENCE

    def __init__(self, message: str, result: FixedPointResult):
        super().__init__(message)
        self.result = result


class FixedPointWarning(RuntimeWarning):
    """A fixed-point solve did not reach its tolerance (``on_failure="warn"``)."""


def relative_residual(fz: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Each sample's :math:`\\lVert f(z)-z\\rVert_2 / (\\lVert f(z)\\rVert_2 + 10^{-12})`; the leading
    dimension is the batch."""
    fz, z = fz.reshape(fz.shape[0], -1), z.reshape(z.shape[0], -1)
    return (fz - z).norm(dim=1) / (fz.norm(dim=1) + _EPS)


class _Best:
    """The lowest-residual iterate of each sample seen so far, and the history of the largest."""

    def __init__(self, z: torch.Tensor, res: torch.Tensor) -> None:
        self.z, self.res, self.last = z.clone(), res.clone(), res
        self.history = [float(res.max())]
        self.evaluations = 1

    def active(self, tol: float) -> torch.Tensor:
        """``[batch, 1]``: the samples whose last iterate is not yet within ``tol``."""
        return (self.last > tol)[:, None]

    def update(self, z: torch.Tensor, res: torch.Tensor) -> float:
        better = res < self.res  # a NaN residual is never better
        self.z = torch.where(better[:, None], z, self.z)
        self.res = torch.where(better, res, self.res)
        self.last = res
        self.evaluations += 1
        worst = float(res.max())
        self.history.append(worst)
        return worst


@dataclass(frozen=True)
class FixedPoint:
    """How to find a fixed point: the method and its options; :meth:`solve` runs it.

    - ``method``: ``"anderson"`` (default), ``"broyden"`` or ``"damped"`` (see the module's text).
    - ``tol``: the largest relative residual accepted (default ``1e-4``).
    - ``max_iter``: evaluations of ``f`` the method may spend (default 50).
    - ``fallback``: the method run from the best estimate when the first one fails (default
      ``"damped"``; ``None``: none); ``fallback_iter``: its budget (default ``max_iter``).
    - ``memory``: Anderson's window (default 5) / Broyden's rank (default 30: with fewer terms,
      dropping the oldest update can stall it).
    - ``damping``: Anderson's mixing :math:`\\beta` (default 1) or the damped iteration's (default
      0.5; also used when it is the fallback); Broyden takes none.
    - ``ridge``: Anderson's Tikhonov regularisation, relative (default ``1e-4``).
    - ``on_failure``: ``"warn"`` (default, a :class:`FixedPointWarning`), ``"raise"`` (a
      :class:`FixedPointError`) or ``"ignore"``; the result says ``converged`` in every case.

    ```python
    import torch
    from torchnde.solvers import FixedPoint

    result = FixedPoint("broyden", tol=1e-10).solve(torch.cos, torch.zeros(4, 1))  # z = cos z
    assert result.converged and abs(float(result.z[0]) - 0.7390851332) < 1e-8
    print(result.iterations, result.residual, result.method)
    ```
    """

    method: str = "anderson"
    tol: float = 1e-4
    max_iter: int = 50
    fallback: str | None = "damped"
    fallback_iter: int | None = None
    memory: int | None = None
    damping: float | None = None
    ridge: float = 1e-4
    on_failure: str = "warn"

    def __post_init__(self) -> None:
        for field, value in (("method", self.method), ("fallback", self.fallback)):
            if value is None and field == "fallback":
                continue
            if value not in FIXED_POINT_METHODS:
                raise ValueError(
                    f"FixedPoint({field}={value!r}): valid methods are {', '.join(FIXED_POINT_METHODS)}"
                    f"{' (or None)' if field == 'fallback' else ''}.{did_you_mean(value, FIXED_POINT_METHODS)}"
                )
        if self.on_failure not in ON_FAILURE:
            raise ValueError(
                f"FixedPoint(on_failure={self.on_failure!r}): valid are {', '.join(ON_FAILURE)}."
                f"{did_you_mean(self.on_failure, ON_FAILURE)}"
            )
        if not (isinstance(self.tol, (int, float)) and self.tol > 0):
            raise ValueError(f"FixedPoint(tol=...) must be a positive number, got {self.tol!r}")
        for field in ("max_iter", "memory"):
            value = getattr(self, field)
            if (field == "max_iter" or value is not None) and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"FixedPoint({field}=...) must be a positive int, got {value!r}")
        if self.fallback_iter is not None and not (
            isinstance(self.fallback_iter, int) and self.fallback_iter >= 1
        ):
            raise ValueError(
                f"FixedPoint(fallback_iter=...) must be a positive int, got {self.fallback_iter!r}"
            )
        if self.damping is not None and not 0 < self.damping <= 1:
            raise ValueError(f"FixedPoint(damping=...) must lie in (0, 1], got {self.damping!r}")
        if not self.ridge >= 0:
            raise ValueError(f"FixedPoint(ridge=...) must be >= 0, got {self.ridge!r}")

    def solve(self, f: Map, z0: torch.Tensor, *, what: str = "fixed point") -> FixedPointResult:
        """The fixed point of ``f`` from ``z0`` (batch first), reported as :attr:`on_failure` says
        when it does not converge (``what`` names the solve in that message)."""
        if not isinstance(z0, torch.Tensor) or z0.dim() < 1 or z0.shape[0] == 0:
            raise ValueError(
                "FixedPoint.solve: z0 must be a tensor with a non-empty leading (batch) dimension"
            )
        shape = z0.shape

        def flat(z: torch.Tensor) -> torch.Tensor:
            fz = f(z.reshape(shape))
            if not isinstance(fz, torch.Tensor) or fz.shape != shape:
                got = tuple(fz.shape) if isinstance(fz, torch.Tensor) else type(fz).__name__
                raise ValueError(
                    f"{what}: the map returned {got} for a state of shape {tuple(shape)}; it must return a "
                    "tensor of the state's shape (for a DEQ, set state_shape= to the shape f(z, x) returns "
                    "per sample, or pass z0)"
                )
            return fz.reshape(shape[0], -1)

        with torch.no_grad():
            best = self._run(self.method, flat, z0.detach().reshape(shape[0], -1), self.max_iter)
            method = self.method
            if not _done(best, self.tol) and self.fallback is not None:
                more = self._run(self.fallback, flat, best.z, self.fallback_iter or self.max_iter)
                keep = more.res < best.res
                best.z = torch.where(keep[:, None], more.z, best.z)
                best.res = torch.where(keep, more.res, best.res)
                best.history += more.history
                best.evaluations += more.evaluations
                method = f"{self.method}+{self.fallback}"
        result = FixedPointResult(
            z=best.z.reshape(shape),
            converged=_done(best, self.tol),
            iterations=best.evaluations,
            residual=float(best.res.max()),
            residuals=best.res,
            method=method,
            history=tuple(best.history),
        )
        if not result.converged and self.on_failure != "ignore":
            message = (
                f"{what} did not converge: relative residual {result.residual:.3g} > tol {self.tol:g} after "
                f"{result.iterations} evaluations ({method}). Raise max_iter, loosen tol, make the map more "
                "contractive (smaller weights, a normalised layer, Jacobian regularisation), or pass "
                "on_failure='ignore' to accept the best estimate."
            )
            if self.on_failure == "raise":
                raise FixedPointError(message, result)
            warnings.warn(message, FixedPointWarning, stacklevel=3)
        return result

    def _run(self, method: str, f: Map, z0: torch.Tensor, budget: int) -> _Best:
        damping = self.damping if self.damping is not None and method == self.method else None
        damping = damping if damping is not None else _DEFAULT_DAMPING[method]
        memory = self.memory if self.memory is not None and method == self.method else _DEFAULT_MEMORY[method]
        if method == "anderson":
            return _anderson(f, z0, self.tol, budget, memory, damping, self.ridge)
        if method == "broyden":
            return _broyden(f, z0, self.tol, budget, memory)
        return _damped(f, z0, self.tol, budget, damping)


def _done(best: _Best, tol: float) -> bool:
    return bool((best.res <= tol).all())


def _anderson(
    f: Map, z: torch.Tensor, tol: float, budget: int, memory: int, beta: float, ridge: float
) -> _Best:
    fz = f(z)
    g = fz - z
    best = _Best(z, relative_residual(fz, z))
    dz: list[torch.Tensor] = []
    dg: list[torch.Tensor] = []
    while best.evaluations < budget and not _done(best, tol):
        step = z + beta * g
        if dz:
            DZ, DG = torch.stack(dz, -1), torch.stack(dg, -1)  # [batch, n, m]
            gram = DG.transpose(1, 2) @ DG
            scale = gram.diagonal(dim1=1, dim2=2).mean(1, keepdim=True).clamp_min(_EPS)
            eye = torch.eye(len(dz), dtype=z.dtype, device=z.device)
            gamma = torch.linalg.solve(
                gram + (ridge * scale)[..., None] * eye, DG.transpose(1, 2) @ g[..., None]
            )
            step = step - ((DZ + beta * DG) @ gamma).squeeze(-1)
        step = torch.where(best.active(tol), step, z)  # a converged sample stays where it is
        if not torch.isfinite(step).all():
            break
        f_step = f(step)
        g_step = f_step - step
        dz.append(step - z)
        dg.append(g_step - g)
        del dz[:-memory], dg[:-memory]
        z, g = step, g_step
        if not math.isfinite(best.update(z, relative_residual(f_step, z))):
            break
    return best


def _broyden(f: Map, z: torch.Tensor, tol: float, budget: int, memory: int) -> _Best:
    g = f(z) - z
    best = _Best(z, relative_residual(g + z, z))
    U = z.new_zeros(z.shape[0], z.shape[1], 0)  # H = -I + U V^T
    V = z.new_zeros(z.shape[0], z.shape[1], 0)

    def H(v: torch.Tensor) -> torch.Tensor:
        return -v + (U @ (V.transpose(1, 2) @ v[..., None])).squeeze(-1)

    def Ht(v: torch.Tensor) -> torch.Tensor:
        return -v + (V @ (U.transpose(1, 2) @ v[..., None])).squeeze(-1)

    while best.evaluations < budget and not _done(best, tol):
        s = torch.where(best.active(tol), -H(g), 0.0)  # a converged sample stays where it is
        step = z + s
        if not torch.isfinite(step).all():
            break
        f_step = f(step)
        g_step = f_step - step
        y = g_step - g
        Hy = H(y)
        denom = (s * Hy).sum(1, keepdim=True)
        usable = denom.abs() > _EPS * (s.norm(dim=1, keepdim=True) * Hy.norm(dim=1, keepdim=True) + _EPS)
        u = torch.where(usable, (s - Hy) / torch.where(usable, denom, 1.0), 0.0)
        v = Ht(s)
        U = torch.cat([U, u[..., None]], -1)[..., -memory:]
        V = torch.cat([V, v[..., None]], -1)[..., -memory:]
        z, g = step, g_step
        if not math.isfinite(best.update(z, relative_residual(f_step, z))):
            break
    return best


def _damped(f: Map, z: torch.Tensor, tol: float, budget: int, beta: float) -> _Best:
    fz = f(z)
    best = _Best(z, relative_residual(fz, z))
    while best.evaluations < budget and not _done(best, tol):
        z = torch.where(best.active(tol), (1 - beta) * z + beta * fz, z)
        if not torch.isfinite(z).all():
            break
        fz = f(z)
        if not math.isfinite(best.update(z, relative_residual(fz, z))):
            break
    return best
