"""Tsitouras 5(4) with its fourth-order continuous extension."""

from __future__ import annotations

import numpy as np
from numpy.polynomial import polynomial as npoly

from .explicit_rk import ExplicitRungeKutta
from .tableau import ButcherTableau, DensePolynomial

__all__ = ["Tsit5"]

_B = (
    0.09646076681806523,
    0.01,
    0.4798896504144996,
    1.379008574103742,
    -3.290069515436081,
    2.324710524099774,
    0.0,
)
# Error weights b - b_hat as given in the paper, with the sign of the last one corrected
# (the paper prints +1/66; the pair is consistent only with -1/66).
_E = (
    0.00178001105222577714,
    0.0008164344596567469,
    -0.007880878010261995,
    0.1447110071732629,
    -0.5823571654525552,
    0.45808210592918697,
    -1 / 66,
)


def _interpolant() -> DensePolynomial:
    """Expand the paper's factored interpolation weights b_j(theta) into monomial form."""

    def poly(scale: float, *factors: tuple[float, ...]) -> np.ndarray:
        p = np.array([scale])
        for f in factors:
            p = npoly.polymul(p, np.array(f))
        return p

    theta, theta2 = (0.0, 1.0), (0.0, 0.0, 1.0)
    weights = [
        poly(-1.0530884977290216, theta, (-1.3299890189751412, 1.0),
             (0.7139816917074209, -1.4364028541716351, 1.0)),
        poly(0.1017, theta2, (1.2949852507374631, -2.1966568338249754, 1.0)),
        poly(2.490627285651252793, theta2, (1.57803468208092486, -2.38535645472061657, 1.0)),
        poly(-16.54810288924490272, theta2, (-1.21712927295533244, 1.0),
             (-0.61620406037800089, 1.0)),
        poly(47.37952196281928122, theta2, (-1.203071208372362603, 1.0),
             (-0.658047292653547382, 1.0)),
        poly(-34.87065786149660974, theta2, (-1.2, 1.0), (-0.666666666666666667, 1.0)),
        poly(2.5, theta2, (-1.0, 1.0), (-0.6, 1.0)),
    ]  # fmt: skip
    p = np.zeros((7, 4))
    for j, w in enumerate(weights):
        p[j, : len(w) - 1] = w[1:]  # no constant term: w_j(0) = 0
    return DensePolynomial(p, order=4)


class Tsit5(ExplicitRungeKutta):
    """Tsitouras' 5(4) pair (FSAL, six evaluations per step), derived under fewer simplifying
    assumptions than Dormand–Prince and usually a little more efficient, with its fourth-order
    free interpolant.

    ??? cite "Reference"
        Ch. Tsitouras, Runge–Kutta pairs of order 5(4) satisfying only the first column
        simplifying assumption, *Comput. Math. Appl.* 62 (2011) 770–775.
    """

    name = "tsit5"
    order = 5
    error_order = 5
    tableau = ButcherTableau(
        c=(0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0),
        a=(
            (0.161,),
            (-0.008480655492356989, 0.335480655492357),
            (2.8971530571054935, -6.359448489975075, 4.3622954328695815),
            (
                5.325864828439257,
                -11.748883564062828,
                7.4955393428898365,
                -0.09249506636175525,
            ),
            (
                5.86145544294642,
                -12.92096931784711,
                8.159367898576159,
                -0.071584973281401,
                -0.02826905039406838,
            ),
            _B[:6],
        ),
        b=_B,
        e=_E,
    )
    interpolant = _interpolant()
