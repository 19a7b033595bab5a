r"""Neural ODEs: the plain model, and the data-controlled field of Massaroli et al.

- :class:`NeuralODE` — R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, *Neural
  Ordinary Differential Equations*, NeurIPS 2018, arXiv 1806.07366.
- :class:`DataControlledNeuralODE` — S. Massaroli, M. Poli, J. Park, A. Yamashita, H. Asama,
  *Dissecting Neural ODEs*, NeurIPS 2020, arXiv 2002.08071, Sec. 3.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ._base import SolveOptions, as_field, check_span, time_grid
from .regularisers import Regulariser, augment_field, penalty

__all__ = ["DataControlledNeuralODE", "NeuralODE"]


class NeuralODE(SolveOptions):
    r"""A neural ODE :math:`\dot y = f_\theta(t, y)`, :math:`y(t_0) = y_0` (Chen et al., NeurIPS 2018).

    The model maps ``y0`` to the solution at the end of ``t_span`` (a continuous-depth
    network), or to the trajectory at the times ``t_eval`` (time first, as ``solve``).

    **Arguments:**

    - ``field``: the network ``f``; called as ``field(y)`` if its ``forward`` takes one
      argument (autonomous), else as ``field(t, y)``.
    - ``t_span``: the integration interval used when no ``t_eval`` is given (default ``(0, 1)``).
    - ``regularisers``: :class:`KineticEnergy` / :class:`JacobianFrobenius` penalties integrated
      inside the same solve; after a call, ``self.regularisation`` holds their weighted sum
      (batch mean) to add to the loss.
    - solve options (``solver``, ``rtol``, ``atol``, ``dt``, ``gradient``, ``per_sample``, ...):
      see :class:`~torchnde.models.SolveOptions`. ``self.nfe`` is the last forward solve's count.

    ```python
    import torch, torchnde as nde
    from torch import nn
    model = nde.models.NeuralODE(nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2)),
                                 solver="dopri5", rtol=1e-4, atol=1e-6)
    y1 = model(torch.randn(64, 2))                          # [64, 2], the state at t = 1
    ys = model(torch.randn(64, 2), torch.linspace(0, 1, 5)) # [5, 64, 2]
    model.nfe
    ```
    """

    def __init__(
        self,
        field: Callable[..., Any],
        *,
        t_span: tuple[float, float] = (0.0, 1.0),
        regularisers: Sequence[Regulariser] = (),
        **options: Any,
    ) -> None:
        super().__init__(**options)
        for r in regularisers:
            if not isinstance(r, Regulariser):
                raise TypeError(f"regularisers must be KineticEnergy/JacobianFrobenius objects, got {r!r}")
        self.field = field
        self.t_span = check_span(t_span)
        self.regularisers = tuple(regularisers)
        self.regularisation: torch.Tensor | None = None

    def vector_field(self, t: torch.Tensor, y: Any) -> Any:
        """The field :math:`f_\\theta(t, y)` this model integrates."""
        return as_field(self.field)(t, y)

    def _integrate(self, f: Callable, y0: torch.Tensor, t_eval: Any) -> torch.Tensor:
        final_only = t_eval is None
        t = time_grid(self.t_span if final_only else t_eval, y0)
        if not self.regularisers:
            ys = self._solve(f, y0, t).ys
            self.regularisation = None
        else:
            field, state0 = augment_field(f, self.regularisers, y0)
            states = self._solve(field, state0, t).ys
            ys = states[0]
            self.regularisation = penalty(self.regularisers, [s[-1] for s in states[1:]])
        return ys[-1] if final_only else ys

    def forward(self, y0: torch.Tensor, t_eval: Any = None) -> torch.Tensor:
        """The state at ``t_span[1]`` (``t_eval=None``) or the trajectory ``[len(t_eval), *y0.shape]``."""
        return self._integrate(self.vector_field, y0, t_eval)


class DataControlledNeuralODE(NeuralODE):
    r"""A data-controlled neural ODE :math:`\dot z = f_\theta(t, z, x)`, :math:`z(0) = h(x)`
    (Massaroli et al., *Dissecting Neural ODEs*, NeurIPS 2020, Sec. 3.2).

    The field sees the input ``x`` at every depth, so the flow is a family of flows indexed by
    the input: maps that no single homeomorphism can express (the reflection ``x ↦ −x`` in 1-D)
    become learnable without augmenting the state. ``field`` receives
    ``torch.cat([z, x], dim=-1)`` (with ``t`` first if it takes two arguments); ``lift`` is
    :math:`h` (identity by default), so the state has ``field``'s output size.

    ```python
    import torch, torchnde as nde
    from torch import nn
    model = nde.models.DataControlledNeuralODE(nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1)))
    model(torch.tensor([[1.0], [-1.0]])).shape  # torch.Size([2, 1])
    ```
    """

    def __init__(self, field: Callable[..., Any], *, lift: nn.Module | None = None, **options: Any) -> None:
        super().__init__(field, **options)
        self.lift = lift

    def forward(self, x: torch.Tensor, t_eval: Any = None) -> torch.Tensor:
        """The state at ``t_span[1]`` or the trajectory, from ``z(0) = lift(x)``."""
        z0 = self.lift(x) if self.lift is not None else x
        inner = as_field(self.field)

        def f(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            return inner(t, torch.cat([z, x.expand(*z.shape[:-1], x.shape[-1])], dim=-1))

        return self._integrate(f, z0, t_eval)
