"""Classical low-order explicit Runge–Kutta methods.

Each is a tableau and a citation; the engine is :class:`~torchnde.solvers.ExplicitRungeKutta`.
The fixed-step methods use the cubic Hermite continuous extension for output between steps.
"""

from __future__ import annotations

from .explicit_rk import ExplicitRungeKutta
from .tableau import ButcherTableau

__all__ = [
    "Bosh3",
    "Euler",
    "Fehlberg2",
    "Heun",
    "Heun3",
    "Midpoint",
    "RK4",
    "RK38",
    "Ralston",
]


class Euler(ExplicitRungeKutta):
    r"""The explicit Euler method, :math:`y_1 = y_0 + dt\,f(t_0, y_0)`; order 1, fixed step.

    ??? cite "Reference"
        L. Euler, *Institutionum calculi integralis*, 1768.
    """

    name = "euler"
    order = 1
    tableau = ButcherTableau(c=(0.0,), a=(), b=(1.0,))


class Midpoint(ExplicitRungeKutta):
    """The explicit midpoint method (Runge 1895); order 2, fixed step.

    ??? cite "Reference"
        C. Runge, Über die numerische Auflösung von Differentialgleichungen,
        *Math. Ann.* 46 (1895) 167–178.
    """

    name = "midpoint"
    order = 2
    tableau = ButcherTableau(c=(0.0, 0.5), a=((0.5,),), b=(0.0, 1.0))


class Heun(ExplicitRungeKutta):
    """Heun's method (explicit trapezoidal rule), order 2, with the embedded Euler estimate, so
    it also runs adaptively (torchdiffeq's ``adaptive_heun``).

    ??? cite "Reference"
        K. Heun, Neue Methoden zur approximativen Integration der Differentialgleichungen einer
        unabhängigen Veränderlichen, *Z. Math. Phys.* 45 (1900) 23–38.
    """

    name = "heun"
    order = 2
    error_order = 2
    tableau = ButcherTableau(c=(0.0, 1.0), a=((1.0,),), b=(0.5, 0.5), e=(-0.5, 0.5))


class Ralston(ExplicitRungeKutta):
    """Ralston's second-order method, the two-stage method of minimal error bound; fixed step.

    ??? cite "Reference"
        A. Ralston, Runge–Kutta methods with minimum error bounds, *Math. Comp.* 16 (1962)
        431–437.
    """

    name = "ralston"
    order = 2
    tableau = ButcherTableau(c=(0.0, 2 / 3), a=((2 / 3,),), b=(0.25, 0.75))


class Heun3(ExplicitRungeKutta):
    """Heun's third-order method; fixed step (torchdiffeq's ``heun3``).

    ??? cite "Reference"
        K. Heun, *Z. Math. Phys.* 45 (1900) 23–38.
    """

    name = "heun3"
    order = 3
    tableau = ButcherTableau(c=(0.0, 1 / 3, 2 / 3), a=((1 / 3,), (0.0, 2 / 3)), b=(0.25, 0.0, 0.75))


class RK4(ExplicitRungeKutta):
    """The classic fourth-order Runge–Kutta method; fixed step.

    ??? cite "Reference"
        W. Kutta, Beitrag zur näherungsweisen Integration totaler Differentialgleichungen,
        *Z. Math. Phys.* 46 (1901) 435–453.
    """

    name = "rk4"
    order = 4
    tableau = ButcherTableau(
        c=(0.0, 0.5, 0.5, 1.0),
        a=((0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
        b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    )


class RK38(ExplicitRungeKutta):
    """Kutta's 3/8 rule, fourth order; fixed step. torchdiffeq's ``rk4`` is this method.

    ??? cite "Reference"
        W. Kutta, *Z. Math. Phys.* 46 (1901) 435–453.
    """

    name = "rk38"
    order = 4
    tableau = ButcherTableau(
        c=(0.0, 1 / 3, 2 / 3, 1.0),
        a=((1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
        b=(0.125, 0.375, 0.375, 0.125),
    )


class Fehlberg2(ExplicitRungeKutta):
    """The Runge–Kutta–Fehlberg 2(1) pair, propagating the second-order solution (torchdiffeq's
    ``fehlberg2``).

    ??? cite "Reference"
        E. Fehlberg, Low-order classical Runge–Kutta formulas with stepsize control and their
        application to some heat transfer problems, NASA TR R-315, 1969.
    """

    name = "fehlberg2"
    order = 2
    error_order = 2
    tableau = ButcherTableau(
        c=(0.0, 0.5, 1.0),
        a=((0.5,), (1 / 256, 255 / 256)),
        b=(1 / 512, 255 / 256, 1 / 512),
        e=(-1 / 512, 0.0, 1 / 512),
    )


class Bosh3(ExplicitRungeKutta):
    """The Bogacki–Shampine 3(2) pair, FSAL, with the cubic Hermite continuous extension
    (scipy's ``RK23``, MATLAB's ``ode23``).

    ??? cite "Reference"
        P. Bogacki, L. F. Shampine, A 3(2) pair of Runge–Kutta formulas, *Appl. Math. Lett.* 2
        (1989) 321–325.
    """

    name = "bosh3"
    order = 3
    error_order = 3
    tableau = ButcherTableau(
        c=(0.0, 0.5, 0.75, 1.0),
        a=((0.5,), (0.0, 0.75), (2 / 9, 1 / 3, 4 / 9)),
        b=(2 / 9, 1 / 3, 4 / 9, 0.0),
        e=(2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8),
    )
