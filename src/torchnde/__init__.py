"""torchnde: neural differential equations on one fast, correct solver core.

```python
import torch, torchnde as nde
sol = nde.solve(lambda t, y: -y, torch.ones(3), torch.linspace(0, 1, 11), solver="tsit5")
```
"""

from __future__ import annotations

from . import brownian as brownian
from . import controllers as controllers
from . import datasets as datasets
from . import distributed as distributed
from . import gradients as gradients
from . import interpolation as interpolation
from . import log_ode as log_ode
from . import models as models
from . import solvers as solvers
from . import terms as terms
from ._solution import ConvergenceFailure as ConvergenceFailure
from ._solution import MaxStepsReached as MaxStepsReached
from ._solution import NonFiniteState as NonFiniteState
from ._solution import Solution as Solution
from ._solution import SolveError as SolveError
from ._solution import Stats as Stats
from ._solution import Status as Status
from ._solution import StepSizeTooSmall as StepSizeTooSmall
from ._solve import solve as solve
from .brownian import AbstractBrownian as AbstractBrownian
from .brownian import BrownianInterval as BrownianInterval
from .brownian import BrownianPath as BrownianPath
from .controllers import AbstractController as AbstractController
from .controllers import ConstantStep as ConstantStep
from .controllers import PIDController as PIDController
from .controllers import rms_norm as rms_norm
from .events import Event as Event
from .gradients import Adjoint as Adjoint
from .gradients import Backprop as Backprop
from .gradients import Checkpoint as Checkpoint
from .gradients import GraphMemory as GraphMemory
from .gradients import Reversible as Reversible
from .gradients import graph_memory as graph_memory
from .interpolation import AbstractPath as AbstractPath
from .interpolation import CubicSplinePath as CubicSplinePath
from .interpolation import HermitePath as HermitePath
from .interpolation import LinearPath as LinearPath
from .interpolation import RectilinearPath as RectilinearPath
from .interpolation import forward_fill as forward_fill
from .interpolation import with_observation_counts as with_observation_counts
from .interpolation import with_time_channel as with_time_channel
from .log_ode import LogODETerm as LogODETerm
from .log_ode import LogSignaturePath as LogSignaturePath
from .log_ode import lie_brackets as lie_brackets
from .log_ode import logsignature as logsignature
from .log_ode import logsignature_channels as logsignature_channels
from .log_ode import logsignature_windows as logsignature_windows
from .log_ode import lyndon_words as lyndon_words
from .solvers import RK4 as RK4
from .solvers import RK38 as RK38
from .solvers import SDIRK2 as SDIRK2
from .solvers import SRK as SRK
from .solvers import TRBDF2 as TRBDF2
from .solvers import Bosh3 as Bosh3
from .solvers import Dopri5 as Dopri5
from .solvers import Dopri8 as Dopri8
from .solvers import Euler as Euler
from .solvers import EulerHeun as EulerHeun
from .solvers import EulerMaruyama as EulerMaruyama
from .solvers import Fehlberg2 as Fehlberg2
from .solvers import FixedPoint as FixedPoint
from .solvers import FixedPointError as FixedPointError
from .solvers import FixedPointResult as FixedPointResult
from .solvers import FixedPointWarning as FixedPointWarning
from .solvers import GaussLegendre4 as GaussLegendre4
from .solvers import GaussLegendre6 as GaussLegendre6
from .solvers import Heun as Heun
from .solvers import Heun3 as Heun3
from .solvers import ImplicitEuler as ImplicitEuler
from .solvers import ImplicitMidpoint as ImplicitMidpoint
from .solvers import Kvaerno3 as Kvaerno3
from .solvers import Kvaerno4 as Kvaerno4
from .solvers import Kvaerno5 as Kvaerno5
from .solvers import Leapfrog as Leapfrog
from .solvers import Midpoint as Midpoint
from .solvers import Milstein as Milstein
from .solvers import Newton as Newton
from .solvers import PrinceDormand87 as PrinceDormand87
from .solvers import RadauIIA3 as RadauIIA3
from .solvers import RadauIIA5 as RadauIIA5
from .solvers import Ralston as Ralston
from .solvers import ReversibleHeun as ReversibleHeun
from .solvers import Rodas5P as Rodas5P
from .solvers import StepDoubling as StepDoubling
from .solvers import StochasticHeun as StochasticHeun
from .solvers import StochasticMidpoint as StochasticMidpoint
from .solvers import StochasticReversibleHeun as StochasticReversibleHeun
from .solvers import Trapezoid as Trapezoid
from .solvers import Tsit5 as Tsit5
from .solvers import Yoshida4 as Yoshida4
from .terms import AbstractTerm as AbstractTerm
from .terms import CDETerm as CDETerm
from .terms import ODETerm as ODETerm
from .terms import SDETerm as SDETerm

__version__ = "0.1.0"
