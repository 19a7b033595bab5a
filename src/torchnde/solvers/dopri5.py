"""Dormand–Prince 5(4) with Shampine's fourth-order continuous extension."""

from __future__ import annotations

import numpy as np

from .explicit_rk import ExplicitRungeKutta
from .tableau import ButcherTableau, DensePolynomial

__all__ = ["Dopri5"]

_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B_HAT = (
    5179 / 57600,
    0.0,
    7571 / 16695,
    393 / 640,
    -92097 / 339200,
    187 / 2100,
    1 / 40,
)

# Shampine's dense output: w_j(theta) = sum_m P[j, m] theta^(m+1).
_P = np.array(
    [
        [
            1.0,
            -8048581381 / 2820520608,
            8663915743 / 2820520608,
            -12715105075 / 11282082432,
        ],
        [0.0, 0.0, 0.0, 0.0],
        [
            0.0,
            131558114200 / 32700410799,
            -68118460800 / 10900136933,
            87487479700 / 32700410799,
        ],
        [
            0.0,
            -1754552775 / 470086768,
            14199869525 / 1410260304,
            -10690763975 / 1880347072,
        ],
        [
            0.0,
            127303824393 / 49829197408,
            -318862633887 / 49829197408,
            701980252875 / 199316789632,
        ],
        [0.0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844],
        [0.0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423],
    ]
)


class Dopri5(ExplicitRungeKutta):
    """The Dormand–Prince 5(4) pair (FSAL, seven stages, six evaluations per step), with
    Shampine's free fourth-order interpolant. scipy's ``RK45``, MATLAB's ``ode45``.

    ??? cite "References"
        J. R. Dormand, P. J. Prince, A family of embedded Runge–Kutta formulae,
        *J. Comput. Appl. Math.* 6 (1980) 19–26.
        L. F. Shampine, Some practical Runge–Kutta formulas, *Math. Comp.* 46 (1986) 135–150.
    """

    name = "dopri5"
    order = 5
    error_order = 5
    tableau = ButcherTableau(
        c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
        a=(
            (1 / 5,),
            (3 / 40, 9 / 40),
            (44 / 45, -56 / 15, 32 / 9),
            (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
            (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
            _B[:6],
        ),
        b=_B,
        e=tuple(b - bh for b, bh in zip(_B, _B_HAT)),
    )
    interpolant = DensePolynomial(_P, order=4)
