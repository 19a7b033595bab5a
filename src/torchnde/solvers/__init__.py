"""Solvers: one file per method family, all on the engines in this package.

``names()`` lists what ``solve(solver=...)`` accepts for an ODE, ``sde_names()`` for an SDE
(the term picks the namespace: ``"heun"`` is Heun's ODE method for an ODE term and the
stochastic Heun method for an SDE term); :func:`resolve_solver` maps a name or an object onto a
solver, rejecting anything else with the list of valid names; :func:`accepting` lists the
solvers that integrate a given term.
"""

from __future__ import annotations

from .._names import did_you_mean
from ..terms import SDETerm
from .adams import AdamsBashforth, AdamsBashforthMoulton, AdamsState
from .base import AbstractSolver, StepResult
from .classic import RK4, RK38, Bosh3, Euler, Fehlberg2, Heun, Heun3, Midpoint, Ralston
from .dopri5 import Dopri5
from .dopri8 import Dopri8
from .explicit_rk import ExplicitRungeKutta
from .fixed_point import (
    FIXED_POINT_METHODS,
    FixedPoint,
    FixedPointError,
    FixedPointResult,
    FixedPointWarning,
    relative_residual,
)
from .fully_implicit import (
    FIRKTableau,
    FullyImplicitRK,
    GaussLegendre4,
    GaussLegendre6,
    ImplicitMidpoint,
    RadauIIA3,
    RadauIIA5,
)
from .implicit import (
    SDIRK2,
    TRBDF2,
    ESDIRKTableau,
    ImplicitEuler,
    ImplicitState,
    Kvaerno3,
    Kvaerno4,
    Kvaerno5,
    Newton,
    Trapezoid,
)
from .prince_dormand import PrinceDormand87
from .reversible import ReversibleHeun, ReversibleState
from .rosenbrock import Rodas5P, RosenbrockState
from .srk import SRK
from .step_doubling import StepDoubling, adaptive_sde
from .stochastic import (
    AbstractSDESolver,
    EulerHeun,
    EulerMaruyama,
    Milstein,
    ReversibleHeunState,
    StochasticHeun,
    StochasticMidpoint,
    StochasticReversibleHeun,
)
from .symplectic import Leapfrog, Yoshida4
from .tableau import ButcherTableau, DensePolynomial
from .tsit5 import Tsit5

__all__ = [
    "RK4",
    "RK38",
    "SRK",
    "AbstractSDESolver",
    "AbstractSolver",
    "AdamsBashforth",
    "AdamsBashforthMoulton",
    "AdamsState",
    "Bosh3",
    "ButcherTableau",
    "DensePolynomial",
    "Dopri5",
    "Dopri8",
    "ESDIRKTableau",
    "Euler",
    "EulerHeun",
    "EulerMaruyama",
    "ExplicitRungeKutta",
    "FIRKTableau",
    "FullyImplicitRK",
    "GaussLegendre4",
    "GaussLegendre6",
    "Fehlberg2",
    "Heun",
    "Heun3",
    "ImplicitEuler",
    "ImplicitMidpoint",
    "ImplicitState",
    "Kvaerno3",
    "Kvaerno4",
    "Kvaerno5",
    "Leapfrog",
    "Midpoint",
    "Milstein",
    "Newton",
    "PrinceDormand87",
    "RadauIIA3",
    "RadauIIA5",
    "Ralston",
    "ReversibleHeun",
    "ReversibleHeunState",
    "ReversibleState",
    "Rodas5P",
    "RosenbrockState",
    "SDIRK2",
    "TRBDF2",
    "StepDoubling",
    "StepResult",
    "StochasticHeun",
    "StochasticMidpoint",
    "StochasticReversibleHeun",
    "Trapezoid",
    "Tsit5",
    "Yoshida4",
    "accepting",
    "adaptive_sde",
    "default_solver",
    "names",
    "resolve_solver",
    "sde_names",
    "FIXED_POINT_METHODS",
    "FixedPoint",
    "FixedPointError",
    "FixedPointResult",
    "FixedPointWarning",
    "relative_residual",
]

_REGISTRY: dict[str, type[AbstractSolver]] = {
    cls.name: cls
    for cls in (
        Euler,
        Midpoint,
        Heun,
        Ralston,
        Heun3,
        RK4,
        RK38,
        Fehlberg2,
        Bosh3,
        Dopri5,
        Tsit5,
        Dopri8,
        PrinceDormand87,
        ReversibleHeun,
        Leapfrog,
        Yoshida4,
        ImplicitEuler,
        Kvaerno3,
        Kvaerno4,
        Kvaerno5,
        Rodas5P,
        Trapezoid,
        SDIRK2,
        TRBDF2,
        ImplicitMidpoint,
        GaussLegendre4,
        GaussLegendre6,
        RadauIIA3,
        RadauIIA5,
        AdamsBashforth,
        AdamsBashforthMoulton,
    )
}


_SDE_REGISTRY: dict[str, type[AbstractSolver]] = {
    cls.name: cls
    for cls in (
        EulerMaruyama,
        Milstein,
        SRK,
        StochasticHeun,
        StochasticMidpoint,
        EulerHeun,
        StochasticReversibleHeun,
    )
}


def names() -> list[str]:
    """The solver names accepted by ``solve(solver=...)`` for an ODE."""
    return sorted(_REGISTRY)


def sde_names() -> list[str]:
    """The solver names accepted by ``solve(solver=...)`` for an SDE term."""
    return sorted(_SDE_REGISTRY)


def accepting(term: object) -> list[str]:
    """The names of the registered solvers that integrate ``term`` (those whose declared
    ``terms`` it is an instance of and that support it: an SDE's noise type and calculus),
    sorted."""
    registry = _SDE_REGISTRY if isinstance(term, SDETerm) else _REGISTRY
    return sorted(
        name
        for name, cls in registry.items()
        if isinstance(term, cls.terms) and cls.unsupported(term) is None
    )


def default_solver(term: object) -> str:
    """The solver ``solve`` uses when none is named: ``"tsit5"`` for an ODE; for an SDE,
    torchsde's choice: ``"srk"`` for Itô with diagonal, scalar or additive noise, ``"euler"`` for
    Itô with general noise, ``"midpoint"`` for Stratonovich."""
    if not isinstance(term, SDETerm):
        return "tsit5"
    if term.calculus == "stratonovich":
        return "midpoint"
    return "euler" if term.noise == "general" else "srk"


def resolve_solver(solver: str | AbstractSolver, term: object = None) -> AbstractSolver:
    """A solver object from a name or an object; unknown names list the valid ones. Names are
    looked up among the SDE solvers when ``term`` is an :class:`~torchnde.SDETerm`."""
    if isinstance(solver, AbstractSolver):
        return solver
    if isinstance(solver, type) and issubclass(solver, AbstractSolver):
        return solver()
    if isinstance(solver, str):
        sde = isinstance(term, SDETerm)
        registry = _SDE_REGISTRY if sde else _REGISTRY
        cls = registry.get(solver.lower())
        if cls is None:
            valid = sde_names() if sde else names()
            kind = "SDE solvers" if sde else "solvers"
            raise ValueError(
                f"unknown solver {solver!r}; valid {kind}: {', '.join(valid)}.{did_you_mean(solver, valid)}"
            )
        return cls()
    raise TypeError(f"solver must be a name or a solver object, got {type(solver).__name__}")
