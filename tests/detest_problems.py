"""The DETEST non-stiff problem set, classes A–E (25 problems).

T. E. Hull, W. H. Enright, B. M. Fellen, A. E. Sedgwick, "Comparing numerical methods for
ordinary differential equations", SIAM J. Numer. Anal. 9(4) (1972) 603–637; constants of C5 and
the initial values of E1 as in W. H. Enright, J. D. Pryce, "Two FORTRAN packages for assessing
initial value methods", ACM TOMS 13(1) (1987) 1–27. Every problem is integrated over
``[0, 20]``.

Each vector field is written once, as ``field(t, y, xp)`` with ``xp`` either ``numpy`` or
``torch``: it uses only operations both share (arithmetic, indexing, ``reshape``, ``sum``,
``xp.stack``, ``xp.concatenate``, ``xp.asarray``, ``xp.sqrt``, ``xp.sin``, ``xp.cos``).
:func:`torch_field` and :func:`numpy_field` bind the backend. States are 1-D float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

T0 = 0.0
T1 = 20.0


@dataclass(frozen=True)
class Problem:
    name: str
    field: Callable[[Any, Any, Any], Any]  # field(t, y, xp)
    y0: tuple[float, ...]

    def y0_numpy(self) -> np.ndarray:
        return np.asarray(self.y0, dtype=np.float64)

    def y0_torch(self) -> torch.Tensor:
        return torch.tensor(self.y0, dtype=torch.float64)


def torch_field(problem: Problem) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return lambda t, y: problem.field(t, y, torch)


def numpy_field(problem: Problem) -> Callable[[float, np.ndarray], np.ndarray]:
    return lambda t, y: problem.field(t, y, np)


def _unit(n: int) -> tuple[float, ...]:
    return (1.0,) + (0.0,) * (n - 1)


# ---------------------------------------------------------------- class A: single equations


def _a1(t, y, xp):
    return -y


def _a2(t, y, xp):
    return -0.5 * y**3


def _a3(t, y, xp):
    return y * xp.cos(t)


def _a4(t, y, xp):
    return 0.25 * y * (1.0 - y / 20.0)


def _a5(t, y, xp):
    return (y - t) / (y + t)


# ---------------------------------------------------------------- class B: small systems


def _b1(t, y, xp):
    return xp.stack([2.0 * (y[0] - y[0] * y[1]), -(y[1] - y[0] * y[1])])


def _b2(t, y, xp):
    return xp.stack([-y[0] + y[1], y[0] - 2.0 * y[1] + y[2], y[1] - y[2]])


def _b3(t, y, xp):
    return xp.stack([-y[0], y[0] - y[1] ** 2, y[1] ** 2])


def _b4(t, y, xp):
    r = xp.sqrt(y[0] ** 2 + y[1] ** 2)
    return xp.stack([-y[1] - y[0] * y[2] / r, y[0] - y[1] * y[2] / r, y[0] / r])


def _b5(t, y, xp):
    return xp.stack([y[1] * y[2], -y[0] * y[2], -0.51 * y[0] * y[1]])


# ---------------------------------------------------------------- class C: moderate systems


def _linear(matrix: np.ndarray) -> Callable[[Any, Any, Any], Any]:
    def field(t, y, xp):
        return xp.asarray(matrix) @ y

    return field


def _c1_matrix() -> np.ndarray:
    # y1' = -y1;  yi' = y(i-1) - yi (i = 2..9);  y10' = y9.
    a = np.diag(np.r_[-np.ones(9), 0.0])
    a[np.arange(1, 10), np.arange(9)] = 1.0
    return a


def _c2_matrix() -> np.ndarray:
    # y1' = -y1;  yi' = (i-1) y(i-1) - i yi (i = 2..9);  y10' = 9 y9.
    i = np.arange(1.0, 10.0)
    a = np.diag(np.r_[-i, 0.0])
    a[np.arange(1, 10), np.arange(9)] = i
    return a


def _tridiag_matrix(n: int) -> np.ndarray:
    # y1' = -2 y1 + y2;  yi' = y(i-1) - 2 yi + y(i+1);  yn' = y(n-1) - 2 yn.
    return -2.0 * np.eye(n) + np.eye(n, k=1) + np.eye(n, k=-1)


# C5: the five outer planets (Jupiter, Saturn, Uranus, Neptune, Pluto) around the Sun.
# State: 15 positions (body-major: x, y, z of body 1, then body 2, ...), then 15 velocities.
_C5_K2 = 2.95912208286
_C5_M0 = 1.00000597682
_C5_M = np.array(
    [0.000954786104043, 0.000285583733151, 0.0000437273164546, 0.0000517759138449, 0.00000277777777778]
)
_C5_EYE = np.eye(5)
_C5_Q0 = (
    (3.42947415189, 3.35386959711, 1.35494901715),
    (6.64145542550, 5.97156957878, 2.18231499728),
    (11.2630437207, 14.6952576794, 6.27960525067),
    (-30.1552268759, 1.65699966404, 1.43785752721),
    (-21.1238353380, 28.4465098142, 15.3882659679),
)
_C5_V0 = (
    (-0.557160570446, 0.505696783289, 0.230578543901),
    (-0.415570776342, 0.365682722812, 0.169143213293),
    (-0.325325669158, 0.189706021964, 0.0877265322780),
    (-0.0240476254170, -0.287659532608, -0.117219543175),
    (-0.176860753121, -0.216393453025, -0.0148647893090),
)


def _c5(t, y, xp):
    m = xp.asarray(_C5_M)
    eye = xp.asarray(_C5_EYE)
    q = y[:15].reshape(5, 3)  # q[j] = position of body j
    r3 = (q**2).sum(-1) ** 1.5  # |q_j|^3
    diff = q[None, :, :] - q[:, None, :]  # diff[j, k] = q_k - q_j
    d3 = (diff**2).sum(-1) ** 1.5 + eye  # |q_k - q_j|^3, 1 on the diagonal (masked below)
    # acc_j = k2 (-(m0 + m_j) q_j / |q_j|^3 + sum_{k != j} m_k ((q_k - q_j) / d_jk^3 - q_k / |q_k|^3))
    pair = diff / d3[:, :, None] - (q / r3[:, None])[None, :, :]
    interaction = ((1.0 - eye) * m[None, :])[:, :, None] * pair
    acc = _C5_K2 * (-(_C5_M0 + m)[:, None] * q / r3[:, None] + interaction.sum(1))
    return xp.concatenate([y[15:], acc.reshape(15)])


# ---------------------------------------------------------------- class D: orbit equations


def _orbit(t, y, xp):
    r3 = (y[0] ** 2 + y[1] ** 2) ** 1.5
    return xp.stack([y[2], y[3], -y[0] / r3, -y[1] / r3])


def _orbit_y0(eps: float) -> tuple[float, ...]:
    # Perihelion of an orbit of eccentricity eps with semi-major axis 1.
    return (1.0 - eps, 0.0, 0.0, math.sqrt((1.0 + eps) / (1.0 - eps)))


# ---------------------------------------------------------------- class E: higher-order equations


def _e1(t, y, xp):
    # Bessel's equation of order 1/2 in x = t + 1.
    x = t + 1.0
    return xp.stack([y[1], -(y[1] / x + (1.0 - 0.25 / x**2) * y[0])])


def _e2(t, y, xp):
    # Van der Pol, mu = 1.
    return xp.stack([y[1], (1.0 - y[0] ** 2) * y[1] - y[0]])


def _e3(t, y, xp):
    # Duffing.
    return xp.stack([y[1], y[0] ** 3 / 6.0 - y[0] + 2.0 * xp.sin(2.78535 * t)])


def _e4(t, y, xp):
    return xp.stack([y[1], 0.032 - 0.4 * y[1] ** 2])


def _e5(t, y, xp):
    return xp.stack([y[1], xp.sqrt(1.0 + y[1] ** 2) / (25.0 - t)])


PROBLEMS: dict[str, Problem] = {
    p.name: p
    for p in [
        Problem("A1", _a1, (1.0,)),
        Problem("A2", _a2, (1.0,)),
        Problem("A3", _a3, (1.0,)),
        Problem("A4", _a4, (1.0,)),
        Problem("A5", _a5, (4.0,)),
        Problem("B1", _b1, (1.0, 3.0)),
        Problem("B2", _b2, (2.0, 0.0, 1.0)),
        Problem("B3", _b3, (1.0, 0.0, 0.0)),
        Problem("B4", _b4, (3.0, 0.0, 0.0)),
        Problem("B5", _b5, (0.0, 1.0, 1.0)),
        Problem("C1", _linear(_c1_matrix()), _unit(10)),
        Problem("C2", _linear(_c2_matrix()), _unit(10)),
        Problem("C3", _linear(_tridiag_matrix(10)), _unit(10)),
        Problem("C4", _linear(_tridiag_matrix(51)), _unit(51)),
        Problem("C5", _c5, tuple(np.r_[np.ravel(_C5_Q0), np.ravel(_C5_V0)].tolist())),
        Problem("D1", _orbit, _orbit_y0(0.1)),
        Problem("D2", _orbit, _orbit_y0(0.3)),
        Problem("D3", _orbit, _orbit_y0(0.5)),
        Problem("D4", _orbit, _orbit_y0(0.7)),
        Problem("D5", _orbit, _orbit_y0(0.9)),
        Problem("E1", _e1, (0.6713967071418030, 0.09540051444747446)),
        Problem("E2", _e2, (2.0, 0.0)),
        Problem("E3", _e3, (0.0, 0.0)),
        Problem("E4", _e4, (30.0, 0.0)),
        Problem("E5", _e5, (0.0, 0.0)),
    ]
}

# Closed-form solutions at T1, where known (used to check the reference solutions).


def _kepler(eps: float, t: float) -> np.ndarray:
    """The D problems' orbit (semi-major axis 1, period 2 pi, starting at perihelion) at time t."""
    e_anom = t
    for _ in range(50):  # Newton on Kepler's equation E - eps sin E = t
        e_anom -= (e_anom - eps * math.sin(e_anom) - t) / (1.0 - eps * math.cos(e_anom))
    d = 1.0 - eps * math.cos(e_anom)
    s = math.sqrt(1.0 - eps**2)
    return np.array(
        [math.cos(e_anom) - eps, s * math.sin(e_anom), -math.sin(e_anom) / d, s * math.cos(e_anom) / d]
    )


def _c1_exact(t: float) -> np.ndarray:
    # A Poisson process: y_i = t^(i-1) e^-t / (i-1)! for i = 1..9, and y10 = 1 - (the rest).
    head = np.array([t**k * math.exp(-t) / math.factorial(k) for k in range(9)])
    return np.r_[head, 1.0 - head.sum()]


def _e1_exact(t: float) -> np.ndarray:
    # y1 = J_{1/2}(x) = sqrt(2 / (pi x)) sin x with x = t + 1.
    x = t + 1.0
    c = math.sqrt(2.0 / math.pi)
    return np.array(
        [c * math.sin(x) / math.sqrt(x), c * (math.cos(x) / math.sqrt(x) - math.sin(x) / (2.0 * x**1.5))]
    )


EXACT_AT_T1: dict[str, np.ndarray] = {
    "A1": np.array([math.exp(-T1)]),
    "A2": np.array([1.0 / math.sqrt(1.0 + T1)]),
    "A3": np.array([math.exp(math.sin(T1))]),
    "A4": np.array([20.0 / (1.0 + 19.0 * math.exp(-T1 / 4.0))]),
    "C1": _c1_exact(T1),
    **{f"D{i + 1}": _kepler(eps, T1) for i, eps in enumerate((0.1, 0.3, 0.5, 0.7, 0.9))},
    "E1": _e1_exact(T1),
}
