"""Butcher tableaux as validated, frozen data.

A tableau of an explicit ``s``-stage Runge–Kutta method

.. code-block:: text

    c_0 |
    c_1 | a_10
    c_2 | a_20  a_21
     :  |  :          .
    ----+---------------------
        | b_0   b_1  ...  b_{s-1}      (the propagated solution)
        | e_0   e_1  ...  e_{s-1}      (error weights: b - b_hat, they sum to 0)

advances ``y1 = y0 + dt * sum_j b_j k_j`` with ``k_i = f(t0 + c_i dt, y0 + dt * sum_{j<i} a_ij k_j)``.

Everything that can be derived is derived here rather than declared by the solver: whether
the method is first-same-as-last (FSAL: the last stage is evaluated at ``(t0 + dt, y1)``, so
it is the next step's first stage) and the number of stages. Construction fails loudly if the
data are inconsistent (rows must sum to ``c``, ``b`` to one, ``e`` to zero).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["ButcherTableau", "DensePolynomial"]

_TOL = 1e-12


def _rows(a: tuple[tuple[float, ...], ...], stages: int) -> np.ndarray:
    """Strictly lower-triangular ``[stages, stages]`` matrix from ragged rows."""
    out = np.zeros((stages, stages))
    for i, row in enumerate(a):
        out[i + 1, : len(row)] = row
    return out


@dataclass(frozen=True)
class DensePolynomial:
    r"""Continuous extension written as stage weights that are polynomials in ``theta``.

    The interpolant over a step from ``t0`` of size ``dt`` is

    .. math:: y(t_0 + \theta\,dt) = y_0 + dt \sum_j w_j(\theta)\,k_j,
              \qquad w_j(\theta) = \sum_{m=1}^{d} P_{jm}\,\theta^m .

    ``coefficients`` is ``P`` with shape ``[stages, degree]`` (column ``m-1`` multiplies
    ``theta**m``); ``stages`` may exceed the tableau's stages when the extension needs extra
    function evaluations (DOP853) or the end-point derivative of a non-FSAL method (Hermite).
    ``order`` is the local order of the interpolant as an approximation of the solution.
    """

    coefficients: np.ndarray
    order: int

    def __post_init__(self) -> None:
        # a plain int: a compiled solve that read the numpy array here would guard on it by
        # converting it to a tensor on every call (about 40 us a call, measured)
        object.__setattr__(self, "_degree", int(self.coefficients.shape[1]))

    @property
    def degree(self) -> int:
        return self._degree  # type: ignore[attr-defined]

    def matrix(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """``P`` as a tensor (cached per dtype and device)."""
        cache = self.__dict__.setdefault("_matrix_cache", {})
        out = cache.get((dtype, device))
        if out is None:
            with torch.inference_mode(False):  # a cached constant must outlive inference mode
                out = cache[(dtype, device)] = torch.as_tensor(self.coefficients, dtype=dtype, device=device)
        return out

    def matrix_t(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """``P.T``, contiguous (cached per dtype and device)."""
        cache = self.__dict__.setdefault("_matrix_t_cache", {})
        out = cache.get((dtype, device))
        if out is None:
            with torch.inference_mode(False):
                out = cache[(dtype, device)] = self.matrix(dtype, device).T.contiguous()
        return out

    def powers(self, theta: torch.Tensor) -> torch.Tensor:
        """``[theta, theta**2, ..., theta**degree]`` on a new last axis."""
        # a running product: several times cheaper than ``theta ** arange`` on large batches
        return theta.unsqueeze(-1).expand(*theta.shape, self.degree).cumprod(-1)

    def weights(self, theta: torch.Tensor) -> torch.Tensor:
        """Stage weights ``w(theta)`` with shape ``[*theta.shape, stages]``."""
        return self.powers(theta) @ self.matrix(theta.dtype, theta.device).T


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge–Kutta tableau; see the module docstring for the layout.

    **Arguments:**

    - ``c``: stage times, ``c[0] == 0``.
    - ``a``: the strictly lower rows ``a[i]`` for stages ``1..s-1`` (ragged, ``len(a[i]) <= i+1``).
    - ``b``: solution weights, length ``s``.
    - ``e``: error weights ``b - b_hat`` (length ``s``), or ``None`` for a fixed-step method.
    - ``e_low``: a second error estimator (DOP853's third-order one), or ``None``.
    """

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    e: tuple[float, ...] | None = None
    e_low: tuple[float, ...] | None = None
    stages: int = field(init=False)
    fsal: bool = field(init=False)
    a_matrix: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        s = len(self.c)
        if len(self.b) != s or len(self.a) != s - 1:
            raise ValueError(f"tableau shapes disagree: {s} stage times, {len(self.b)} weights")
        if self.c[0] != 0:
            raise ValueError("explicit tableau must have c[0] == 0")
        a = _rows(self.a, s)
        for i in range(1, s):
            if len(self.a[i - 1]) > i:
                raise ValueError(f"row {i} of a is longer than {i}: the tableau is not explicit")
            if abs(a[i].sum() - self.c[i]) > _TOL * max(1.0, abs(self.c[i])) * 100:
                raise ValueError(f"row {i} of a sums to {a[i].sum()!r}, not c[{i}] = {self.c[i]!r}")
        if abs(math.fsum(self.b) - 1) > _TOL:
            raise ValueError(f"weights b sum to {math.fsum(self.b)!r}, not 1")
        for name in ("e", "e_low"):
            weights = getattr(self, name)
            if weights is None:
                continue
            if len(weights) != s:
                raise ValueError(f"{name} has {len(weights)} entries for {s} stages")
            if abs(math.fsum(weights)) > _TOL * 10:
                raise ValueError(f"error weights {name} sum to {math.fsum(weights)!r}, not 0")
        fsal = s > 1 and self.c[-1] == 1 and np.allclose(a[-1], self.b, rtol=0, atol=1e-15)
        object.__setattr__(self, "stages", s)
        object.__setattr__(self, "fsal", bool(fsal))
        object.__setattr__(self, "a_matrix", a)

    @property
    def adaptive(self) -> bool:
        """Whether the tableau carries an embedded error estimate."""
        return self.e is not None
