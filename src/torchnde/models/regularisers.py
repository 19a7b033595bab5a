r"""Regularisers integrated along the trajectory, inside the same solve (Finlay et al. 2020).

C. Finlay, J.-H. Jacobsen, L. Nurbekyan, A. Oberman, *How to train your neural ODE: the world
of Jacobian and kinetic regularization*, ICML 2020, arXiv 2002.02798.

For the field :math:`f` they add to the loss

.. math:: \lambda_K \int_{t_0}^{t_1} \lVert f(t, y(t)) \rVert^2\,dt
          \;+\; \lambda_J \int_{t_0}^{t_1} \lVert \partial_y f(t, y(t)) \rVert_F^2\,dt,

which favour straight trajectories that an adaptive solver crosses in few steps. Both
integrals are extra channels of the state, so the solver integrates them with the same steps
(and error control) as ``y``. The Frobenius norm is estimated without forming the Jacobian by
Hutchinson's identity :math:`\lVert J\rVert_F^2 = \mathbb E_\varepsilon \lVert
\varepsilon^\top J\rVert^2`, :math:`\varepsilon\sim\mathcal N(0, I)`, one probe drawn per solve
(one vector–Jacobian product per evaluation).

``per_dimension=True`` integrates the rates the way Finlay et al.'s code normalises them, per
state dimension :math:`d` (the number of entries of one sample's state): the kinetic energy
per dimension :math:`\tfrac{1}{2d}\lVert f\rVert^2` and :math:`\tfrac1d\lVert\partial_y f
\rVert_F^2`. Mathematically that is only a rescaled weight, but the integrals are channels of the
state, so their size enters the solver's error estimate: the two conventions take different
steps.

```python
import torch, torchnde as nde
from torch import nn
model = nde.models.NeuralODE(nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2)),
                             regularisers=[nde.models.KineticEnergy(0.01),
                                           nde.models.JacobianFrobenius(0.01)])
out = model(torch.randn(8, 2))
loss = out.pow(2).mean() + model.regularisation
```
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["JacobianFrobenius", "KineticEnergy", "Regulariser", "augment_field"]


def _per_sample(x: torch.Tensor) -> torch.Tensor:
    """Sum over every axis but the first (the batch) of a state-shaped tensor."""
    return x.reshape(x.shape[0], -1).sum(1) if x.dim() >= 2 else x.sum().reshape(1)


@dataclass(frozen=True)
class Regulariser:
    """A penalty integrated along the trajectory: ``weight * ∫ rate(t, y, f) dt`` per sample.

    ``per_dimension``: divide the rate by ``per_dimension_divisor * d`` (``d`` entries in one
    sample's state), the normalisation of Finlay et al.'s code.
    """

    weight: float = 0.01
    per_dimension: bool = field(default=False, kw_only=True)

    # the rate's divisor per state dimension under per_dimension=True
    per_dimension_divisor = 1

    def __post_init__(self) -> None:
        if not self.weight >= 0:
            raise ValueError(f"{type(self).__name__}: weight must be >= 0, got {self.weight}")
        if not isinstance(self.per_dimension, bool):
            raise TypeError(
                f"{type(self).__name__}: per_dimension must be True or False, got {self.per_dimension!r}"
            )

    def rate(self, y: torch.Tensor, dy: torch.Tensor, probe: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def normalise(self, total: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``total`` (a per-sample sum over ``y``'s entries) divided as ``per_dimension`` asks."""
        if not self.per_dimension:
            return total
        d = y[0].numel() if y.dim() >= 2 else y.numel()
        return total / (self.per_dimension_divisor * d)

    needs_probe = False


@dataclass(frozen=True)
class KineticEnergy(Regulariser):
    r"""Kinetic energy :math:`\lambda_K\int\lVert f(t, y)\rVert^2 dt` (Finlay et al., ICML 2020);
    with ``per_dimension=True`` :math:`\lambda_K\int\tfrac{1}{2d}\lVert f(t, y)\rVert^2 dt`."""

    per_dimension_divisor = 2

    def rate(self, y: torch.Tensor, dy: torch.Tensor, probe: torch.Tensor | None) -> torch.Tensor:
        return self.normalise(_per_sample(dy.pow(2)), y)


@dataclass(frozen=True)
class JacobianFrobenius(Regulariser):
    r"""Jacobian Frobenius norm :math:`\lambda_J\int\lVert\partial_y f\rVert_F^2 dt`, estimated with one
    Hutchinson probe per solve (Finlay et al., ICML 2020; Hutchinson 1989).

    The vector–Jacobian product couples samples only through ``f``; for a field that acts on
    each sample separately (the usual case) the estimate is per sample. With
    ``per_dimension=True`` the rate is divided by :math:`d`.
    """

    needs_probe = True

    def rate(self, y: torch.Tensor, dy: torch.Tensor, probe: torch.Tensor | None) -> torch.Tensor:
        assert probe is not None
        (vjp,) = torch.autograd.grad(dy, y, probe, create_graph=True, allow_unused=True)
        if vjp is None:
            return _per_sample(torch.zeros_like(y))
        return self.normalise(_per_sample(vjp.pow(2)), y)


def augment_field(
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    regularisers: Sequence[Regulariser],
    y0: torch.Tensor,
) -> tuple[Callable[[torch.Tensor, Any], Any], tuple[torch.Tensor, ...]]:
    """``f`` with one integral channel per regulariser appended; returns ``(field, state0)``.

    The state is the tuple ``(y, r_1, …, r_k)`` with ``r_i`` of shape ``[batch]`` (``[1]`` for an
    unbatched ``y``), starting at zero.
    """
    if not isinstance(y0, torch.Tensor):
        raise TypeError("regularisers need a tensor state, not a tuple; concatenate the state first")
    probe = torch.randn_like(y0) if any(r.needs_probe for r in regularisers) else None
    n = y0.shape[0] if y0.dim() >= 2 else 1
    zeros = tuple(y0.new_zeros(n) for _ in regularisers)

    def field(t: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        y = state[0]
        outer = torch.is_grad_enabled()
        with torch.enable_grad():
            y_in = y.detach().requires_grad_() if probe is not None and not y.requires_grad else y
            dy = f(t, y_in)
            rates = tuple(r.rate(y_in, dy, probe) for r in regularisers)
        if not outer:  # an evaluation without a graph (no_grad, or an adjoint's forward pass)
            dy, rates = dy.detach(), tuple(r.detach() for r in rates)
        return (dy, *rates)

    return field, (y0, *zeros)


def penalty(regularisers: Sequence[Regulariser], finals: Sequence[torch.Tensor]) -> torch.Tensor:
    """The weighted sum of the integrals at the final time, averaged over the batch."""
    return sum(r.weight * x.mean() for r, x in zip(regularisers, finals))  # type: ignore[return-value]
