r"""Physical systems for Hamiltonian and Lagrangian networks: seeded trajectory generators.

Every generator returns a :class:`Trajectories`: states on a time grid (with optional
observation noise), the exact time derivatives at the noise-free states, the exact energies,
and the system's exact vector field and energy as torch functions (for scoring a model's
rollouts) plus a high-accuracy reference solver (scipy ``solve_ivp``, DOP853, ``rtol=1e-10``).

- :func:`mass_spring` — :math:`H = q^2 + p^2` (the HNN repository's convention).
- :func:`pendulum` — :math:`H = 2(1 - \cos q) + p^2` (the HNN repository's).
- :func:`two_body` — two unit masses under unit gravity, near-circular orbits.
- :func:`double_pendulum` — unit masses and lengths, :math:`g = 9.8`, from
  :math:`(3\pi/7, 3\pi/4, 0, 0)` (the LNN repository's), in coordinates :math:`(q, \dot q)`.
- :func:`relativistic_particle` — :math:`L = -\sqrt{1 - \dot q^2} - k q^2/2` (:math:`c = m = 1`),
  in :math:`(q, \dot q)` or canonical :math:`(q, p = \gamma \dot q)` coordinates.

S. Greydanus, M. Dzamba, J. Yosinski, *Hamiltonian Neural Networks*, NeurIPS 2019,
arXiv:1906.01563; M. Cranmer, S. Greydanus, S. Hoyer, P. Battaglia, D. Spergel, S. Ho,
*Lagrangian Neural Networks*, ICLR 2020 DeepDiffEq workshop, arXiv:2003.04630.

Generators are deterministic given ``seed`` (a private ``numpy.random.Generator``; global RNGs
are left alone); they compute in float64 and cast to ``dtype`` at the end.

```python
from torchnde.datasets.physics import mass_spring
data = mass_spring(seed=0)          # 50 trajectories x 30 points
train, test = data.split(0.5)
x, dx = train.flat()                # [750, 2] noisy states, exact derivatives
```
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from .._names import did_you_mean
from .._optional import require
from ._checks import check_count, check_dtype

__all__ = [
    "Trajectories",
    "double_pendulum",
    "mass_spring",
    "pendulum",
    "relativistic_particle",
    "two_body",
]

_RTOL, _ATOL = 1e-10, 1e-12


@dataclass(frozen=True)
class Trajectories:
    r"""Trajectories of a physical system on a shared time grid.

    - ``name``: the system.
    - ``t``: times ``[T]``.
    - ``x``: observed states ``[N, T, 2d]`` = ``cat([q, s], -1)``, with ``s`` the canonical
      momentum ``p`` or the velocity :math:`\dot q` (see ``coordinates``); noisy if ``noise > 0``.
    - ``dx``: exact time derivatives ``[N, T, 2d]`` at the noise-free states.
    - ``x_clean``: the noise-free states.
    - ``energy``: exact energies ``[N, T]`` of the noise-free states.
    - ``coordinates``: ``("q", "p")`` or ``("q", "qdot")``.
    - ``params``: the generator's settings.
    - ``vector_field(x)``: the exact field on ``[..., 2d]`` (torch, any floating dtype).
    - ``energy_fn(x)``: the exact energy on ``[..., 2d]`` (torch).

    ```python
    import torch
    from torchnde.datasets.physics import pendulum
    data = pendulum(n_trajectories=4, dtype=torch.float64)
    x, dx = data.flat()                                    # [180, 2] each
    truth = data.reference(data.x_clean[:, 0], data.t)     # [45, 4, 2]
    assert torch.allclose(data.energy_fn(truth), data.energy.T, atol=1e-8)
    ```
    """

    name: str
    t: torch.Tensor
    x: torch.Tensor
    dx: torch.Tensor
    x_clean: torch.Tensor
    energy: torch.Tensor
    coordinates: tuple[str, str]
    params: dict[str, Any]
    vector_field: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)
    energy_fn: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)
    numpy_field: Callable[[np.ndarray], np.ndarray] = field(repr=False)

    @property
    def dim(self) -> int:
        """The number of coordinates ``d`` (states have ``2d`` entries)."""
        return self.x.shape[-1] // 2

    @property
    def n_trajectories(self) -> int:
        """The number of trajectories ``N``."""
        return self.x.shape[0]

    def split(self, fraction: float = 0.5) -> tuple[Trajectories, Trajectories]:
        """``(first, rest)``: the first ``round(fraction * N)`` trajectories, and the others.

        With a single trajectory the split is in time instead (the first part of the grid), as
        in the LNN repository's double-pendulum set-up.
        """
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
        n, steps = self.x.shape[:2]
        if n > 1:
            k = min(max(round(fraction * n), 1), n - 1)
            pick = [slice(None, k), slice(k, None)]
            return tuple(  # type: ignore[return-value]
                replace(self, x=self.x[s], dx=self.dx[s], x_clean=self.x_clean[s], energy=self.energy[s])
                for s in pick
            )
        k = min(max(round(fraction * steps), 1), steps - 1)
        pick = [slice(None, k), slice(k, None)]
        return tuple(  # type: ignore[return-value]
            replace(
                self,
                t=self.t[s],
                x=self.x[:, s],
                dx=self.dx[:, s],
                x_clean=self.x_clean[:, s],
                energy=self.energy[:, s],
            )
            for s in pick
        )

    def flat(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, dx)`` flattened over trajectories and times: ``[N * T, 2d]`` each."""
        width = self.x.shape[-1]
        return self.x.reshape(-1, width), self.dx.reshape(-1, width)

    def reference(self, x0: torch.Tensor, t_eval: Any) -> torch.Tensor:
        """The exact system solved from ``x0`` (``[..., 2d]``) at ``t_eval``: ``[T, ..., 2d]``.

        scipy ``solve_ivp`` (DOP853, ``rtol=1e-10``, ``atol=1e-12``) in float64, all states at
        once; the result has ``x0``'s dtype.
        """
        t = np.asarray(torch.as_tensor(t_eval, dtype=torch.float64).cpu())
        y0 = x0.detach().cpu().to(torch.float64).numpy()
        states = _integrate(self.numpy_field, y0, t)
        return torch.from_numpy(states).to(x0.dtype)


# -- helpers -----------------------------------------------------------------------------------


def _check_range(value: Sequence[float], name: str, positive: bool = True) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}") from None
    if not (hi >= lo and (lo > 0 or not positive)):
        raise ValueError(f"{name} must satisfy {'0 < ' if positive else ''}low <= high, got {value!r}")
    return lo, hi


def _check_common(noise: float, seed: int, dtype: torch.dtype) -> np.random.Generator:
    if not isinstance(noise, (int, float)) or noise < 0 or not math.isfinite(noise):
        raise ValueError(f"noise must be a finite standard deviation >= 0, got {noise!r}")
    check_dtype(dtype)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return np.random.default_rng(seed)


def _integrate(field_np: Callable[[np.ndarray], np.ndarray], y0: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Solve ``dy/dt = field(y)`` for a batch ``y0`` ``[..., 2d]``; returns ``[T, ..., 2d]``."""
    shape = y0.shape

    def fun(_: float, y: np.ndarray) -> np.ndarray:
        return field_np(y.reshape(shape)).reshape(-1)

    if len(t) == 1:
        return y0[None].copy()
    integrate = require(
        "scipy.integrate", extra="experiments", purpose="the physics datasets' reference solver"
    )
    sol = integrate.solve_ivp(
        fun, (t[0], t[-1]), y0.reshape(-1), method="DOP853", t_eval=t, rtol=_RTOL, atol=_ATOL
    )
    if not sol.success:  # pragma: no cover - the systems here are smooth
        raise RuntimeError(f"reference solve failed: {sol.message}")
    return sol.y.T.reshape(len(t), *shape)


def _build(
    name: str,
    t: np.ndarray,
    y0: np.ndarray,
    field_np: Callable[[np.ndarray], np.ndarray],
    field_torch: Callable[[torch.Tensor], torch.Tensor],
    energy_torch: Callable[[torch.Tensor], torch.Tensor],
    coordinates: tuple[str, str],
    params: dict[str, Any],
    noise: float,
    rng: np.random.Generator,
    dtype: torch.dtype,
    states: np.ndarray | None = None,
) -> Trajectories:
    """Integrate (unless ``states`` is given), differentiate, add noise and package."""
    if states is None:
        states = _integrate(field_np, y0, t).transpose(1, 0, 2)  # [N, T, 2d]
    clean = torch.from_numpy(np.ascontiguousarray(states))
    dx = field_torch(clean)
    energy = energy_torch(clean)
    observed = (
        clean + noise * torch.from_numpy(rng.standard_normal(clean.shape)) if noise > 0 else clean.clone()
    )
    return Trajectories(
        name=name,
        t=torch.from_numpy(t).to(dtype),
        x=observed.to(dtype),
        dx=dx.to(dtype),
        x_clean=clean.to(dtype),
        energy=energy.to(dtype),
        coordinates=coordinates,
        params=params,
        vector_field=field_torch,
        energy_fn=energy_torch,
        numpy_field=field_np,
    )


def _directions(rng: np.random.Generator, n: int, radius: tuple[float, float]) -> np.ndarray:
    """The HNN repository's initial states: ``U[-1, 1]^2`` directions scaled to a ``U`` radius."""
    y0 = rng.uniform(-1.0, 1.0, size=(n, 2))
    r = rng.uniform(radius[0], radius[1], size=(n, 1))
    return y0 / np.linalg.norm(y0, axis=-1, keepdims=True) * r


def _hnn_start(
    n_trajectories: int,
    n_points: int,
    t_span: tuple[float, float],
    radius: tuple[float, float],
    noise: float,
    seed: int,
    dtype: torch.dtype,
) -> tuple[np.random.Generator, np.ndarray, np.ndarray, dict[str, Any]]:
    """The checked arguments of a one-degree-of-freedom HNN data set: ``(rng, y0 [N, 2], t [T],
    params)`` with ``y0`` from :func:`_directions`."""
    check_count(n_trajectories, "n_trajectories")
    check_count(n_points, "n_points")
    radius = _check_range(radius, "radius")
    rng = _check_common(noise, seed, dtype)
    y0 = _directions(rng, n_trajectories, radius)
    t = np.linspace(t_span[0], t_span[1], n_points)
    params = dict(n_trajectories=n_trajectories, n_points=n_points, t_span=tuple(t_span), radius=radius,
                  noise=noise, seed=seed)  # fmt: skip
    return rng, y0, t, params


# -- mass-spring ---------------------------------------------------------------------------------


def _spring_np(y: np.ndarray) -> np.ndarray:
    q, p = y[..., :1], y[..., 1:]
    return np.concatenate([2 * p, -2 * q], -1)


def _spring_torch(y: torch.Tensor) -> torch.Tensor:
    q, p = y[..., :1], y[..., 1:]
    return torch.cat([2 * p, -2 * q], -1)


def _spring_energy(y: torch.Tensor) -> torch.Tensor:
    return y.square().sum(-1)


def mass_spring(
    n_trajectories: int = 50,
    n_points: int = 30,
    *,
    t_span: tuple[float, float] = (0.0, 3.0),
    radius: tuple[float, float] = (0.1, 1.0),
    noise: float = 0.05,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Trajectories:
    r"""The ideal mass-spring :math:`H = q^2 + p^2` (so :math:`\dot q = 2p`, :math:`\dot p = -2q`).

    The HNN repository's recipe (Greydanus et al., *Hamiltonian Neural Networks*, NeurIPS 2019,
    arXiv:1906.01563, ``experiment-spring/data.py``): initial states in a ``U[-1, 1]^2``
    direction scaled to a radius ``U[radius]``, ``n_points`` evenly spaced times on ``t_span``
    (the repository's ``timescale=10`` gives 30 on ``[0, 3]``), Gaussian noise of std ``noise``
    on ``q`` and ``p``; derivatives are exact at the noise-free states. Solved in closed form
    (a rotation at angular frequency 2).

    ```python
    from torchnde.datasets.physics import mass_spring
    data = mass_spring(n_trajectories=10, seed=1)   # data.x: [10, 30, 2]
    ```
    """
    rng, y0, t, params = _hnn_start(n_trajectories, n_points, t_span, radius, noise, seed, dtype)
    phase = 2.0 * (t - t[0])
    c, s = np.cos(phase)[None, :], np.sin(phase)[None, :]
    q0, p0 = y0[:, :1], y0[:, 1:]
    states = np.stack([q0 * c + p0 * s, p0 * c - q0 * s], -1)  # [N, T, 2]
    return _build("mass_spring", t, y0, _spring_np, _spring_torch, _spring_energy, ("q", "p"), params, noise,
                  rng, dtype, states=states)  # fmt: skip


# -- pendulum --------------------------------------------------------------------------------------


def _pendulum_np(y: np.ndarray) -> np.ndarray:
    q, p = y[..., :1], y[..., 1:]
    return np.concatenate([2 * p, -2 * np.sin(q)], -1)


def _pendulum_torch(y: torch.Tensor) -> torch.Tensor:
    q, p = y[..., :1], y[..., 1:]
    return torch.cat([2 * p, -2 * torch.sin(q)], -1)


def _pendulum_energy(y: torch.Tensor) -> torch.Tensor:
    q, p = y[..., 0], y[..., 1]
    return 2 * (1 - torch.cos(q)) + p.square()


def pendulum(
    n_trajectories: int = 50,
    n_points: int = 45,
    *,
    t_span: tuple[float, float] = (0.0, 3.0),
    radius: tuple[float, float] = (0.2, 2.0),
    noise: float = 0.05,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Trajectories:
    r"""The ideal pendulum :math:`H = 2(1 - \cos q) + p^2` (:math:`\dot q = 2p`, :math:`\dot p = -2\sin q`).

    The HNN repository's recipe (``experiment-pend/data.py``; Greydanus et al., NeurIPS 2019,
    arXiv:1906.01563): 15 points per unit time on ``[0, 3]`` (45), radius ``U[0.2, 2]`` in the
    :math:`(q, p)` plane, noise 0.05. Solved with DOP853 at ``rtol=1e-10``.

    ```python
    from torchnde.datasets.physics import pendulum
    data = pendulum(n_trajectories=5, seed=0)   # data.x: [5, 45, 2]
    ```
    """
    rng, y0, t, params = _hnn_start(n_trajectories, n_points, t_span, radius, noise, seed, dtype)
    return _build("pendulum", t, y0, _pendulum_np, _pendulum_torch, _pendulum_energy, ("q", "p"), params, noise,
                  rng, dtype)  # fmt: skip


# -- two bodies --------------------------------------------------------------------------------------


def _two_body_np(y: np.ndarray) -> np.ndarray:
    q, p = y[..., :4], y[..., 4:]
    r = q[..., 0:2] - q[..., 2:4]
    force = -r / (np.sum(r * r, -1, keepdims=True) ** 1.5)  # on body 1 (G = m = 1)
    return np.concatenate([p, force, -force], -1)


def _two_body_torch(y: torch.Tensor) -> torch.Tensor:
    q, p = y[..., :4], y[..., 4:]
    r = q[..., 0:2] - q[..., 2:4]
    force = -r / r.square().sum(-1, keepdim=True) ** 1.5
    return torch.cat([p, force, -force], -1)


def _two_body_energy(y: torch.Tensor) -> torch.Tensor:
    q, p = y[..., :4], y[..., 4:]
    r = (q[..., 0:2] - q[..., 2:4]).norm(dim=-1)
    return 0.5 * p.square().sum(-1) - 1.0 / r


def two_body(
    n_trajectories: int = 200,
    n_points: int = 50,
    *,
    t_span: tuple[float, float] = (0.0, 20.0),
    radius: tuple[float, float] = (0.5, 1.5),
    orbit_noise: float = 0.05,
    noise: float = 0.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Trajectories:
    r"""Two unit masses under unit gravity: :math:`H = \tfrac12(|p_1|^2 + |p_2|^2) - 1/|q_1 - q_2|`.

    After the HNN repository's ``experiment-orbits`` (Greydanus et al., NeurIPS 2019,
    arXiv:1906.01563): body 1 at distance ``U[radius]`` from the centre of mass, body 2
    opposite, velocities of the circular orbit (:math:`|v| = 1 / (2\sqrt r)`) scaled by
    :math:`1 + \text{orbit\_noise}\cdot\mathcal N(0, 1)` (slightly elliptical orbits), 50 points
    on ``[0, 20]``. Unlike the repository (initial positions in one quadrant) the initial angle
    is uniform on the circle. Coordinates ``q = (x_1, y_1, x_2, y_2)``, ``p`` likewise (unit
    masses: ``p`` is the velocity). Solved with DOP853 at ``rtol=1e-10``.

    ```python
    from torchnde.datasets.physics import two_body
    data = two_body(n_trajectories=4, seed=0)   # data.x: [4, 50, 8]
    ```
    """
    check_count(n_trajectories, "n_trajectories")
    check_count(n_points, "n_points")
    radius = _check_range(radius, "radius")
    if not isinstance(orbit_noise, (int, float)) or orbit_noise < 0:
        raise ValueError(f"orbit_noise must be >= 0, got {orbit_noise!r}")
    rng = _check_common(noise, seed, dtype)
    r = rng.uniform(radius[0], radius[1], size=n_trajectories)
    angle = rng.uniform(0.0, 2 * math.pi, size=n_trajectories)
    scale = 1.0 + orbit_noise * rng.standard_normal(n_trajectories)
    pos = np.stack([r * np.cos(angle), r * np.sin(angle)], -1)
    speed = scale / (2.0 * np.sqrt(r))
    vel = np.stack([-np.sin(angle), np.cos(angle)], -1) * speed[:, None]
    y0 = np.concatenate([pos, -pos, vel, -vel], -1)
    t = np.linspace(t_span[0], t_span[1], n_points)
    params = dict(n_trajectories=n_trajectories, n_points=n_points, t_span=tuple(t_span), radius=radius,
                  orbit_noise=orbit_noise, noise=noise, seed=seed)  # fmt: skip
    return _build("two_body", t, y0, _two_body_np, _two_body_torch, _two_body_energy, ("q", "p"), params, noise,
                  rng, dtype)  # fmt: skip


# -- double pendulum -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _DoublePendulum:
    m1: float
    m2: float
    l1: float
    l2: float
    g: float

    def accelerations(self, lib: Any, t1: Any, t2: Any, w1: Any, w2: Any) -> tuple[Any, Any]:
        m1, m2, l1, l2, g = self.m1, self.m2, self.l1, self.l2, self.g
        a1 = (l2 / l1) * (m2 / (m1 + m2)) * lib.cos(t1 - t2)
        a2 = (l1 / l2) * lib.cos(t1 - t2)
        f1 = -(l2 / l1) * (m2 / (m1 + m2)) * w2**2 * lib.sin(t1 - t2) - (g / l1) * lib.sin(t1)
        f2 = (l1 / l2) * w1**2 * lib.sin(t1 - t2) - (g / l2) * lib.sin(t2)
        den = 1 - a1 * a2
        return (f1 - a1 * f2) / den, (f2 - a2 * f1) / den

    def field_np(self, y: np.ndarray) -> np.ndarray:
        t1, t2, w1, w2 = (y[..., i] for i in range(4))
        g1, g2 = self.accelerations(np, t1, t2, w1, w2)
        return np.stack([w1, w2, g1, g2], -1)

    def field_torch(self, y: torch.Tensor) -> torch.Tensor:
        t1, t2, w1, w2 = y.unbind(-1)
        g1, g2 = self.accelerations(torch, t1, t2, w1, w2)
        return torch.stack([w1, w2, g1, g2], -1)

    def energy(self, y: torch.Tensor) -> torch.Tensor:
        """Kinetic plus potential energy, the potential zero at rest (both hanging down)."""
        m1, m2, l1, l2, g = self.m1, self.m2, self.l1, self.l2, self.g
        t1, t2, w1, w2 = y.unbind(-1)
        kinetic = 0.5 * (m1 + m2) * l1**2 * w1**2 + 0.5 * m2 * l2**2 * w2**2
        kinetic = kinetic + m2 * l1 * l2 * w1 * w2 * torch.cos(t1 - t2)
        potential = (m1 + m2) * g * l1 * (1 - torch.cos(t1)) + m2 * g * l2 * (1 - torch.cos(t2))
        return kinetic + potential


def double_pendulum(
    n_points: int = 1500,
    *,
    t_span: tuple[float, float] = (0.0, 300.0),
    y0: Sequence[float] | np.ndarray | torch.Tensor = (3 * math.pi / 7, 3 * math.pi / 4, 0.0, 0.0),
    masses: tuple[float, float] = (1.0, 1.0),
    lengths: tuple[float, float] = (1.0, 1.0),
    g: float = 9.8,
    noise: float = 0.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Trajectories:
    r"""The double pendulum in coordinates :math:`(q_1, q_2, \dot q_1, \dot q_2)` (angles from the vertical).

    .. math::

        L = \tfrac12 (m_1 + m_2) l_1^2 \dot q_1^2 + \tfrac12 m_2 l_2^2 \dot q_2^2
            + m_2 l_1 l_2 \dot q_1 \dot q_2 \cos(q_1 - q_2)
            + (m_1 + m_2) g l_1 \cos q_1 + m_2 g l_2 \cos q_2 .

    The LNN repository's set-up (Cranmer et al., *Lagrangian Neural Networks*, ICLR 2020
    DeepDiffEq workshop, arXiv:2003.04630, ``experiment_dblpend``): unit masses and lengths,
    ``g = 9.8``, one chaotic trajectory from :math:`(3\pi/7, 3\pi/4, 0, 0)`; here ``n_points``
    samples on ``t_span`` (the repository used 3,000 points, one per second). ``y0`` may be a
    ``[N, 4]`` array for ``N`` trajectories. ``energy`` takes the potential as zero at rest, so
    it is positive. Angles are not wrapped. Solved with DOP853 at ``rtol=1e-10``.

    ```python
    from torchnde.datasets.physics import double_pendulum
    data = double_pendulum(n_points=200, t_span=(0.0, 20.0))   # data.x: [1, 200, 4]
    ```
    """
    check_count(n_points, "n_points")
    rng = _check_common(noise, seed, dtype)
    start = np.atleast_2d(np.asarray(torch.as_tensor(y0, dtype=torch.float64)))
    if start.ndim != 2 or start.shape[-1] != 4:
        raise ValueError(f"y0 must be (q1, q2, q1dot, q2dot) or an [N, 4] array, got shape {start.shape}")
    if min(masses) <= 0 or min(lengths) <= 0 or g <= 0:
        raise ValueError(f"masses, lengths and g must be positive, got {masses}, {lengths}, {g}")
    system = _DoublePendulum(
        float(masses[0]), float(masses[1]), float(lengths[0]), float(lengths[1]), float(g)
    )
    t = np.linspace(t_span[0], t_span[1], n_points)
    params = dict(n_points=n_points, t_span=tuple(t_span), y0=start.tolist(), masses=tuple(masses),
                  lengths=tuple(lengths), g=g, noise=noise, seed=seed)  # fmt: skip
    return _build("double_pendulum", t, start, system.field_np, system.field_torch, system.energy, ("q", "qdot"),
                  params, noise, rng, dtype)  # fmt: skip


# -- relativistic particle --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Relativistic:
    k: float
    canonical: bool

    def field_np(self, y: np.ndarray) -> np.ndarray:
        q, s = y[..., :1], y[..., 1:]
        if self.canonical:  # H = sqrt(1 + p^2) + k q^2 / 2
            return np.concatenate([s / np.sqrt(1 + s**2), -self.k * q], -1)
        return np.concatenate([s, -self.k * q * (1 - s**2) ** 1.5], -1)

    def field_torch(self, y: torch.Tensor) -> torch.Tensor:
        q, s = y[..., :1], y[..., 1:]
        if self.canonical:
            return torch.cat([s / torch.sqrt(1 + s.square()), -self.k * q], -1)
        return torch.cat([s, -self.k * q * (1 - s.square()) ** 1.5], -1)

    def energy(self, y: torch.Tensor) -> torch.Tensor:
        q, s = y[..., 0], y[..., 1]
        kinetic = torch.sqrt(1 + s.square()) if self.canonical else 1 / torch.sqrt(1 - s.square())
        return kinetic + 0.5 * self.k * q.square()


def relativistic_particle(
    n_trajectories: int = 50,
    n_points: int = 50,
    *,
    t_span: tuple[float, float] = (0.0, 10.0),
    amplitude: tuple[float, float] = (0.2, 1.0),
    k: float = 1.0,
    coordinates: str = "velocity",
    noise: float = 0.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Trajectories:
    r"""A relativistic particle in a harmonic well, :math:`L = -\sqrt{1 - \dot q^2} - k q^2 / 2` (:math:`c = m = 1`).

    Euler–Lagrange: :math:`\ddot q = -k q (1 - \dot q^2)^{3/2}`; energy
    :math:`E = \gamma + k q^2/2`, :math:`\gamma = (1 - \dot q^2)^{-1/2}`. The canonical momentum is
    :math:`p = \gamma \dot q` and :math:`H = \sqrt{1 + p^2} + k q^2/2`. The special-relativity task
    of Cranmer et al., *Lagrangian Neural Networks*, ICLR 2020 DeepDiffEq workshop,
    arXiv:2003.04630: an HNN fed the non-canonical :math:`(q, \dot q)` cannot represent it.

    Each trajectory has a turning point ``A ~ U[amplitude]`` (energy :math:`1 + kA^2/2`) and starts
    at a uniform random phase (:math:`q_0 = A\cos\varphi`, speed from the energy, sign of
    :math:`-\sin\varphi`). ``coordinates="velocity"`` gives states :math:`(q, \dot q)`,
    ``"canonical"`` gives :math:`(q, p)`. Solved with DOP853 at ``rtol=1e-10``.

    ```python
    from torchnde.datasets.physics import relativistic_particle
    data = relativistic_particle(n_trajectories=8, seed=0)   # data.x: [8, 50, 2], (q, qdot)
    ```
    """
    check_count(n_trajectories, "n_trajectories")
    check_count(n_points, "n_points")
    amplitude = _check_range(amplitude, "amplitude")
    if coordinates not in ("velocity", "canonical"):
        raise ValueError(
            f"coordinates must be 'velocity' or 'canonical', got {coordinates!r}."
            f"{did_you_mean(coordinates, ('velocity', 'canonical'))}"
        )
    if not k > 0:
        raise ValueError(f"k must be a positive spring constant, got {k!r}")
    rng = _check_common(noise, seed, dtype)
    a = rng.uniform(amplitude[0], amplitude[1], size=n_trajectories)
    phase = rng.uniform(0.0, 2 * math.pi, size=n_trajectories)
    q0 = a * np.cos(phase)
    gamma = 1.0 + 0.5 * k * (a**2 - q0**2)
    speed = np.sqrt(np.maximum(1.0 - 1.0 / gamma**2, 0.0)) * -np.sign(np.sin(phase))
    second = gamma * speed if coordinates == "canonical" else speed
    y0 = np.stack([q0, second], -1)
    system = _Relativistic(float(k), coordinates == "canonical")
    t = np.linspace(t_span[0], t_span[1], n_points)
    names = ("q", "p") if coordinates == "canonical" else ("q", "qdot")
    params = dict(n_trajectories=n_trajectories, n_points=n_points, t_span=tuple(t_span), amplitude=amplitude,
                  k=k, coordinates=coordinates, noise=noise, seed=seed)  # fmt: skip
    return _build("relativistic_particle", t, y0, system.field_np, system.field_torch, system.energy, names,
                  params, noise, rng, dtype)  # fmt: skip
