r"""Small dynamical systems for grey-box models: seeded, noisy trajectories with their truth.

- :func:`lotka_volterra` — the predator–prey set-up of the universal differential equations
  paper: :math:`\dot x = \alpha x - \beta x y`, :math:`\dot y = \gamma x y - \delta y` with
  :math:`(\alpha, \beta, \gamma, \delta) = (1.3, 0.9, 0.8, 1.8)`,
  :math:`u_0 = (0.44249296, 4.6280594)`, :math:`t \in [0, 3]` every 0.1 and Gaussian noise of
  5% of each state's mean (C. Rackauckas, Y. Ma, J. Martensen, C. Warner, K. Zubov, R. Supekar,
  D. Skinner, A. Ramadhan, A. Edelman, *Universal Differential Equations for Scientific Machine
  Learning*, arXiv 2001.04385, 2020; repository ``LotkaVolterra/scenario_1.jl``).
- :func:`damped_oscillators` — 30 damped harmonic oscillators
  :math:`\ddot x = -(\gamma^2 + \omega^2) x - 2\gamma \dot x` with :math:`\gamma = 0.1`,
  :math:`\omega = 1`, initial positions and velocities uniform in :math:`[-2.5, 2.5]`, 100 times
  on :math:`[0, 10]` (A. Norcliffe, C. Bodnar, B. Day, N. Simidjievski, P. Liò, *On Second Order
  Behaviour in Augmented Neural ODEs*, NeurIPS 2020, arXiv 2006.07220; repository
  ``experiments/damped_oscillators/make_data.py``).

Each generator returns an :class:`Observations` named tuple ``(t, clean, noisy, params)``
(time-first states, as :func:`torchnde.solve`), is deterministic given ``seed`` (a private
``torch.Generator``; the global RNGs are left alone), integrates in float64 with ``dopri8`` at
``rtol = atol = 1e-12`` and casts to ``dtype`` at the end. The exact vector fields are
:func:`lotka_volterra_field` and :func:`damped_oscillator_field`.

```python
from torchnde.datasets.systems import lotka_volterra
t, clean, noisy, params = lotka_volterra(seed=0)   # t [31], states [31, 2]
params["beta"]                                     # 0.9
```
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from .._solve import solve
from ._checks import check_dtype

__all__ = [
    "Observations",
    "damped_oscillator_field",
    "damped_oscillators",
    "lotka_volterra",
    "lotka_volterra_field",
]

_RTOL = _ATOL = 1e-12


class Observations(NamedTuple):
    """A system's trajectories on a time grid: ``(t, clean, noisy, params)``.

    - ``t``: the times ``[T]``.
    - ``clean``: the exact states ``[T, *state]`` (time first).
    - ``noisy``: ``clean`` plus the observation noise (equal to ``clean`` when ``noise == 0``).
    - ``params``: the true parameters and the generator's settings (plain Python numbers).

    Returned by :func:`lotka_volterra` (Rackauckas et al., arXiv 2001.04385, 2020) and
    :func:`damped_oscillators` (Norcliffe et al., NeurIPS 2020, arXiv 2006.07220).

    ```python
    from torchnde.datasets import lotka_volterra
    t, clean, noisy, params = lotka_volterra(seed=0)   # unpacks like a tuple
    data = lotka_volterra(seed=0); data.noisy.shape     # or by name: torch.Size([31, 2])
    ```
    """

    t: torch.Tensor
    clean: torch.Tensor
    noisy: torch.Tensor
    params: dict[str, Any]


def _check_noise(noise: float) -> float:
    noise = float(noise)
    if not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite fraction >= 0 (0.05 for 5%), got {noise!r}")
    return noise


def _check_grid(t_end: float, dt: float) -> int:
    if not (math.isfinite(t_end) and t_end > 0):
        raise ValueError(f"t_end must be a positive time, got {t_end!r}")
    if not (math.isfinite(dt) and 0 < dt <= t_end):
        raise ValueError(f"dt must be in (0, t_end], got {dt!r}")
    steps = t_end / dt
    if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
        raise ValueError(f"t_end ({t_end}) must be a whole number of dt ({dt}) steps")
    return round(steps) + 1


def lotka_volterra_field(
    alpha: float = 1.3, beta: float = 0.9, gamma: float = 0.8, delta: float = 1.8
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    r"""The Lotka–Volterra field :math:`f(t, u) = (\alpha x - \beta x y,\ \gamma x y - \delta y)`.

    ``u`` is ``[..., 2]`` = ``(x, y)`` (prey, predator). Rackauckas et al., *Universal
    Differential Equations for Scientific Machine Learning*, arXiv 2001.04385, 2020.

    ```python
    import torch
    from torchnde.datasets.systems import lotka_volterra_field
    f = lotka_volterra_field()
    f(torch.tensor(0.0), torch.tensor([1.0, 1.0]))   # tensor([0.4000, -1.0000])
    ```
    """
    a, b, c, d = (float(v) for v in (alpha, beta, gamma, delta))

    def field(t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        x, y = u[..., 0], u[..., 1]
        return torch.stack([a * x - b * x * y, c * x * y - d * y], dim=-1)

    return field


def lotka_volterra(
    *,
    alpha: float = 1.3,
    beta: float = 0.9,
    gamma: float = 0.8,
    delta: float = 1.8,
    u0: Sequence[float] = (0.44249296, 4.6280594),
    t_end: float = 3.0,
    dt: float = 0.1,
    noise: float = 0.05,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> Observations:
    r"""Noisy Lotka–Volterra observations (Rackauckas et al. 2020, scenario 1).

    Solves :math:`\dot x = \alpha x - \beta x y`, :math:`\dot y = \gamma x y - \delta y` from
    ``u0`` and saves every ``dt`` on :math:`[0, t_{end}]`; then adds Gaussian noise with standard
    deviation ``noise`` times each state's mean over the grid (``x̄ = mean(X, dims = 2)`` in
    ``scenario_1.jl``): :math:`\tilde u_{k,i} = u_{k,i} + \sigma \bar u_i \epsilon_{k,i}`.

    Rackauckas et al., *Universal Differential Equations for Scientific Machine Learning*,
    arXiv 2001.04385, 2020.

    **Returns:** :class:`Observations` ``(t [T], clean [T, 2], noisy [T, 2], params)``;
    ``params`` holds ``alpha, beta, gamma, delta, u0, noise, noise_std`` (the per-state standard
    deviations) and ``seed``.

    ```python
    from torchnde.datasets.systems import lotka_volterra
    t, clean, noisy, params = lotka_volterra(seed=0)
    t.shape, clean.shape                 # (torch.Size([31]), torch.Size([31, 2]))
    ```
    """
    dtype = check_dtype(dtype)
    noise = _check_noise(noise)
    n = _check_grid(float(t_end), float(dt))
    u0 = tuple(float(v) for v in u0)
    if len(u0) != 2 or not all(math.isfinite(v) for v in u0):
        raise ValueError(f"u0 must be two finite numbers (prey, predator), got {u0!r}")
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma), ("delta", delta)):
        if not math.isfinite(float(value)):
            raise ValueError(f"{name} must be finite, got {value!r}")
    t = torch.linspace(0.0, float(t_end), n, dtype=torch.float64)
    field = lotka_volterra_field(alpha, beta, gamma, delta)
    clean = solve(field, torch.tensor(u0, dtype=torch.float64), t, "dopri8", rtol=_RTOL, atol=_ATOL).ys
    scale = noise * clean.mean(dim=0)
    gen = torch.Generator().manual_seed(int(seed))
    noisy = clean + scale * torch.randn(clean.shape, generator=gen, dtype=torch.float64)
    params = {
        "alpha": float(alpha),
        "beta": float(beta),
        "gamma": float(gamma),
        "delta": float(delta),
        "u0": u0,
        "noise": noise,
        "noise_std": scale.tolist(),
        "seed": int(seed),
    }
    return Observations(t.to(dtype), clean.to(dtype), noisy.to(dtype), params)


def damped_oscillator_field(
    gamma: float = 0.1, omega: float = 1.0
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    r"""The damped oscillator as a first-order field: :math:`(x, v) \mapsto (v,\ -(\gamma^2+\omega^2) x - 2\gamma v)`.

    ``z`` is ``[..., 2]`` = ``(x, v)``. Norcliffe et al., *On Second Order Behaviour in Augmented
    Neural ODEs*, NeurIPS 2020, arXiv 2006.07220.

    ```python
    import torch
    from torchnde.datasets.systems import damped_oscillator_field
    f = damped_oscillator_field()
    f(torch.tensor(0.0), torch.tensor([1.0, 0.0]))   # tensor([0.0000, -1.0100])
    ```
    """
    stiffness, damping = float(gamma) ** 2 + float(omega) ** 2, 2.0 * float(gamma)

    def field(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x, v = z[..., 0], z[..., 1]
        return torch.stack([v, -stiffness * x - damping * v], dim=-1)

    return field


def damped_oscillators(
    *,
    n: int = 30,
    gamma: float = 0.1,
    omega: float = 1.0,
    t_end: float = 10.0,
    steps: int = 100,
    box: float = 2.5,
    noise: float = 0.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> Observations:
    r"""Damped harmonic oscillators :math:`\ddot x = -(\gamma^2 + \omega^2) x - 2\gamma \dot x` (SONODE set-up).

    ``n`` initial conditions :math:`(x_0, v_0)` uniform in :math:`[-\text{box}, \text{box}]^2`
    (the repository's ``(rand - 0.5) * 5``), solved at ``steps`` equally spaced times on
    :math:`[0, t_{end}]`. The exact solution is
    :math:`x(t) = e^{-\gamma t}(x_0 \cos\omega t + \frac{v_0 + \gamma x_0}{\omega} \sin\omega t)`.
    Optional Gaussian noise has standard deviation ``noise`` times each channel's standard
    deviation over the data set (the repository's data are noise-free: ``noise = 0``).

    Norcliffe et al., *On Second Order Behaviour in Augmented Neural ODEs*, NeurIPS 2020,
    arXiv 2006.07220.

    **Returns:** :class:`Observations` ``(t [steps], clean [steps, n, 2], noisy, params)`` with
    the last axis ``(x, v)``; ``params`` holds ``gamma, omega, z0`` (``[n, 2]`` as nested lists),
    ``noise``, ``noise_std`` and ``seed``.

    ```python
    from torchnde.datasets.systems import damped_oscillators
    t, clean, noisy, params = damped_oscillators(seed=0)
    clean.shape                           # torch.Size([100, 30, 2])
    ```
    """
    dtype = check_dtype(dtype)
    noise = _check_noise(noise)
    if int(n) != n or n < 1:
        raise ValueError(f"n (number of oscillators) must be a positive integer, got {n!r}")
    if int(steps) != steps or steps < 2:
        raise ValueError(f"steps must be an integer >= 2, got {steps!r}")
    if not (math.isfinite(t_end) and t_end > 0):
        raise ValueError(f"t_end must be a positive time, got {t_end!r}")
    if not (math.isfinite(box) and box > 0):
        raise ValueError(f"box must be a positive half-width, got {box!r}")
    if not (math.isfinite(omega) and omega > 0 and math.isfinite(gamma)):
        raise ValueError(f"omega must be positive and gamma finite, got omega={omega!r}, gamma={gamma!r}")
    gen = torch.Generator().manual_seed(int(seed))
    z0 = (torch.rand(int(n), 2, generator=gen, dtype=torch.float64) - 0.5) * (2.0 * float(box))
    t = torch.linspace(0.0, float(t_end), int(steps), dtype=torch.float64)
    field = damped_oscillator_field(gamma, omega)
    clean = solve(field, z0, t, "dopri8", rtol=_RTOL, atol=_ATOL).ys
    scale = noise * clean.reshape(-1, 2).std(dim=0)
    noisy = clean + scale * torch.randn(clean.shape, generator=gen, dtype=torch.float64)
    params = {
        "gamma": float(gamma),
        "omega": float(omega),
        "z0": z0.tolist(),
        "noise": noise,
        "noise_std": scale.tolist(),
        "seed": int(seed),
    }
    return Observations(t.to(dtype), clean.to(dtype), noisy.to(dtype), params)
