r"""Toy data sets for the first-order neural-ODE papers: seeded generators returning tensors.

- :func:`g1d` — the 1-D map :math:`g(\pm 1) = \mp 1` that no 1-D ODE flow can represent
  (E. Dupont, A. Doucet, Y. W. Teh, *Augmented Neural ODEs*, NeurIPS 2019, arXiv 1904.01681,
  Sec. 3).
- :func:`concentric_spheres` — the 2-D (or d-D) "ball inside a shell" classification of the
  same paper (:math:`g(x) = -1` for :math:`\lVert x\rVert \le r_1`, :math:`+1` for
  :math:`r_2 \le \lVert x\rVert \le r_3`), sampled uniformly in volume.
- :func:`twist` — a disc and its image under a radius-dependent rotation: paired 2-D point
  clouds whose time-1 map a neural ODE can learn (used for the RNODE regularisation study of
  C. Finlay, J.-H. Jacobsen, L. Nurbekyan, A. Oberman, *How to train your neural ODE*, ICML 2020,
  arXiv 2002.02798).
- :func:`reflection` — the reflection :math:`x \mapsto -x` on :math:`\{-1, +1\}` or an interval
  (S. Massaroli, M. Poli, J. Park, A. Yamashita, H. Asama, *Dissecting Neural ODEs*, NeurIPS
  2020, arXiv 2002.08071, Sec. 3.2).

Every generator is deterministic given ``seed`` (a private ``torch.Generator``; the global RNG
is left alone), samples in float64 and casts to ``dtype`` at the end.

```python
from torchnde.datasets.toys import concentric_spheres
x, y = concentric_spheres(seed=0)     # x: [2000, 2], y: [2000, 1] in {-1, +1}
```
"""

from __future__ import annotations

import math

import torch

from .._names import did_you_mean
from ._checks import check_count, check_dtype

__all__ = ["concentric_spheres", "g1d", "reflection", "twist"]


def _generator(seed: int | None) -> torch.Generator:
    if seed is None:
        gen = torch.Generator()
        gen.seed()  # a non-deterministic seed for this generator only
        return gen
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int (or None for a fresh one), got {seed!r}")
    return torch.Generator().manual_seed(seed)


def g1d(
    n: int = 2,
    *,
    noise: float = 0.0,
    seed: int | None = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The points :math:`\pm 1` with targets :math:`g(\pm 1) = \mp 1` (Dupont et al. 2019, ``g_1d``).

    A neural ODE's time-:math:`T` map :math:`\phi` is an increasing homeomorphism of
    :math:`\mathbb R`, so :math:`\phi(-1) < \phi(1)` and the mean squared error on these two
    points is at least :math:`\min_{a \le b} \tfrac12[(a - 1)^2 + (b + 1)^2] = 1` (reached as
    both collapse to 0). One augmented dimension lets the trajectories pass each other.

    E. Dupont, A. Doucet, Y. W. Teh, *Augmented Neural ODEs*, NeurIPS 2019, arXiv 1904.01681.

    **Arguments:**

    - ``n``: number of points (even): ``n/2`` copies of :math:`-1` then ``n/2`` of :math:`+1`.
    - ``noise``: standard deviation of Gaussian noise added to the inputs (the targets stay
      exactly :math:`\mp 1`, as in Dupont et al.'s ``Data1D``).
    - ``seed``: seeds the noise; ``dtype``: the returned dtype.

    **Returns:** ``(x, y)``, both ``[n, 1]``.

    ```python
    from torchnde.datasets.toys import g1d
    x, y = g1d()            # x = [[-1], [1]], y = [[1], [-1]]
    ```
    """
    check_count(n, "n", 2)
    if n % 2:
        raise ValueError(f"n must be even (half the points at -1, half at +1), got {n}")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite standard deviation >= 0, got {noise!r}")
    dtype = check_dtype(dtype)
    half = n // 2
    x = torch.cat([-torch.ones(half, 1, dtype=torch.float64), torch.ones(half, 1, dtype=torch.float64)])
    y = -x.clone()
    if noise > 0:
        x = x + noise * torch.randn(n, 1, generator=_generator(seed), dtype=torch.float64)
    return x.to(dtype), y.to(dtype)


def _uniform_in_shell(count: int, dim: int, r_min: float, r_max: float, gen: torch.Generator) -> torch.Tensor:
    """``count`` points uniform in volume in ``{r_min <= |x| <= r_max}`` of R^dim (float64)."""
    direction = torch.randn(count, dim, generator=gen, dtype=torch.float64)
    direction = direction / direction.norm(dim=1, keepdim=True)
    u = torch.rand(count, 1, generator=gen, dtype=torch.float64)
    # inverse CDF of the radius: P(|x| <= r) = (r^d - r_min^d) / (r_max^d - r_min^d)
    radius = (r_min**dim + u * (r_max**dim - r_min**dim)) ** (1.0 / dim)
    return radius * direction


def concentric_spheres(
    dim: int = 2,
    inner: int = 500,
    outer: int = 1500,
    r1: float = 0.5,
    r2: float = 1.0,
    r3: float = 1.5,
    *,
    seed: int | None = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""A ball labelled :math:`-1` inside a shell labelled :math:`+1` (Dupont et al. 2019).

    .. math::

        g(x) = \begin{cases} -1 & \lVert x\rVert \le r_1 \\ +1 & r_2 \le \lVert x\rVert \le r_3
        \end{cases}

    Points are uniform **in volume**: a uniform direction (a normalised Gaussian) times a
    radius drawn by inverting :math:`P(\lVert x\rVert \le r) \propto r^d - r_{\min}^d`.
    (Dupont et al.'s loader draws the radius as :math:`(r_{\max} - r_{\min})U^{1/d} + r_{\min}`,
    which is uniform in the ball but not in the shell.) No flow of :math:`\mathbb R^d` can move
    the ball outside the shell, so a neural ODE followed by a linear read-out must squeeze
    between points, which costs many function evaluations.

    E. Dupont, A. Doucet, Y. W. Teh, *Augmented Neural ODEs*, NeurIPS 2019, arXiv 1904.01681.

    **Arguments:** ``dim`` (>= 1), the point counts ``inner`` / ``outer``, the radii
    ``0 < r1 < r2 < r3``, ``seed`` and ``dtype``.

    **Returns:** ``(x, y)``: ``x`` is ``[inner + outer, dim]`` (the ball's points first), ``y``
    is ``[inner + outer, 1]`` with values in ``{-1, +1}``.

    ```python
    from torchnde.datasets.toys import concentric_spheres
    x, y = concentric_spheres(dim=2, inner=500, outer=1500, seed=0)
    (x.norm(dim=1)[y[:, 0] < 0] <= 0.5).all()   # tensor(True)
    ```
    """
    check_count(dim, "dim")
    check_count(inner, "inner", 0)
    check_count(outer, "outer", 0)
    if inner + outer == 0:
        raise ValueError("concentric_spheres needs at least one point: inner + outer >= 1")
    if not (0 < r1 < r2 < r3 and math.isfinite(r3)):
        raise ValueError(f"the radii must satisfy 0 < r1 < r2 < r3 < inf, got {r1}, {r2}, {r3}")
    dtype = check_dtype(dtype)
    gen = _generator(seed)
    x = torch.cat([_uniform_in_shell(inner, dim, 0.0, r1, gen), _uniform_in_shell(outer, dim, r2, r3, gen)])
    y = torch.cat([-torch.ones(inner, 1, dtype=torch.float64), torch.ones(outer, 1, dtype=torch.float64)])
    return x.to(dtype), y.to(dtype)


def reflection(
    n: int = 2,
    *,
    domain: str = "points",
    bound: float = 1.0,
    seed: int | None = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Inputs and targets of the reflection :math:`x \mapsto -x` (Massaroli et al. 2020).

    The reflection reverses order, so no 1-D flow represents it on two points or more; a
    data-controlled field :math:`f(t, z, x)` (e.g. :math:`f = -2x/T`) does, without augmentation.

    S. Massaroli, M. Poli, J. Park, A. Yamashita, H. Asama, *Dissecting Neural ODEs*, NeurIPS
    2020, arXiv 2002.08071.

    **Arguments:**

    - ``n``: number of points.
    - ``domain``: ``"points"`` — ``n/2`` copies of ``-bound`` then ``n/2`` of ``+bound`` (``n``
      even); ``"interval"`` — ``n`` points uniform on ``[-bound, bound]`` (seeded); ``"grid"`` —
      ``n`` evenly spaced points on ``[-bound, bound]``.
    - ``bound`` (> 0), ``seed``, ``dtype``.

    **Returns:** ``(x, -x)``, both ``[n, 1]``.

    ```python
    import torch
    from torchnde.datasets.toys import reflection
    x, y = reflection(64, domain="interval", seed=0)
    torch.equal(y, -x)   # True
    ```
    """
    check_count(n, "n")
    if not (math.isfinite(bound) and bound > 0):
        raise ValueError(f"bound must be a finite number > 0, got {bound!r}")
    dtype = check_dtype(dtype)
    if domain == "points":
        if n % 2:
            raise ValueError(f"domain='points' needs an even n (half at -bound, half at +bound), got {n}")
        x = torch.cat(
            [
                torch.full((n // 2, 1), -bound, dtype=torch.float64),
                torch.full((n // 2, 1), bound, dtype=torch.float64),
            ]
        )
    elif domain == "interval":
        x = (2 * torch.rand(n, 1, generator=_generator(seed), dtype=torch.float64) - 1) * bound
    elif domain == "grid":
        x = torch.linspace(-bound, bound, n, dtype=torch.float64).reshape(n, 1)
    else:
        raise ValueError(
            f"unknown domain {domain!r}; valid: 'points', 'interval', 'grid'."
            f"{did_you_mean(domain, ('points', 'interval', 'grid'))}"
        )
    return x.to(dtype), (-x).to(dtype)


def twist(
    n: int = 1024,
    *,
    amplitude: float = 3.0,
    radius: float = 1.5,
    seed: int | None = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Points uniform in a disc and their images under a twist (a radius-dependent rotation).

    .. math::

        T(x) = R\big(\alpha(\lVert x\rVert)\big)\,x, \qquad \alpha(r) = A\,e^{-r^2},

    with :math:`R(\alpha)` the rotation by :math:`\alpha`. :math:`T` is a diffeomorphism of the
    plane that keeps radii (so it is reachable by a 2-D flow), rotates the centre by :math:`A` and
    shears the disc: a nonlinear time-1 map whose natural flows (arcs, chords) differ a lot in
    how hard they are to integrate, which is what the kinetic and Jacobian regularisers of
    Finlay et al. (ICML 2020, arXiv 2002.02798) act on.

    **Arguments:** ``n`` points uniform (in area) in the disc of radius ``radius``; the twist
    ``amplitude`` :math:`A` (radians); ``seed``, ``dtype``.

    **Returns:** ``(x, T(x))``, both ``[n, 2]``.

    ```python
    import torch
    from torchnde.datasets.toys import twist
    x, y = twist(512, amplitude=3.0, seed=0)
    torch.allclose(x.norm(dim=1), y.norm(dim=1))   # True: radii are kept
    ```
    """
    check_count(n, "n")
    if not (math.isfinite(amplitude) and math.isfinite(radius) and radius > 0):
        raise ValueError(f"twist needs a finite amplitude and radius > 0, got {amplitude!r}, {radius!r}")
    dtype = check_dtype(dtype)
    x = _uniform_in_shell(n, 2, 0.0, radius, _generator(seed))
    angle = amplitude * torch.exp(-x.pow(2).sum(dim=1, keepdim=True))
    c, s = torch.cos(angle), torch.sin(angle)
    y = torch.cat([c * x[:, :1] - s * x[:, 1:], s * x[:, :1] + c * x[:, 1:]], dim=1)
    return x.to(dtype), y.to(dtype)
