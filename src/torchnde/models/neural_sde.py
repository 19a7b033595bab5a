r"""Neural SDEs: drift and diffusion networks solved by :func:`torchnde.solve` on an
:class:`~torchnde.SDETerm`.

.. math:: dy = f_\theta(t, y)\,dt + g_\theta(t, y)\,dW(t)

(Itô, or Stratonovich :math:`g \circ dW`). References: B. Tzen, M. Raginsky, *Neural Stochastic
Differential Equations*, arXiv 1905.09883 (2019); X. Li, T.-K. L. Wong, R. T. Q. Chen,
D. Duvenaud, *Scalable Gradients for Stochastic Differential Equations*, AISTATS 2020, arXiv
2001.01328 (the stochastic adjoint); P. Kidger, J. Foster, X. Li, T. Lyons, *Efficient and
Accurate Gradients for Neural SDEs*, NeurIPS 2021, arXiv 2105.13493 (reversible Heun).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..brownian import AbstractBrownian
from ..gradients import Adjoint, Reversible
from ..terms import SDETerm
from ._base import SolveOptions, as_field, check_span, time_grid

__all__ = ["NeuralSDE", "with_params"]


def with_params(gradient: Any, params: Iterable[torch.Tensor]) -> Any:
    """``gradient`` with ``params`` filled in when it is the stochastic adjoint or reversible Heun.

    ``"adjoint"`` and ``"reversible"`` become :class:`~torchnde.Adjoint` and
    :class:`~torchnde.Reversible` objects; an object whose ``params`` is ``None`` gets ``params``
    (those requiring grad). Anything else is returned unchanged. A model passes its trainable
    parameters, and any tensor its fields close over that depends on them (a latent SDE's
    context), so that their gradients reach the model.
    """
    if gradient == "adjoint":
        gradient = Adjoint()
    elif gradient == "reversible":
        gradient = Reversible()
    if isinstance(gradient, (Adjoint, Reversible)) and gradient.params is None:
        gradient = dataclasses.replace(gradient, params=tuple(p for p in params if p.requires_grad))
    return gradient


def check_steps(who: str, dt: float | None, rtol: float | None, atol: float | None, options: dict) -> None:
    """An SDE model needs fixed steps (``dt``) or adaptive ones (``rtol``/``atol`` or a controller)."""
    if dt is None and rtol is None and atol is None and "controller" not in options:
        raise ValueError(
            f"{who} needs a step: pass dt=... for fixed steps (dt=1e-2, say) or rtol=/atol= for adaptive "
            "steps by step doubling"
        )


class NeuralSDE(SolveOptions):
    r"""A neural SDE :math:`dy = f_\theta(t, y)\,dt + g_\theta(t, y)\,dW`, :math:`y(t_0) = y_0`.

    The model maps ``y0`` to a sample of the solution at the end of ``t_span``, or to a sample
    path at the times ``t_eval`` (time first, as ``solve``). Each call draws a fresh Brownian
    path from torch's generator unless ``brownian=`` fixes one.

    **Arguments:**

    - ``drift``: the network :math:`f`, shaped like ``y``; called as ``drift(y)`` if its
      ``forward`` takes one argument (autonomous), else as ``drift(t, y)``.
    - ``diffusion``: the network :math:`g`, called the same way; its output's shape follows
      ``noise`` (see :class:`~torchnde.SDETerm`): ``y.shape`` for ``"diagonal"``,
      ``(*y.shape, m)`` for ``"general"``/``"additive"`` (``m`` Brownian motions per row),
      ``(*y.shape, 1)`` for ``"scalar"``.
    - ``noise``: ``"diagonal"`` (default), ``"general"``, ``"additive"`` or ``"scalar"``.
    - ``calculus``: ``"ito"`` (default) or ``"stratonovich"``.
    - ``t_span``: the interval used when no ``t_eval`` is given (default ``(0, 1)``).
    - ``solver``: an SDE solver (``nde.solvers.sde_names()``; default: ``solve``'s choice for
      the noise and calculus, ``srk`` for Itô, ``midpoint`` for Stratonovich).
    - ``dt`` (fixed steps) or ``rtol``/``atol`` (adaptive steps by step doubling): one is needed.
    - ``gradient``: ``"backprop"`` (default), ``"checkpoint"``, ``"adjoint"`` (the stochastic
      adjoint of Li et al. 2020; Itô general noise is refused) or ``"reversible"`` (with
      ``solver="reversible_heun"``, Stratonovich: exact gradients at O(1) memory), or a strategy
      object; ``"adjoint"`` and ``"reversible"`` are given this module's parameters.
    - other options of ``solve`` (``max_steps``, ``throw``, ``per_sample``, ...); an unknown one
      is an error.

    ```python
    import torch, torchnde as nde
    from torch import nn
    drift = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2))
    diffusion = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2), nn.Sigmoid())
    model = nde.models.NeuralSDE(drift, diffusion, solver="euler", dt=0.05)
    torch.manual_seed(0)
    model(torch.zeros(16, 2)).shape                             # torch.Size([16, 2]): y(1)
    model(torch.zeros(16, 2), torch.linspace(0, 1, 5)).shape    # torch.Size([5, 16, 2])
    ```
    """

    def __init__(
        self,
        drift: Callable[..., Any],
        diffusion: Callable[..., Any],
        *,
        noise: str = "diagonal",
        calculus: str = "ito",
        t_span: tuple[float, float] = (0.0, 1.0),
        solver: Any = None,
        **options: Any,
    ) -> None:
        super().__init__(solver=solver, **options)
        check_steps(type(self).__name__, self.dt, self.rtol, self.atol, self.solve_options)
        self.drift = drift
        self.diffusion = diffusion
        self.noise = noise
        self.calculus = calculus
        self.t_span = check_span(t_span)
        self.term_for(None)  # checks the callables, noise and calculus now, naming the valid ones

    def term_for(self, brownian: AbstractBrownian | None) -> SDETerm:
        """The :class:`~torchnde.SDETerm` this model solves, on ``brownian`` (``None``: a fresh path)."""
        return SDETerm(as_field(self.drift), as_field(self.diffusion), self.noise, self.calculus, brownian)

    def forward(
        self, y0: torch.Tensor, t_eval: Any = None, *, brownian: AbstractBrownian | None = None
    ) -> torch.Tensor:
        """A sample at ``t_span[1]`` (``t_eval=None``) or a sample path ``[len(t_eval), *y0.shape]``."""
        final_only = t_eval is None
        t = time_grid(self.t_span if final_only else t_eval, y0)
        gradient = with_params(self.gradient, self.parameters())
        ys = self._solve(self.term_for(brownian), y0, t, gradient=gradient).ys
        return ys[-1] if final_only else ys
