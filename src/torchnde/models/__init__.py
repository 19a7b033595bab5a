"""Ready models on the solver core: each an ``nn.Module`` that calls :func:`torchnde.solve`.

| model | paper |
|---|---|
| :class:`NeuralODE` | Chen et al., NeurIPS 2018 |
| :class:`AugmentedNeuralODE` | Dupont et al., NeurIPS 2019; input-layer: Massaroli et al., NeurIPS 2020 |
| :class:`SecondOrderNeuralODE` | Norcliffe et al., NeurIPS 2020 |
| :class:`DataControlledNeuralODE`, :class:`DepthVariantNeuralODE` | Massaroli et al., NeurIPS 2020 |
| :class:`HamiltonianNN`, :class:`SeparableHamiltonianNN` | Greydanus et al., NeurIPS 2019 |
| :class:`LagrangianNN` | Cranmer et al., ICLR 2020 workshop |
| :class:`UniversalODE` | Rackauckas et al., arXiv 2001.04385 |
| :class:`KineticEnergy`, :class:`JacobianFrobenius` | Finlay et al., ICML 2020 |
| :class:`PINN` (a contrast: the network is the solution, no ODE solve) | Raissi et al., JCP 2019 |
| :class:`NeuralCDE` | Kidger et al., NeurIPS 2020; log-ODE steps: Morrill et al., ICML 2021 |
| :class:`LatentODE`, :class:`ODERNN` | Rubanova et al., NeurIPS 2019 |
| :class:`DEQ` (an implicit layer: a fixed point, no ODE solve) | Bai et al., NeurIPS 2019 |
| :class:`CNF` | Chen et al., NeurIPS 2018; Grathwohl et al. (FFJORD), ICLR 2019 |
| :class:`SDEGAN` (:class:`SDEGenerator`, :class:`CDEDiscriminator`) | Kidger et al., ICML 2021 |
| :class:`NeuralSDE` | Tzen & Raginsky, arXiv 1905.09883; Li et al., AISTATS 2020 |
| :class:`LatentSDE` | Li et al., AISTATS 2020 |
| :class:`ConvODEField` (:class:`ConcatConv2d`): the ODE-Net block on feature maps | Chen et al., NeurIPS 2018, Sec. 3 |
"""

from ._base import SolveOptions, as_field
from .augmented import AugmentedNeuralODE
from .cnf import CNF, ConcatTimeMLP, exact_trace, hutchinson_trace, probe_like, standard_normal_log_prob
from .conv_field import ConcatConv2d, ConvODEField, group_norm
from .depth_variant import (
    Basis,
    DepthVariantNeuralODE,
    FourierBasis,
    GalerkinLinear,
    PolynomialBasis,
)
from .deq import DEQ
from .hamiltonian import HamiltonianNN, SeparableHamiltonianNN
from .lagrangian import LagrangianNN
from .latent_ode import LatentODE, LatentODEELBO, LatentODEOutput
from .latent_sde import DiagonalDiffusion, LatentSDE, LatentSDEELBO, Posterior
from .neural_cde import NeuralCDE
from .neural_ode import DataControlledNeuralODE, NeuralODE
from .neural_sde import NeuralSDE
from .ode_rnn import ODERNN, ODERNNStates
from .pinn import PINN, BurgersResidual, Partials, burgers_residual, tanh_network
from .regularisers import JacobianFrobenius, KineticEnergy, Regulariser
from .sde_gan import SDEGAN, CDEDiscriminator, LipSwish, SDEGenerator, lipswish_mlp
from .second_order import SecondOrderNeuralODE
from .universal import UniversalODE, fit_staged

__all__ = [
    "PINN",
    "AugmentedNeuralODE",
    "Basis",
    "BurgersResidual",
    "DataControlledNeuralODE",
    "DepthVariantNeuralODE",
    "FourierBasis",
    "GalerkinLinear",
    "HamiltonianNN",
    "JacobianFrobenius",
    "KineticEnergy",
    "LagrangianNN",
    "NeuralODE",
    "Partials",
    "PolynomialBasis",
    "Regulariser",
    "SecondOrderNeuralODE",
    "SeparableHamiltonianNN",
    "SolveOptions",
    "UniversalODE",
    "as_field",
    "burgers_residual",
    "fit_staged",
    "tanh_network",
    "NeuralCDE",
    "ODERNN",
    "ODERNNStates",
    "LatentODEELBO",
    "LatentODE",
    "LatentODEOutput",
    "DEQ",
    "CNF",
    "ConcatTimeMLP",
    "exact_trace",
    "hutchinson_trace",
    "probe_like",
    "standard_normal_log_prob",
    "SDEGAN",
    "CDEDiscriminator",
    "LipSwish",
    "SDEGenerator",
    "lipswish_mlp",
    "NeuralSDE",
    "LatentSDEELBO",
    "DiagonalDiffusion",
    "LatentSDE",
    "Posterior",
    "ConcatConv2d",
    "ConvODEField",
    "group_norm",
]
