r"""The stochastic Lorenz system of the latent SDE paper, as seeded sample paths.

X. Li, T.-K. L. Wong, R. T. Q. Chen, D. Duvenaud, *Scalable Gradients for Stochastic
Differential Equations*, AISTATS 2020, arXiv 2001.01328, Sec. 7.2 (and torchsde's
``latent_sde_lorenz`` example): the Itô SDE

.. math::
    dx = a_1 (y - x)\,dt + b_1 x\,dW_1,\qquad
    dy = \bigl(x (a_2 - z) - y\bigr)\,dt + b_2 y\,dW_2,\qquad
    dz = (x y - a_3 z)\,dt + b_3 z\,dW_3

with :math:`a = (10, 28, 8/3)`, :math:`b = (0.1, 0.28, 0.3)` (diagonal, multiplicative noise),
initial states :math:`\sim \mathcal N(0, I_3)`, observed on a uniform grid with Gaussian noise
and, by default, standardised per coordinate.

```python
from torchnde.datasets import stochastic_lorenz
t, clean, noisy, params = stochastic_lorenz(n_paths=16, n_times=50, seed=0)
clean.shape, params["drift"]       # (torch.Size([50, 16, 3]), (10.0, 28.0, 2.6666666666666665))
```

The law of the paths is invariant under the system's symmetry :math:`(x, y, z) \mapsto (-x, -y, z)`
(the drift is equivariant, the noise :math:`b_i s_i\,dW_i` maps to :math:`b_i s_i\,d(-W_i)`, and
the initial and observation noise are centred Gaussians); :func:`mirror_lorenz` applies it to
paths, in the units they were returned in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._solve import solve
from ..brownian import BrownianPath
from ..terms import SDETerm
from ._checks import check_count, check_dtype
from .systems import Observations, _check_noise

__all__ = ["LORENZ_DIFFUSION", "LORENZ_DRIFT", "mirror_lorenz", "stochastic_lorenz"]

LORENZ_DRIFT = (10.0, 28.0, 8.0 / 3.0)
LORENZ_DIFFUSION = (0.1, 0.28, 0.3)


def _triple(values: Sequence[float], name: str) -> tuple[float, float, float]:
    out = tuple(float(v) for v in values)
    if len(out) != 3:
        raise ValueError(f"{name} must be three numbers (one per coordinate x, y, z), got {values!r}")
    return out  # type: ignore[return-value]


def stochastic_lorenz(
    n_paths: int = 128,
    n_times: int = 50,
    t1: float = 1.0,
    *,
    noise: float = 0.01,
    drift: Sequence[float] = LORENZ_DRIFT,
    diffusion: Sequence[float] = LORENZ_DIFFUSION,
    dt: float = 1e-3,
    normalise: bool = True,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Observations:
    r"""Sample paths of the stochastic Lorenz system (module docstring) on ``[0, t1]``.

    **Arguments:**

    - ``n_paths``: number of independent paths (each its own initial state and Brownian motion).
    - ``n_times``: observation times, uniform on ``[0, t1]`` (both ends included).
    - ``noise``: standard deviation of the Gaussian observation noise, in the system's units
      (added before standardising).
    - ``drift``, ``diffusion``: :math:`a` and :math:`b` (defaults: the paper's).
    - ``dt``: the step of the Milstein solve (strong order 1 for this diagonal noise), in float64.
    - ``normalise``: standardise every coordinate by the mean and standard deviation of the
      noisy observations over all times and paths; the same map is applied to ``clean``, and
      ``params["mean"]``, ``params["std"]`` hold it (a model's outputs ``x`` map back as
      ``x * std + mean``).
    - ``seed``: fixes the initial states, the Brownian paths and the observation noise (a
      private generator; the global RNGs are left alone).
    - ``dtype``: of the returned tensors.

    Returns :class:`~torchnde.datasets.Observations` ``(t, clean, noisy, params)`` with ``t`` of
    shape ``[n_times]`` and the paths time first, ``[n_times, n_paths, 3]``.

    ```python
    from torchnde.datasets import stochastic_lorenz
    data = stochastic_lorenz(n_paths=8, seed=1)
    data.noisy.shape, data.params["std"]   # torch.Size([50, 8, 3]) and three scales
    ```
    """
    check_count(n_paths, "n_paths")
    check_count(n_times, "n_times", minimum=2)
    check_dtype(dtype)
    noise = _check_noise(noise)
    a1, a2, a3 = _triple(drift, "drift")
    b = _triple(diffusion, "diffusion")
    if not float(t1) > 0:
        raise ValueError(f"t1 must be positive (the paths run on [0, t1]), got {t1!r}")
    if not 0 < float(dt) <= float(t1):
        raise ValueError(f"dt must be in (0, t1] (1e-3 is the default), got {dt!r}")

    gen = torch.Generator().manual_seed(int(seed))
    y0 = torch.randn(n_paths, 3, generator=gen, dtype=torch.float64)
    scale = torch.tensor(b, dtype=torch.float64)

    def f(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        x, y, z = s.unbind(-1)
        return torch.stack([a1 * (y - x), x * (a2 - z) - y, x * y - a3 * z], -1)

    def g(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return scale * s

    bm_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    bm = BrownianPath(0.0, (n_paths, 3), dtype=torch.float64, seed=bm_seed)
    t = torch.linspace(0.0, float(t1), n_times, dtype=torch.float64)
    clean = solve(SDETerm(f, g, "diagonal", "ito", bm), y0, t, solver="milstein", dt=float(dt)).ys
    noisy = clean + noise * torch.randn(clean.shape, generator=gen, dtype=torch.float64)
    mean = torch.zeros(3, dtype=torch.float64)
    std = torch.ones(3, dtype=torch.float64)
    if normalise:
        mean, std = noisy.mean(dim=(0, 1)), noisy.std(dim=(0, 1))
        clean, noisy = (clean - mean) / std, (noisy - mean) / std
    params = {
        "drift": (a1, a2, a3),
        "diffusion": b,
        "noise": noise,
        "dt": float(dt),
        "seed": int(seed),
        "normalised": bool(normalise),
        "mean": mean.tolist(),
        "std": std.tolist(),
    }
    return Observations(t.to(dtype), clean.to(dtype), noisy.to(dtype), params)


_MIRROR = (-1.0, -1.0, 1.0)


def mirror_lorenz(paths: torch.Tensor, params: dict) -> torch.Tensor:
    r"""The image of Lorenz paths under the symmetry :math:`(x, y, z) \mapsto (-x, -y, z)`, in the
    units of ``paths``.

    The stochastic Lorenz system's drift is equivariant under the map and its diagonal noise
    :math:`b_i s_i\,dW_i` is carried to :math:`b_i s_i\,d(-W_i)`, again a Brownian motion; with
    centred Gaussian initial states and observation noise, a mirrored path has the same law as a
    sampled one (E. N. Lorenz, *Deterministic nonperiodic flow*, J. Atmos. Sci. 20, 1963). Adding the mirror
    images to a training set therefore balances the attractor's two lobes exactly, without
    changing the distribution the model is asked to learn.

    ``paths`` is ``[..., 3]`` as returned by :func:`stochastic_lorenz` with parameters ``params``
    (its ``params``): when standardised, the map is applied in the system's units, so
    :math:`\tilde x = -x - 2 m_x / s_x` for mean :math:`m` and standard deviation :math:`s`.

    ```python
    import torch
    from torchnde.datasets import mirror_lorenz, stochastic_lorenz
    t, clean, noisy, params = stochastic_lorenz(n_paths=8, seed=0)
    both = torch.cat([noisy, mirror_lorenz(noisy, params)], dim=1)   # lobes balanced: [50, 16, 3]
    assert torch.allclose(mirror_lorenz(mirror_lorenz(noisy, params), params), noisy, atol=1e-5)
    ```
    """
    if not isinstance(paths, torch.Tensor) or paths.ndim < 1 or paths.shape[-1] != 3:
        shape = tuple(paths.shape) if isinstance(paths, torch.Tensor) else type(paths).__name__
        raise ValueError(f"paths must be a tensor [..., 3] (coordinates x, y, z last), got {shape}")
    missing = [key for key in ("mean", "std") if key not in params]
    if missing:
        raise ValueError(
            f"params lacks {missing}: pass the params returned by stochastic_lorenz with these paths"
        )
    sign = torch.tensor(_MIRROR, dtype=paths.dtype, device=paths.device)
    mean = torch.as_tensor(params["mean"], dtype=paths.dtype, device=paths.device)
    std = torch.as_tensor(params["std"], dtype=paths.dtype, device=paths.device)
    return sign * paths + (sign - 1) * mean / std
