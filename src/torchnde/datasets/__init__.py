"""Data for the experiments and examples: seeded generators and reference solutions.

Nothing is downloaded: every set is generated (with a ``seed``), computed from a closed form, or
read from a file an installed package ships or the user points at (MNIST).

| generator | what |
|---|---|
| :func:`mass_spring`, :func:`pendulum`, :func:`two_body`, :func:`double_pendulum`, :func:`relativistic_particle` | physical trajectories with exact derivatives and energies (:class:`Trajectories`) |
| :func:`lotka_volterra`, :func:`damped_oscillators` | the UDE and SONODE set-ups (:class:`Observations`) |
| :func:`g1d`, :func:`concentric_spheres`, :func:`reflection`, :func:`twist` | toy maps of the ANODE / Dissecting / RNODE papers |
| :func:`burgers_solution`, :func:`burgers_grid` and samplers | Burgers' equation by Cole–Hopf (Gauss–Hermite quadrature) |
| :func:`japanese_vowels`, :func:`drop_points` | a real multivariate classification set (UEA, read from sktime's wheel) with points dropped at random |
| :func:`irregular_spirals`, :func:`periodic_signals` | irregularly sampled series with observation masks (:class:`IrregularSeries`) |
| :func:`ornstein_uhlenbeck`, :func:`geometric_brownian_motion` | exact sample paths with their analytic mean and std (:class:`SamplePaths`) |
| :func:`stochastic_lorenz` | sample paths of the stochastic Lorenz system of the latent SDE paper |
| :func:`mnist_idx`, :func:`read_idx` | real MNIST digits read from IDX files on disk (``mnist-10k`` or a full MNIST directory; never downloaded) |
| :func:`mirror_lorenz` | their images under the system's symmetry (x, y, z) -> (-x, -y, z), which leaves their law unchanged |

```python
from torchnde import datasets
data = datasets.lotka_volterra(seed=0)
data.t.shape, data.noisy.shape
```
"""

from .burgers import (
    BURGERS_NU,
    burgers_grid,
    burgers_solution,
    collocation_points,
    initial_boundary_points,
    solution_points,
)
from .lorenz import mirror_lorenz, stochastic_lorenz
from .mnist import LabelledImages, data_roots, mnist_idx, read_idx
from .physics import (
    Trajectories,
    double_pendulum,
    mass_spring,
    pendulum,
    relativistic_particle,
    two_body,
)
from .series import IrregularSeries, irregular_spirals, periodic_signals
from .stochastic import (
    GeometricBrownianMotion,
    OrnsteinUhlenbeck,
    SamplePaths,
    geometric_brownian_motion,
    ornstein_uhlenbeck,
)
from .systems import (
    Observations,
    damped_oscillator_field,
    damped_oscillators,
    lotka_volterra,
    lotka_volterra_field,
)
from .toys import concentric_spheres, g1d, reflection, twist
from .uea import LabelledSeries, SeriesSplit, drop_points, japanese_vowels, read_ts

__all__ = [
    "BURGERS_NU",
    "Observations",
    "Trajectories",
    "burgers_grid",
    "burgers_solution",
    "collocation_points",
    "concentric_spheres",
    "damped_oscillator_field",
    "damped_oscillators",
    "double_pendulum",
    "g1d",
    "initial_boundary_points",
    "lotka_volterra",
    "lotka_volterra_field",
    "mass_spring",
    "pendulum",
    "reflection",
    "relativistic_particle",
    "solution_points",
    "twist",
    "two_body",
    "LabelledSeries",
    "SeriesSplit",
    "drop_points",
    "japanese_vowels",
    "read_ts",
    "IrregularSeries",
    "irregular_spirals",
    "periodic_signals",
    "GeometricBrownianMotion",
    "OrnsteinUhlenbeck",
    "SamplePaths",
    "geometric_brownian_motion",
    "ornstein_uhlenbeck",
    "stochastic_lorenz",
    "LabelledImages",
    "data_roots",
    "mnist_idx",
    "read_idx",
    "mirror_lorenz",
]
