"""Prince–Dormand RK8(7)13M: the eighth-order pair of thirteen stages, torchdiffeq's ``dopri8``."""

from __future__ import annotations

import numpy as np

from .explicit_rk import ExplicitRungeKutta
from .tableau import ButcherTableau, DensePolynomial

__all__ = ["PrinceDormand87"]

# The published rational coefficients (Prince & Dormand 1981, Table 2). Rows 7 to 12 of ``a`` sum
# to ``c`` only to about 1e-17: the published fractions are rational approximations.
_C = (0.0, 1 / 18, 1 / 12, 1 / 8, 5 / 16, 3 / 8, 59 / 400, 93 / 200, 5490023248 / 9719169821, 13 / 20,
      1201146811 / 1299019798, 1.0, 1.0)  # fmt: skip
_A = (
    (1 / 18,),
    (1 / 48, 1 / 16),
    (1 / 32, 0.0, 3 / 32),
    (5 / 16, 0.0, -75 / 64, 75 / 64),
    (3 / 80, 0.0, 0.0, 3 / 16, 3 / 20),
    (29443841 / 614563906, 0.0, 0.0, 77736538 / 692538347, -28693883 / 1125000000, 23124283 / 1800000000),
    (16016141 / 946692911, 0.0, 0.0, 61564180 / 158732637, 22789713 / 633445777, 545815736 / 2771057229,
     -180193667 / 1043307555),
    (39632708 / 573591083, 0.0, 0.0, -433636366 / 683701615, -421739975 / 2616292301, 100302831 / 723423059,
     790204164 / 839813087, 800635310 / 3783071287),
    (246121993 / 1340847787, 0.0, 0.0, -37695042795 / 15268766246, -309121744 / 1061227803,
     -12992083 / 490766935, 6005943493 / 2108947869, 393006217 / 1396673457, 123872331 / 1001029789),
    (-1028468189 / 846180014, 0.0, 0.0, 8478235783 / 508512852, 1311729495 / 1432422823,
     -10304129995 / 1701304382, -48777925059 / 3047939560, 15336726248 / 1032824649,
     -45442868181 / 3398467696, 3065993473 / 597172653),
    (185892177 / 718116043, 0.0, 0.0, -3185094517 / 667107341, -477755414 / 1098053517,
     -703635378 / 230739211, 5731566787 / 1027545527, 5232866602 / 850066563, -4093664535 / 808688257,
     3962137247 / 1805957418, 65686358 / 487910083),
    (403863854 / 491063109, 0.0, 0.0, -5068492393 / 434740067, -411421997 / 543043805, 652783627 / 914296604,
     11173962825 / 925320556, -13158990841 / 6184727034, 3936647629 / 1978049680, -160528059 / 685178525,
     248638103 / 1413531060, 0.0),
)  # fmt: skip
# eighth order (propagated) and seventh order (embedded)
_B8 = (14005451 / 335480064, 0.0, 0.0, 0.0, 0.0, -59238493 / 1068277825, 181606767 / 758867731,
       561292985 / 797845732, -1041891430 / 1371343529, 760417239 / 1151165299, 118820643 / 751138087,
       -528747749 / 2220607170, 1 / 4)  # fmt: skip
_B7 = (13451932 / 455176623, 0.0, 0.0, 0.0, 0.0, -808719846 / 976000145, 1757004468 / 5645159321,
       656045339 / 265891186, -3867574721 / 1518517206, 465885868 / 322736535, 53011238 / 667516719, 2 / 45,
       0.0)  # fmt: skip

# The continuous extension's stage weights w_j(theta) = theta * q_j(theta), q_j of degree five
# (coefficients of theta^0 .. theta^5); stages 1-4 have none. These are the polynomials torchdiffeq
# evaluates at theta = 1/2 for its dopri8's mid-step value; the 14th stage is f(t1, y1).
_Q = {
    0: (1.0, -6.6910181737837595697, 19.9990069333683970610, -30.0610568289666450593, 22.1396504998094068976,
        -6.3448349392860401388),
    5: (0.0, -7.6142658045872677172, 52.2273532792945524050, -121.4999627731334642623, 116.4422149550342161651,
        -39.6107919852202505218),
    6: (0.0, 10.7281392630428866124, -46.8919164181093621583, 83.1721004639847717481, -67.1451318825957197185,
        20.3761213808791436958),
    7: (0.0, 0.5526637063753648783, -0.1890893225010595467, 9.5724507555993664382, -16.5672243527496524646,
        7.3347098826795362023),
    8: (0.0, 4.2186562625665153803, -35.7075975946222072821, 87.8406057677205645007, -89.9916014847245016028,
        32.8801774352459155182),
    9: (0.0, -0.6627209125361597559, 6.2736448083240352160, -17.4152107770762969005, 22.6237489648532849093,
        -10.1588990526426760954),
    10: (0.0, -1.2636789001135462218, 10.3160881272450748458, -28.5903289514790976966, 32.2362340167355370113,
         -12.5401268098782561200),
    11: (0.0, 5.4106037898590422230, -34.7650769866611817349, 81.6630950584341412934, -82.1020315488359848644,
         29.5553001484516038033),
    12: (0.0, -7.0321379067945741781, 47.7457971078225540396, -114.9375291377009418170, 116.2662185791119533462,
         -41.7923486424390588923),
    13: (0.0, 2.3537586759714983486, -19.0082099341608028453, 50.2558364226176017553, -53.9020777466385396792,
         20.3006925822100825485),
}  # fmt: skip


def _interpolant() -> DensePolynomial:
    r"""The sixth-degree extension over the 14 stages, made to pass exactly through ``y1`` with
    slope ``f1`` at :math:`\theta = 1`: the published 20-digit decimals miss ``b`` by about
    1e-13 and ``f1``'s weight by 1e-11, so each stage's weight gets the cubic Hermite correction
    :math:`\Delta_j (3\theta^2 - 2\theta^3) + \Delta'_j (\theta^3 - \theta^2)`, which leaves
    :math:`\theta = 0` (value and slope) untouched."""
    p = np.zeros((14, 6))  # column m-1 multiplies theta^m
    for j, q in _Q.items():
        p[j] = q
    b = np.array((*_B8, 0.0))
    slope = np.eye(14)[13]  # d/dtheta at theta = 1 must be f1 = the FSAL stage
    delta = b - p.sum(1)
    delta_slope = slope - p @ np.arange(1, 7)
    p[:, 1] += 3 * delta - delta_slope
    p[:, 2] += -2 * delta + delta_slope
    return DensePolynomial(p, order=5)


class PrinceDormand87(ExplicitRungeKutta):
    r"""Prince and Dormand's RK8(7)13M pair: thirteen stages, an eighth-order solution with an
    embedded seventh-order estimate, and a fourteenth first-same-as-last stage :math:`f(t_1,
    y_1)` (13 evaluations a step). torchdiffeq calls it ``dopri8``; torchnde's ``dopri8`` is
    Hairer's DOP853, a different eighth-order method. ``torchnde.compat.torchdiffeq`` maps
    ``method="dopri8"`` here, so the drop-in steps as torchdiffeq does.

    Dense output: the sixth-degree continuous extension over the 14 stages whose value at
    :math:`\theta = 1/2` torchdiffeq uses as a mid-step point; here the whole polynomial is the
    interpolant (torchdiffeq fits a quartic through :math:`y_0, y_1, f_0, f_1` and that point),
    of order 5 (local error :math:`O(dt^6)`, measured), free of extra evaluations.

    ```python
    import torch, torchnde as nde
    sol = nde.solve(lambda t, y: -y, torch.ones(2, dtype=torch.float64), torch.linspace(0, 1, 5),
                    nde.PrinceDormand87(), rtol=1e-10, atol=1e-12)
    ```

    ??? cite "Reference"
        P. J. Prince, J. R. Dormand, High order embedded Runge–Kutta formulae,
        *J. Comput. Appl. Math.* 7 (1981) 67–75.
    """

    name = "rk87pd"
    order = 8
    error_order = 8
    tableau = ButcherTableau(
        c=(*_C, 1.0),
        a=(*_A, _B8),
        b=(*_B8, 0.0),
        e=(*(b8 - b7 for b8, b7 in zip(_B8, _B7)), 0.0),
    )
    interpolant = _interpolant()
