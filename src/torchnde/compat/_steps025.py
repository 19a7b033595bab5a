r"""How torchdiffeq 0.2.5 steps its adaptive methods, so that ``torchnde.compat.torchdiffeq``
takes the same steps (and calls the solver callbacks as often): its step-size rule
(:class:`Stepper`), its error scale, and its non-FSAL pairs' reuse of the last stage.

Found by running 0.2.5 as a black box (the step sizes its callbacks see, the scaled errors its
``norm`` option sees, where its vector field is evaluated):

- the first step is Hairer's (:func:`torchnde.controllers.initial_step_size` with the solver's
  error order), as in :class:`~torchnde.PIDController`;
- after a step of scaled error :math:`e` the next is ``h`` times
  :math:`\min(\mathrm{ifactor}, \max(\mathrm{safety}\, e^{-1/k}, m))` with :math:`m = 1`
  after an accepted step and ``dfactor`` after a rejected one, :math:`k` the error order: an
  accepted step never shrinks the next, and growth right after a rejection is not capped;
- its ``dopri5`` error estimate is 2/3 of the Dormand–Prince one (the same step's scaled error
  is 2/3 of torchnde's ``Dopri5``'s, to round-off);
- ``adaptive_heun`` and ``fehlberg2`` start each step from the previous step's last stage,
  ``f(t1, y0 + h k1)`` and ``f(t1, y0 + h (k1 + 255 k2) / 256)``, not from ``f(t1, y1)``: one
  evaluation a step fewer, and a different step sequence;
- the last step is taken whole, past the final time, and the outputs interpolated back, unless
  the final time is one of ``step_t``/``jump_t`` (0.2.5 cuts a step at those: it then ends there).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..controllers import PIDController
from ..solvers import ExplicitRungeKutta, Fehlberg2, Heun, resolve_solver
from ..solvers.base import Func, StepResult
from ..solvers.explicit_rk import hermite_interpolant
from ..solvers.tableau import DensePolynomial

__all__ = ["ERROR_SCALE", "Stepper", "solver", "stepper"]

# torchnde solver name -> the factor from its scaled error to 0.2.5's
ERROR_SCALE = {"dopri5": 2 / 3}


@dataclasses.dataclass(frozen=True)
class Stepper(PIDController):
    """torchdiffeq 0.2.5's step-size rule (see the module docstring): ``error_scale`` times the
    loop's scaled error is 0.2.5's; ``land_on_end=False`` steps past the final time as 0.2.5
    does. The global layout's floats in and out: no synchronisation beyond the loop's one."""

    error_scale: float = 1.0
    land_on_end: bool = False

    def adapt(self, err: Any, h: Any, memory: Any, ok: Any = True) -> tuple[Any, Any]:
        err = err * self.error_scale
        accept = err <= 1.0 and ok is True  # NaN compares false
        factor = self.safety * (err if err > 1e-300 else 1e-300) ** -memory.beta1  # err = 0: ifactor
        floor = 1.0 if accept else self.factor_min
        factor = self.factor_max if factor > self.factor_max else (floor if factor < floor else factor)
        return accept, h * factor


def _last_stage_hermite(b: tuple[float, ...]) -> DensePolynomial:
    """The cubic Hermite extension with the last stage in place of ``f(t1, y1)`` (what the step
    hands on as the next step's first stage): no extra evaluation; second order, as the pair."""
    p = hermite_interpolant(b).coefficients.copy()
    p[-2] += p[-1]
    return DensePolynomial(p[:-1], order=2)


class _LastStageFirst(ExplicitRungeKutta):
    """A non-FSAL pair stepped as 0.2.5 steps it: each step starts from the previous step's last
    stage instead of ``f(t1, y1)``."""

    @property
    def fsal(self) -> bool:
        return True

    @property
    def f1_exact(self) -> bool:
        return False

    def step(self, func: Func, t0: Any, y0: torch.Tensor, f0: torch.Tensor, dt: Any, need_error: bool = True,
             state: Any = None) -> StepResult:  # fmt: skip
        result = super().step(func, t0, y0, f0, dt, need_error, state)
        return result._replace(f1=result.ks[-1])


class _Heun(_LastStageFirst, Heun):
    """0.2.5's ``adaptive_heun``: Heun's pair, each step starting from ``f(t1, y0 + h k1)``."""

    interpolant = _last_stage_hermite(Heun.tableau.b)


class _Fehlberg2(_LastStageFirst, Fehlberg2):
    """0.2.5's ``fehlberg2``: each step starting from the previous step's third stage."""

    interpolant = _last_stage_hermite(Fehlberg2.tableau.b)


_REUSING = {"heun": _Heun, "fehlberg2": _Fehlberg2}


def solver(name: str) -> Any:
    """A fresh solver object stepping as 0.2.5's method of torchnde solver ``name`` does."""
    cls = _REUSING.get(name)
    return cls() if cls is not None else resolve_solver(name)


def stepper(name: str, **options: Any) -> Stepper:
    """0.2.5's controller for the method of torchnde solver ``name``."""
    return Stepper(error_scale=ERROR_SCALE.get(name, 1.0), **options)
