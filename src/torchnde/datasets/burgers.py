r"""The viscous Burgers equation of the PINN paper: an exact reference and seeded samplers.

M. Raissi, P. Perdikaris, G. E. Karniadakis, *Physics-informed neural networks: A deep
learning framework for solving forward and inverse problems involving nonlinear partial
differential equations*, Journal of Computational Physics 378, 686-707 (2019),
arXiv:1711.10561.

The problem (Raissi et al., section 3.1; Basdevant et al., *Spectral and finite difference
solutions of the Burgers equation*, Computers & Fluids 14, 23-41, 1986):

.. math::

    u_t + u\,u_x = \nu\,u_{xx}, \qquad x \in [-1, 1],\; t \in [0, 1], \qquad
    u(0, x) = -\sin(\pi x), \qquad u(t, \pm 1) = 0, \qquad \nu = 0.01/\pi .

**Reference solution.** The Cole-Hopf transform :math:`u = -2\nu\,\partial_x \log\theta`
turns Burgers into the heat equation :math:`\theta_t = \nu\theta_{xx}` with
:math:`\theta(0, y) \propto f(y) = \exp(-\cos(\pi y) / (2\pi\nu))`. The initial condition is
odd and 2-periodic, so the whole-line solution is odd about :math:`x = 0` and :math:`x = \pm 1`
and meets the Dirichlet conditions by itself. Writing the heat kernel with
:math:`y = x - \sqrt{4\nu t}\,z`,

.. math::

    u(t, x) = -\frac{\int_{\mathbb R} \sin(\pi y)\, f(y)\, e^{-z^2}\, dz}
                    {\int_{\mathbb R} f(y)\, e^{-z^2}\, dz},

and both integrals are evaluated with the same Gauss-Hermite rule (weight :math:`e^{-z^2}`).
:math:`f` spans :math:`e^{\pm 1/(2\pi\nu)} = e^{\pm 50}`, so the sums are formed in log space
(the largest exponent is subtracted before exponentiating): nothing overflows and the ratio is
exact in floating point. Near the shock at :math:`x = 0` the integrands are concentrated around
:math:`y = \pm 1`, i.e. :math:`|z| \approx 1/\sqrt{4\nu t}` (up to about 9 at :math:`t = 1`);
with 200 nodes (the outermost at :math:`|z| \approx 19`) the rule has converged to rounding
level everywhere on :math:`[0, 1] \times [-1, 1]`. ``tests/test_datasets_burgers.py`` checks the
convergence in the number of nodes, the initial and boundary conditions, the PDE by finite
differences, and the classic benchmark of Basdevant et al.: the steepest slope,
:math:`\max_{t,x}|u_x| = 152.00516` at :math:`x = 0`, :math:`t = 1.6037/\pi`.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import torch
from numpy.polynomial.hermite import hermgauss

from .._names import did_you_mean
from ._checks import check_count

__all__ = [
    "BURGERS_NU",
    "burgers_grid",
    "burgers_solution",
    "collocation_points",
    "initial_boundary_points",
    "solution_points",
]

BURGERS_NU: float = 0.01 / math.pi
"""The viscosity of Raissi et al.'s Burgers problem, :math:`\\nu = 0.01/\\pi`."""

_MAX_NODES = 360  # numpy's hermgauss overflows to NaN weights beyond about 370 nodes
_CHUNK = 8192  # points per quadrature batch (bounds the temporary [points, nodes] arrays)


def _check_nu(nu: float) -> float:
    if not (isinstance(nu, (int, float)) and math.isfinite(nu) and nu > 0):
        raise ValueError(f"nu must be a positive finite viscosity, got {nu!r} (Raissi's is 0.01/pi)")
    return float(nu)


def _check_nodes(nodes: int) -> int:
    if isinstance(nodes, bool) or not isinstance(nodes, int) or not 2 <= nodes <= _MAX_NODES:
        raise ValueError(
            f"nodes must be an integer in [2, {_MAX_NODES}] (numpy's Gauss-Hermite rule overflows "
            f"beyond); got {nodes!r}. 200 is converged to rounding for nu >= 0.01/pi"
        )
    return nodes


def _as_array(v: Any, name: str) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    a = np.asarray(v, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite; got non-finite values")
    return a


def burgers_solution(
    t: Any,
    x: Any,
    *,
    nu: float = BURGERS_NU,
    nodes: int = 200,
    derivative: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    r"""The exact solution :math:`u(t, x)` of Burgers with :math:`u(0, x) = -\sin(\pi x)`.

    Cole-Hopf transform evaluated with ``nodes``-point Gauss-Hermite quadrature (see the module
    docstring for the formula); float64 throughout. The problem is Raissi, Perdikaris &
    Karniadakis, *Physics-informed neural networks*, J. Comput. Phys. 378 (2019),
    arXiv:1711.10561, section 3.1.

    With ``derivative=True`` the slope is returned as well, differentiated under the integral:
    with :math:`N = \sum_i w_i \sin(\pi y_i) f(y_i)`, :math:`D = \sum_i w_i f(y_i)`,

    .. math::

        u_x = -\frac{1}{D}\sum_i w_i \Big(\pi\cos(\pi y_i) + \frac{\sin^2(\pi y_i)}{2\nu}\Big)
        f(y_i) + \frac{1}{2\nu}\Big(\frac{N}{D}\Big)^2 .

    **Arguments:**

    - ``t``, ``x``: times (:math:`\ge 0`) and positions, array-likes or tensors; they are
      broadcast against each other. The formula holds for any real ``x`` (the solution is
      2-periodic), the problem's domain is :math:`[-1, 1]`.
    - ``nu``: the viscosity (default :math:`0.01/\pi`).
    - ``nodes``: Gauss-Hermite nodes, 2 to 360 (default 200).
    - ``derivative``: also return :math:`u_x`.

    **Returns:** a float64 numpy array of the broadcast shape (and :math:`u_x`, same shape).

    ```python
    import numpy as np
    from torchnde.datasets.burgers import burgers_solution
    u = burgers_solution(0.5, np.linspace(-1, 1, 5))   # [5]; u(t, ±1) = 0
    ```
    """
    nu = _check_nu(nu)
    nodes = _check_nodes(nodes)
    ta, xa = np.broadcast_arrays(_as_array(t, "t"), _as_array(x, "x"))
    if np.any(ta < 0):
        raise ValueError("t must be >= 0: the reference is the forward evolution from u(0, x) = -sin(pi x)")
    shape = ta.shape
    tf, xf = ta.reshape(-1), xa.reshape(-1)
    z, w = hermgauss(nodes)
    logw = np.log(w)  # the outer weights underflow to 0 (log -inf), which is harmless here
    u = np.empty(tf.shape)
    ux = np.empty(tf.shape) if derivative else None
    for lo in range(0, tf.size, _CHUNK):
        s = np.sqrt(4.0 * nu * tf[lo : lo + _CHUNK])[:, None]
        y = xf[lo : lo + _CHUNK, None] - s * z[None, :]
        expo = -np.cos(np.pi * y) / (2.0 * np.pi * nu) + logw
        f = np.exp(expo - expo.max(axis=1, keepdims=True))
        sin = np.sin(np.pi * y)
        d = f.sum(axis=1)
        ratio = (sin * f).sum(axis=1) / d
        u[lo : lo + _CHUNK] = -ratio
        if ux is not None:
            nx = ((np.pi * np.cos(np.pi * y) + sin**2 / (2.0 * nu)) * f).sum(axis=1)
            ux[lo : lo + _CHUNK] = -nx / d + ratio**2 / (2.0 * nu)
    if ux is not None:
        return u.reshape(shape), ux.reshape(shape)
    return u.reshape(shape)


def burgers_grid(
    n_t: int = 101,
    n_x: int = 256,
    *,
    t_max: float = 1.0,
    nu: float = BURGERS_NU,
    nodes: int = 200,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The reference on a tensor grid: ``(t [n_t], x [n_x], u [n_t, n_x])``, float64 numpy.

    ``t = linspace(0, t_max, n_t)`` and ``x = linspace(-1, 1, n_x)``; the defaults (256 points
    in :math:`x`, as Raissi et al.'s data file, and 101 in :math:`t`, step 0.01) are the
    evaluation grid of the ``pinn-burgers`` experiment. See :func:`burgers_solution` for the
    method and the citation (Raissi, Perdikaris & Karniadakis, J. Comput. Phys. 378, 2019,
    arXiv:1711.10561).

    ```python
    from torchnde.datasets.burgers import burgers_grid
    t, x, u = burgers_grid(11, 64)   # u.shape == (11, 64)
    ```
    """
    for name, n in (("n_t", n_t), ("n_x", n_x)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"{name} must be an integer >= 2, got {n!r}")
    if not (math.isfinite(t_max) and t_max > 0):
        raise ValueError(f"t_max must be a positive finite time, got {t_max!r}")
    t = np.linspace(0.0, t_max, n_t)
    x = np.linspace(-1.0, 1.0, n_x)
    u = burgers_solution(t[:, None], x[None, :], nu=nu, nodes=nodes)
    return t, x, u


def initial_boundary_points(
    n_u: int,
    *,
    seed: int = 0,
    method: str = "stratified",
    n_t: int = 100,
    n_x: int = 256,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``n_u`` training points on the initial line and the two walls, with their exact values.

    The candidates are those of Raissi et al. (J. Comput. Phys. 378, 2019, arXiv:1711.10561,
    section 3.1.1, and their ``Burgers/Inference`` script): the initial line :math:`t = 0` at
    ``n_x`` equispaced :math:`x \in [-1, 1]` (value :math:`-\sin(\pi x)`) and the walls
    :math:`x = \pm 1` at ``n_t`` equispaced :math:`t \in [0, 1]` (value 0). ``n_u`` of them
    are drawn without replacement with ``numpy.random.default_rng(seed)``:

    - ``method="random"`` (Raissi et al.'s choice): uniformly from all candidates at once. The
      draw can leave wide gaps on the initial line (seed 0 with ``n_u = 100`` leaves
      :math:`x \in (-0.47, -0.24)` empty), where the PDE does not determine the solution and
      the trained network is wrong however long it trains.
    - ``method="stratified"`` (default): each edge gets its share of ``n_u`` in proportion to
      its number of candidates (as a random draw does on average); each edge's candidates are
      cut into that many runs of consecutive points and one point is drawn from each run, so
      the points are random but spread along every edge.

    **Returns:** ``(coords, values)``: ``coords`` of shape ``[n_u, 2]`` with columns
    :math:`(t, x)`, ``values`` of shape ``[n_u, 1]``, both of ``dtype``.

    ```python
    from torchnde.datasets.burgers import initial_boundary_points
    coords, values = initial_boundary_points(100, seed=0)   # [100, 2], [100, 1]
    ```
    """
    check_count(n_u, "n_u")
    check_count(n_t, "n_t")
    check_count(n_x, "n_x")
    x0 = np.linspace(-1.0, 1.0, n_x)
    tb = np.linspace(0.0, 1.0, n_t)
    coords = np.concatenate(
        [
            np.stack([np.zeros(n_x), x0], axis=1),
            np.stack([tb, -np.ones(n_t)], axis=1),
            np.stack([tb, np.ones(n_t)], axis=1),
        ]
    )
    values = np.concatenate([-np.sin(np.pi * x0), np.zeros(2 * n_t)])
    values[[0, n_x - 1]] = 0.0  # -sin(±pi) is ±1.2e-16 in floating point; the exact value is 0
    if n_u > coords.shape[0]:
        raise ValueError(
            f"n_u = {n_u} exceeds the {coords.shape[0]} candidate points (n_x + 2 n_t); raise n_x or n_t"
        )
    rng = np.random.default_rng(seed)
    if method == "random":
        pick = rng.choice(coords.shape[0], size=n_u, replace=False)
    elif method == "stratified":
        sizes = np.array([n_x, n_t, n_t])
        shares = np.floor(n_u * sizes / sizes.sum()).astype(int)
        remainders = n_u * sizes / sizes.sum() - shares
        shares[np.argsort(-remainders, kind="stable")[: n_u - shares.sum()]] += 1
        picks, start = [], 0
        for size, share in zip(sizes, shares):
            edges = np.linspace(0, size, share + 1).round().astype(int)
            picks += [start + rng.integers(lo, hi) for lo, hi in itertools.pairwise(edges)]
            start += size
        pick = np.array(picks, dtype=int)
    else:
        raise ValueError(
            f"unknown method {method!r}; valid: 'stratified', 'random'.{did_you_mean(method, ('stratified', 'random'))}"
        )
    return (
        torch.as_tensor(coords[pick], dtype=dtype),
        torch.as_tensor(values[pick, None], dtype=dtype),
    )


def collocation_points(
    n_f: int,
    *,
    seed: int = 0,
    method: str = "lhs",
    t_range: tuple[float, float] = (0.0, 1.0),
    x_range: tuple[float, float] = (-1.0, 1.0),
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    r"""``n_f`` collocation points :math:`(t, x)` in the domain, where the PDE residual is enforced.

    ``method="lhs"`` (default, as Raissi et al., J. Comput. Phys. 378, 2019, arXiv:1711.10561):
    a Latin hypercube, each coordinate's range is cut into ``n_f`` equal strata, each stratum
    holds exactly one point, at a uniform position inside it, and the strata are paired by
    independent random permutations. ``method="uniform"``: independent uniform points. Both use
    ``numpy.random.default_rng(seed)``.

    **Returns:** a ``[n_f, 2]`` tensor of ``dtype``, columns :math:`(t, x)`.

    ```python
    from torchnde.datasets.burgers import collocation_points
    xf = collocation_points(2000, seed=0)   # [2000, 2] in [0, 1] x [-1, 1]
    ```
    """
    check_count(n_f, "n_f")
    lo = np.array([t_range[0], x_range[0]], dtype=np.float64)
    hi = np.array([t_range[1], x_range[1]], dtype=np.float64)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(hi > lo)):
        raise ValueError(
            f"t_range and x_range must be finite (low, high) with low < high, got {t_range}, {x_range}"
        )
    rng = np.random.default_rng(seed)
    if method == "lhs":
        strata = rng.permuted(np.tile(np.arange(n_f), (2, 1)), axis=1).T
        unit = (strata + rng.random((n_f, 2))) / n_f
    elif method == "uniform":
        unit = rng.random((n_f, 2))
    else:
        raise ValueError(
            f"unknown method {method!r}; valid: 'lhs', 'uniform'.{did_you_mean(method, ('lhs', 'uniform'))}"
        )
    return torch.as_tensor(lo + (hi - lo) * unit, dtype=dtype)


def solution_points(
    n: int,
    *,
    seed: int = 0,
    noise: float = 0.0,
    n_t: int = 100,
    n_x: int = 256,
    nu: float = BURGERS_NU,
    nodes: int = 200,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``n`` observations of the reference inside the domain, for the inverse problem.

    As Raissi et al.'s Burgers identification (J. Comput. Phys. 378, 2019, arXiv:1711.10561,
    section 4.1.1: 2,000 points): ``n`` points drawn without replacement from the
    ``n_t`` × ``n_x`` grid of :func:`burgers_grid`, with optional Gaussian noise of standard
    deviation ``noise`` × std(u) over the grid (``noise=0.01`` is their 1% case). Seeded by
    ``numpy.random.default_rng(seed)``.

    **Returns:** ``(coords [n, 2], values [n, 1])`` of ``dtype``, columns :math:`(t, x)`.

    ```python
    from torchnde.datasets.burgers import solution_points
    coords, values = solution_points(2000, seed=0, noise=0.01)
    ```
    """
    check_count(n, "n")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be >= 0 (a fraction of std(u)), got {noise!r}")
    t, x, u = burgers_grid(n_t, n_x, nu=nu, nodes=nodes)
    if n > u.size:
        raise ValueError(f"n = {n} exceeds the {u.size} grid points (n_t * n_x); raise n_t or n_x")
    rng = np.random.default_rng(seed)
    pick = rng.choice(u.size, size=n, replace=False)
    it, ix = np.unravel_index(pick, u.shape)
    coords = np.stack([t[it], x[ix]], axis=1)
    values = u[it, ix] + noise * u.std() * rng.standard_normal(n)
    return torch.as_tensor(coords, dtype=dtype), torch.as_tensor(values[:, None], dtype=dtype)
