r"""Second-order neural ODEs (SONODE): learn an acceleration, integrate position and velocity.

A. Norcliffe, C. Bodnar, B. Day, N. Simidjievski, P. Liò, *On Second Order Behaviour in
Augmented Neural ODEs*, NeurIPS 2020, arXiv 2006.07220.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._base import SolveOptions, as_field, check_span, time_grid

__all__ = ["SecondOrderNeuralODE"]


class SecondOrderNeuralODE(SolveOptions):
    r"""A second-order neural ODE :math:`\ddot x = a_\theta(t, x, \dot x)` (Norcliffe et al., NeurIPS 2020).

    It is integrated as the first-order system :math:`\dot x = v`, :math:`\dot v = a_\theta(t,
    x, v)` with the tuple state ``(x, v)`` (optimising this coupled system is equivalent to the
    second-order adjoint, and cheaper, as the paper shows). Unlike an augmented ODE, the extra
    state is the velocity by construction, so the learned law is interpretable.

    **Arguments:**

    - ``acceleration``: the network :math:`a_\theta`; it receives ``torch.cat([x, v], -1)``
      (and ``t`` first if its ``forward`` takes two arguments) and returns a tensor shaped like
      ``x``.
    - ``velocity``: the initial velocity: ``None`` (zeros, unless ``v0`` is passed to
      ``forward``), or a module :math:`v(0) = \phi(x_0)` learned from the initial position.
    - ``t_span`` and the solve options, as :class:`NeuralODE`.

    ``forward(x0, t_eval=None, v0=None, return_velocity=False)`` returns the final position (or
    the position trajectory, time first); ``return_velocity=True`` returns ``(x, v)``.

    ```python
    import torch, torchnde as nde
    from torch import nn
    model = nde.models.SecondOrderNeuralODE(nn.Sequential(nn.Linear(2, 20), nn.ELU(), nn.Linear(20, 1)))
    xs = model(torch.randn(30, 1), torch.linspace(0, 10, 100), v0=torch.zeros(30, 1))  # [100, 30, 1]
    ```
    """

    def __init__(
        self,
        acceleration: Callable[..., Any],
        *,
        velocity: nn.Module | None = None,
        t_span: tuple[float, float] = (0.0, 1.0),
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if velocity is not None and not callable(velocity):
            raise TypeError("velocity must be None (zeros or v0 given) or a module v0 = velocity(x0)")
        self.acceleration = acceleration
        self.velocity = velocity
        self.t_span = check_span(t_span)

    def accel(self, t: torch.Tensor, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The learned acceleration :math:`a_\\theta(t, x, v)`."""
        return as_field(self.acceleration)(t, torch.cat([x, v], dim=-1))

    def vector_field(self, t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple:
        """The first-order system :math:`(\\dot x, \\dot v) = (v, a_\\theta(t, x, v))`."""
        x, v = state
        return v, self.accel(t, x, v)

    def initial_velocity(self, x0: torch.Tensor, v0: torch.Tensor | None = None) -> torch.Tensor:
        """``v0`` if given, else ``velocity(x0)``, else zeros."""
        if v0 is not None:
            if v0.shape != x0.shape:
                raise ValueError(f"v0 must have x0's shape {tuple(x0.shape)}, got {tuple(v0.shape)}")
            return v0
        if self.velocity is not None:
            return self.velocity(x0)
        return torch.zeros_like(x0)

    def forward(
        self,
        x0: torch.Tensor,
        t_eval: Any = None,
        v0: torch.Tensor | None = None,
        return_velocity: bool = False,
    ) -> Any:
        """Positions at ``t_span[1]`` or along ``t_eval`` (with velocities if asked)."""
        final_only = t_eval is None
        t = time_grid(self.t_span if final_only else t_eval, x0)
        xs, vs = self._solve(self.vector_field, (x0, self.initial_velocity(x0, v0)), t).ys
        if final_only:
            xs, vs = xs[-1], vs[-1]
        return (xs, vs) if return_velocity else xs
