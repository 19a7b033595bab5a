r"""Equation discovery from trained models: sparse regression (SINDy) -> sympy -> torch.

From a trained :class:`~torchnde.models.universal.UniversalODE` (or any callable ``g(y)``),
:func:`discover` samples the learned term on states, runs pysindy's STLSQ over a sweep of
thresholds on a candidate :class:`Library` (polynomial, trigonometric, custom), picks the
threshold with a Pareto or information criterion and returns a :class:`Discovery`: sympy
equations with their coefficients, a torch module (:meth:`Discovery.to_torch`) and refits of the
hybrid model on data (:meth:`Discovery.refit`, :meth:`Discovery.refine`).

Needs the ``discovery`` extra: ``pip install torchnde[discovery]`` (pysindy, sympy).

- C. Rackauckas et al., *Universal Differential Equations for Scientific Machine Learning*,
  arXiv 2001.04385, 2020.
- S. L. Brunton, J. L. Proctor, J. N. Kutz, *Discovering governing equations from data by sparse
  identification of nonlinear dynamical systems*, PNAS 113 (15), 2016, arXiv 1509.03580.
- N. M. Mangan, J. N. Kutz, S. L. Brunton, J. L. Proctor, *Model selection for dynamical
  systems via sparse regression and information criteria*, Proc. R. Soc. A 473, 2017,
  arXiv 1701.01773.

```python
import torch
from torchnde.discovery import discover
y = torch.rand(200, 2, dtype=torch.float64) * 3
g = lambda y: torch.stack([-0.9 * y[:, 0] * y[:, 1], 0.8 * y[:, 0] * y[:, 1]], -1)
result = discover(g, y, library="polynomial+sin", degree=3, feature_names=["x", "y"])
print(result)               # dx/dt = -0.9000 x·y ; dy/dt = 0.8000 x·y
field = result.to_torch()   # nn.Module, coefficients trainable
```
"""

from .library import Library, torch_function
from .sindy import CRITERIA, Discovery, Refit, SparseTerms, discover

__all__ = ["CRITERIA", "Discovery", "Library", "Refit", "SparseTerms", "discover", "torch_function"]
