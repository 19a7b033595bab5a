r"""Depth-variant neural ODEs: weights that are functions of depth, expanded in a basis.

S. Massaroli, M. Poli, J. Park, A. Yamashita, H. Asama, *Dissecting Neural ODEs*, NeurIPS 2020,
arXiv 2002.08071, Sec. 3.1 ("Galerkin neural ODEs").

The parameters of each layer are :math:`\theta(s) = \sum_{i} \alpha_i\,\varphi_i(s)` with a
fixed basis :math:`\varphi` (Fourier or polynomial) and learned coefficients :math:`\alpha`, so
the field :math:`f_{\theta(s)}(s, z)` changes with depth :math:`s` at a cost that does not grow
with the number of steps. With the constant basis alone (one mode) the model is exactly a
plain autonomous neural ODE.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._names import did_you_mean
from .neural_ode import NeuralODE

__all__ = ["Basis", "FourierBasis", "GalerkinLinear", "PolynomialBasis", "DepthVariantNeuralODE"]


class Basis(nn.Module):
    """Basis functions of depth ``s``: ``forward(s) -> [n]`` (the first is the constant 1)."""

    size: int

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class FourierBasis(Basis):
    r""":math:`\{1, \cos(2\pi k s/P), \sin(2\pi k s/P)\}_{k=1}^{K}`: ``1 + 2 modes`` functions."""

    def __init__(self, modes: int, period: float = 1.0) -> None:
        super().__init__()
        if modes < 0 or period <= 0:
            raise ValueError(f"FourierBasis needs modes >= 0 and period > 0, got {modes}, {period}")
        self.modes, self.period = int(modes), float(period)
        self.size = 1 + 2 * self.modes

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        s = s.reshape(())
        k = torch.arange(1, self.modes + 1, dtype=s.dtype, device=s.device)
        w = 2 * math.pi * k * s / self.period
        return torch.cat([torch.ones(1, dtype=s.dtype, device=s.device), torch.cos(w), torch.sin(w)])


class PolynomialBasis(Basis):
    r"""Legendre polynomials :math:`P_0 … P_n` of :math:`2(s - s_0)/(s_1 - s_0) - 1` on the depth
    span (well conditioned; :math:`P_0 = 1`): ``degree + 1`` functions."""

    def __init__(self, degree: int, span: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        if degree < 0 or span[0] == span[1]:
            raise ValueError(f"PolynomialBasis needs degree >= 0 and a non-empty span, got {degree}, {span}")
        self.degree, self.span = int(degree), (float(span[0]), float(span[1]))
        self.size = self.degree + 1

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        s = s.reshape(())
        x = 2 * (s - self.span[0]) / (self.span[1] - self.span[0]) - 1
        out = [torch.ones_like(x), x]
        for n in range(1, self.degree):  # Bonnet: (n+1) P_{n+1} = (2n+1) x P_n - n P_{n-1}
            out.append(((2 * n + 1) * x * out[n] - n * out[n - 1]) / (n + 1))
        return torch.stack(out[: self.size])


class GalerkinLinear(nn.Module):
    r"""A linear layer whose weight and bias depend on depth: :math:`W(s) = \sum_i \varphi_i(s) W_i`.

    ``forward(s, x)``. Coefficient 0 multiplies the constant basis function and is initialised
    like ``nn.Linear``; the others start at zero (so training starts from a plain layer).
    """

    def __init__(self, in_features: int, out_features: int, basis: Basis) -> None:
        super().__init__()
        self.basis = basis
        plain = nn.Linear(in_features, out_features)
        weight = torch.zeros(basis.size, out_features, in_features)
        bias = torch.zeros(basis.size, out_features)
        weight[0], bias[0] = plain.weight.detach(), plain.bias.detach()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)

    def forward(self, s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        phi = self.basis(s.to(self.weight.dtype))
        weight = torch.tensordot(phi, self.weight, dims=1)
        bias = torch.tensordot(phi, self.bias, dims=1)
        return nn.functional.linear(x, weight, bias)


class _GalerkinMLP(nn.Module):
    def __init__(self, sizes: Sequence[int], basis: Basis, activation: nn.Module) -> None:
        super().__init__()
        self.layers = nn.ModuleList(GalerkinLinear(a, b, basis) for a, b in itertools.pairwise(sizes))
        self.activation = activation

    def forward(self, s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(s, x)
            if i + 1 < len(self.layers):
                x = self.activation(x)
        return x


class DepthVariantNeuralODE(NeuralODE):
    r"""A Galerkin (depth-variant) neural ODE :math:`\dot z = f_{\theta(s)}(z)` with
    :math:`\theta(s) = \sum_i \alpha_i \varphi_i(s)` (Massaroli et al., NeurIPS 2020).

    **Arguments:**

    - ``features``: the state size; ``hidden``: the hidden widths of the MLP field.
    - ``basis``: ``"fourier"`` (``modes`` cosine/sine pairs over ``period`` = the depth span) or
      ``"polynomial"`` (Legendre up to degree ``modes``), or a :class:`Basis`.
    - ``activation``: between layers (default ``nn.Tanh()``).
    - ``data_controlled``: the field also sees the input, :math:`f_{\theta(s)}(z, x)`.
    - the options of :class:`NeuralODE`.

    ``modes=0`` gives the constant basis alone: the model is then the plain neural ODE whose
    layers have the constant coefficients as weights (exactly, see the tests).

    ```python
    import torch, torchnde as nde
    model = nde.models.DepthVariantNeuralODE(2, [32], basis="fourier", modes=2)
    model(torch.randn(16, 2)).shape  # torch.Size([16, 2])
    ```
    """

    def __init__(
        self,
        features: int,
        hidden: Sequence[int] = (32,),
        *,
        basis: str | Basis = "fourier",
        modes: int = 2,
        activation: nn.Module | None = None,
        data_controlled: bool = False,
        t_span: tuple[float, float] = (0.0, 1.0),
        **options: Any,
    ) -> None:
        if isinstance(basis, str):
            if basis == "fourier":
                basis = FourierBasis(modes, period=abs(t_span[1] - t_span[0]))
            elif basis == "polynomial":
                basis = PolynomialBasis(modes, span=(min(t_span), max(t_span)))
            else:
                raise ValueError(
                    f"unknown basis {basis!r}; valid: 'fourier', 'polynomial', or a Basis."
                    f"{did_you_mean(basis, ('fourier', 'polynomial'))}"
                )
        elif not isinstance(basis, Basis):
            raise TypeError(f"basis must be 'fourier', 'polynomial' or a Basis, got {basis!r}")
        inputs = features * (2 if data_controlled else 1)
        net = _GalerkinMLP([inputs, *hidden, features], basis, activation or nn.Tanh())
        super().__init__(net, t_span=t_span, **options)
        self.data_controlled = bool(data_controlled)

    def forward(self, x: torch.Tensor, t_eval: Any = None) -> torch.Tensor:
        """The state at ``t_span[1]`` (or the trajectory) from ``z(t_0) = x``."""
        if not self.data_controlled:
            return self._integrate(self.field, x, t_eval)
        return self._integrate(lambda s, z: self.field(s, torch.cat([z, x], dim=-1)), x, t_eval)
