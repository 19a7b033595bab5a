"""Ready models on the solver core: each an ``nn.Module`` that calls :func:`torchnde.solve`.

| model | paper |
|---|---|
| :class:`NeuralODE` | Chen et al., NeurIPS 2018 |
| :class:`AugmentedNeuralODE` | Dupont et al., NeurIPS 2019; input-layer: Massaroli et al., NeurIPS 2020 |
| :class:`SecondOrderNeuralODE` | Norcliffe et al., NeurIPS 2020 |
| :class:`DataControlledNeuralODE`, :class:`DepthVariantNeuralODE` | Massaroli et al., NeurIPS 2020 |
| :class:`KineticEnergy`, :class:`JacobianFrobenius` | Finlay et al., ICML 2020 |
"""

from ._base import SolveOptions, as_field
from .augmented import AugmentedNeuralODE
from .depth_variant import (
    Basis,
    DepthVariantNeuralODE,
    FourierBasis,
    GalerkinLinear,
    PolynomialBasis,
)
from .neural_ode import DataControlledNeuralODE, NeuralODE
from .regularisers import JacobianFrobenius, KineticEnergy, Regulariser
from .second_order import SecondOrderNeuralODE

__all__ = [
    "AugmentedNeuralODE",
    "Basis",
    "DataControlledNeuralODE",
    "DepthVariantNeuralODE",
    "FourierBasis",
    "GalerkinLinear",
    "JacobianFrobenius",
    "KineticEnergy",
    "NeuralODE",
    "PolynomialBasis",
    "Regulariser",
    "SecondOrderNeuralODE",
    "SolveOptions",
    "as_field",
]
