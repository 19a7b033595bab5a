"""Solvers: one file per method family, all on the engines in this package.

``names()`` lists what ``solve(solver=...)`` accepts; :func:`resolve_solver` maps a name or an
object onto a solver, rejecting anything else with the list of valid names; :func:`accepting`
lists the solvers that integrate a given term.
"""

from __future__ import annotations

from .._names import did_you_mean
from .adams import AdamsBashforth, AdamsBashforthMoulton, AdamsState
from .base import AbstractSolver, StepResult
from .classic import RK4, RK38, Bosh3, Euler, Fehlberg2, Heun, Heun3, Midpoint, Ralston
from .dopri5 import Dopri5
from .dopri8 import Dopri8
from .explicit_rk import ExplicitRungeKutta
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
from .symplectic import Leapfrog, Yoshida4
from .tableau import ButcherTableau, DensePolynomial
from .tsit5 import Tsit5

__all__ = [
    "RK4",
    "RK38",
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
    "Newton",
    "PrinceDormand87",
    "RadauIIA3",
    "RadauIIA5",
    "Ralston",
    "ReversibleHeun",
    "ReversibleState",
    "Rodas5P",
    "RosenbrockState",
    "SDIRK2",
    "TRBDF2",
    "StepResult",
    "Trapezoid",
    "Tsit5",
    "Yoshida4",
    "accepting",
    "names",
    "resolve_solver",
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


def names() -> list[str]:
    """The solver names accepted by ``solve(solver=...)``."""
    return sorted(_REGISTRY)


def accepting(term: object) -> list[str]:
    """The names of the registered solvers that integrate ``term`` (those whose declared
    ``terms`` it is an instance of), sorted."""
    return sorted(name for name, cls in _REGISTRY.items() if isinstance(term, cls.terms))


def resolve_solver(solver: str | AbstractSolver) -> AbstractSolver:
    """A solver object from a name or an object; unknown names list the valid ones."""
    if isinstance(solver, AbstractSolver):
        return solver
    if isinstance(solver, type) and issubclass(solver, AbstractSolver):
        return solver()
    if isinstance(solver, str):
        cls = _REGISTRY.get(solver.lower())
        if cls is None:
            raise ValueError(
                f"unknown solver {solver!r}; valid solvers: {', '.join(names())}.{did_you_mean(solver, names())}"
            )
        return cls()
    raise TypeError(f"solver must be a name or a solver object, got {type(solver).__name__}")
