r"""Augmented neural ODEs: the state is lifted to more dimensions before the flow.

- Zero augmentation — E. Dupont, A. Doucet, Y. W. Teh, *Augmented Neural ODEs*, NeurIPS 2019,
  arXiv 1904.01681: :math:`h(0) = [x, 0_p]`.
- Input-layer augmentation — S. Massaroli, M. Poli, J. Park, A. Yamashita, H. Asama,
  *Dissecting Neural ODEs*, NeurIPS 2020, arXiv 2002.08071: :math:`h(0) = \psi(x)` for a learned
  layer :math:`\psi`.

A neural ODE's flow is a homeomorphism of its state space, so it cannot map ``+1 → −1`` and
``−1 → +1`` in 1-D, nor separate a disc from the annulus around it in 2-D; with extra
dimensions the trajectories can go around each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .neural_ode import NeuralODE

__all__ = ["AugmentedNeuralODE"]


class AugmentedNeuralODE(NeuralODE):
    r"""An augmented neural ODE: :math:`h(0) = [x, 0_p]` (or :math:`\psi(x)`), :math:`\dot h =
    f_\theta(t, h)`, output :math:`\mathrm{readout}(h(t_1))` (Dupont et al., NeurIPS 2019).

    **Arguments:**

    - ``field``: the network on the augmented state (input and output size ``d + augment_dims``).
    - ``augment_dims``: number of zero channels appended along ``dim`` (``-1`` for vectors, ``1``
      for images in ``[B, C, H, W]``). Mutually exclusive with ``input_layer``.
    - ``input_layer``: a learned lift :math:`\psi` (input-layer augmentation, Massaroli et al.
      2020) instead of zeros.
    - ``readout``: a module applied to the final state (or to each saved state), e.g.
      ``nn.Linear(d + p, out)``; ``None`` returns the augmented state.
    - ``dim``: the axis that is augmented.
    - the options of :class:`NeuralODE` (``t_span``, ``regularisers``, solve options).

    ```python
    import torch, torchnde as nde
    from torch import nn
    model = nde.models.AugmentedNeuralODE(
        nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 2)), augment_dims=1, readout=nn.Linear(2, 1))
    model(torch.tensor([[1.0], [-1.0]])).shape  # torch.Size([2, 1])
    ```
    """

    def __init__(
        self,
        field: Callable[..., Any],
        *,
        augment_dims: int = 0,
        input_layer: nn.Module | None = None,
        readout: nn.Module | None = None,
        dim: int = -1,
        **options: Any,
    ) -> None:
        super().__init__(field, **options)
        if augment_dims < 0:
            raise ValueError(f"augment_dims must be >= 0, got {augment_dims}")
        if augment_dims and input_layer is not None:
            raise ValueError("give either augment_dims (zero augmentation) or input_layer, not both")
        self.augment_dims = int(augment_dims)
        self.input_layer = input_layer
        self.readout = readout
        self.dim = dim

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """The initial state :math:`h(0)`: ``x`` with zeros appended, or ``input_layer(x)``."""
        if self.input_layer is not None:
            return self.input_layer(x)
        if not self.augment_dims:
            return x
        shape = list(x.shape)
        shape[self.dim] = self.augment_dims
        return torch.cat([x, x.new_zeros(shape)], dim=self.dim)

    def forward(self, x: torch.Tensor, t_eval: Any = None) -> torch.Tensor:
        """``readout(h(t_1))``, or the read-out trajectory ``[len(t_eval), batch, ...]``."""
        hs = self._integrate(self.vector_field, self.augment(x), t_eval)
        if self.readout is None:
            return hs
        if t_eval is None:
            return self.readout(hs)
        out = self.readout(hs.reshape(-1, *hs.shape[2:]))
        return out.reshape(hs.shape[0], hs.shape[1], *out.shape[1:])
