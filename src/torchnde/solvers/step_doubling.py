r"""Adaptive steps for the fixed-step SDE solvers, by step doubling.

A stochastic solver of strong order :math:`p` has no embedded error estimate of its own, so
each attempted step of size :math:`h` from :math:`(t_0, y_0)` is taken twice on the same
Brownian path: once whole, :math:`y_h`, and as two half steps through the midpoint
:math:`t_m = (t_0 + t_1)/2`, :math:`y_{h/2,h/2}`, the two halves driven by
:math:`W(t_m) - W(t_0)` and :math:`W(t_1) - W(t_m)` (a Brownian bridge inside the whole
step's increment, which the :class:`~torchnde.BrownianInterval` provides). The error estimate
is their difference,

.. math:: e = y_{h/2,h/2} - y_h, \qquad \|e\| = \operatorname{rms}\Big(\frac{e}{\mathrm{atol} +
          \mathrm{rtol}\max(|y_0|, |y_{h/2,h/2}|)}\Big),

and the solution carried on is the more accurate :math:`y_{h/2,h/2}`. The local error of a
method of strong order :math:`p` is :math:`O(h^{p+1/2})` in mean square, and so is :math:`e`,
so the controller's exponent is :math:`1/(p + \tfrac12)` (``error_order = p + 1/2`` for the
term's noise type: 1 for Euler–Maruyama under multiplicative noise, 1.5 for Milstein and the
Stratonovich methods under commutative noise, 2 for ``srk``). This is torchsde's adaptive
stepping and the estimator analysed by Gaines & Lyons (1997), who showed that step sizes chosen
from the path itself converge to the right solution when rejected steps revisit the same path
through Brownian bridges; Burrage, Herdiana & Burrage (2004) recommend a PI controller for it
(``PIDController(pcoeff=0.1, icoeff=0.3)``).

A step costs about three of the inner method's (the whole step, and two halves that share the
drift at :math:`t_0`); :math:`e` carries the term :math:`g' g\,\Delta W_1 \Delta W_2` for
Euler–Maruyama under multiplicative noise, whose size follows the path, so expect more rejected
steps than on an ODE.

??? cite "References"
    J. G. Gaines, T. J. Lyons, Variable step size control in the numerical solution of
    stochastic differential equations, *SIAM J. Appl. Math.* 57 (1997) 1455–1484.
    P. M. Burrage, R. Herdiana, K. Burrage, Adaptive stepsize based on control theory for
    stochastic differential equations, *J. Comput. Appl. Math.* 170 (2004) 317–336.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch

from .base import AbstractSolver, Func, StepResult
from .stochastic import AbstractSDESolver

__all__ = ["StepDoubling", "adaptive_sde"]


class StepDoubling(AbstractSDESolver):
    r"""A fixed-step SDE solver made adaptive by step doubling (module docstring): each step
    compares one step of ``h`` with two of ``h/2`` on the same Brownian path, carries the two
    halves on, and hands their difference to the controller as the error estimate.

    ``solve`` wraps the SDE solver in it by itself when tolerances are given
    (``solve(SDETerm(...), y0, ts, solver="milstein", rtol=1e-3, atol=1e-3)``); build it
    yourself to name the error order.

    **Arguments:**

    - ``solver``: a stochastic solver object (``nde.Milstein()``, ...), not
      ``nde.StochasticReversibleHeun()`` (it steps on a fixed grid for its exact reverse; ``heun`` is the same
      Stratonovich trapezoidal rule).
    - ``error_order``: the order of the error estimate, which sets the controller's exponent;
      default ``None``: the inner solver's strong order for the term's noise type plus 1/2,
      filled in by ``solve``.

    The Brownian motion must be queryable in any order: a :class:`~torchnde.BrownianInterval`
    (``solve`` makes one over the solve's span when the term has none; a
    :class:`~torchnde.BrownianPath` is refused). Outputs between steps are interpolated
    linearly.

    ```python
    import torch, torchnde as nde
    bm = nde.BrownianInterval(0.0, 1.0, (16, 1), dtype=torch.float64, seed=0)
    term = nde.SDETerm(lambda t, y: 0.5 * y, lambda t, y: 0.3 * y, calculus="stratonovich", brownian=bm)
    y0 = torch.ones(16, 1, dtype=torch.float64)
    sol = nde.solve(term, y0, torch.linspace(0, 1, 3), solver="heun", rtol=1e-4, atol=1e-6)
    exact = torch.exp(0.5 + 0.3 * bm(0.0, 1.0))  # Stratonovich GBM on the same path
    assert (sol.ys[-1] - exact).abs().max() < 2e-2  # the tolerance bounds each step's error
    ```
    """

    name: ClassVar[str] = "step_doubling"
    dense_order: ClassVar[int] = 1
    supports_per_sample: ClassVar[bool] = False  # adaptive SDE steps: the global layout only

    def __init__(self, solver: AbstractSDESolver, error_order: float | None = None):
        if not isinstance(solver, AbstractSDESolver):
            raise TypeError(
                "StepDoubling wraps a stochastic solver object (nde.EulerMaruyama(), nde.Milstein(), "
                f"nde.SRK(), nde.StochasticHeun(), ...), got {solver!r}"
            )
        inner = solver
        if inner.reversible:
            raise ValueError(
                f"{inner.name!r} steps on a fixed grid (its exact reverse needs it), so it cannot take "
                "adaptive steps: use 'heun' (the same Stratonovich trapezoidal rule) or pass dt=..."
            )
        if isinstance(inner, StepDoubling):
            raise ValueError("the solver is already a StepDoubling: pass its inner solver")
        if error_order is not None and not (isinstance(error_order, (int, float)) and error_order > 0):
            raise ValueError(f"error_order must be a positive number or None, got {error_order!r}")
        self.solver = inner
        self.error_order = error_order  # type: ignore[misc]  # per instance: it follows the noise
        self.order = inner.order  # type: ignore[misc]
        self.noises, self.calculi = inner.noises, inner.calculi  # type: ignore[misc]
        self.strong_orders, self.weak_order = inner.strong_orders, inner.weak_order  # type: ignore[misc]
        self.levy_area = inner.levy_area  # type: ignore[misc]

    @property
    def adaptive(self) -> bool:
        return True

    def unsupported(self, term: Any) -> str | None:  # type: ignore[override]
        return self.solver.unsupported(term)

    @property
    def fsal(self) -> bool:
        return self.solver.fsal

    @property
    def f1_exact(self) -> bool:
        return self.solver.f1_exact

    def init_state(self, ctrl: Any) -> Any:
        return self.solver.init_state(ctrl)

    def for_noise(self, noise: str) -> StepDoubling:
        """This wrapper with its error order for ``noise`` filled in (itself when set)."""
        if self.error_order is not None:
            return self
        return StepDoubling(self.solver, self.solver.strong_order(noise) + 0.5)

    def step(self, func: Func, t0: Any, y0: torch.Tensor, f0: torch.Tensor, dt: Any, need_error: bool = True,
             state: Any = None) -> StepResult:  # fmt: skip
        """Two half steps through ``(t0 + t1) / 2`` and, when ``need_error``, the whole step
        too; ``t1 = t0 + dt`` as the loop computes it, so every Brownian query lands on the
        times the loop and the next step use."""
        inner = self.solver
        before = _resume(state, y0)
        t1 = t0 + dt
        t_mid = 0.5 * (t0 + t1)
        whole = inner.step(func, t0, y0, f0, t1 - t0, False, before) if need_error else None
        first = inner.step(func, t0, y0, f0, t_mid - t0, False, before)
        f_mid = first.f1 if (inner.fsal and first.f1 is not None) else func(t_mid, first.y1)
        second = inner.step(func, t_mid, first.y1, f_mid, t1 - t_mid, False, first.state)
        errors = () if whole is None else self.error(whole.y1, second.y1, dt)
        after = None if second.state is None else _Resume(y0, before, second.y1, second.state)
        return StepResult(second.y1, errors, (), second.f1, state=after)

    def error(self, y_whole: torch.Tensor, y_halves: torch.Tensor, dt: Any) -> tuple[torch.Tensor]:
        """The error estimate per unit step (the loop's contract, ``StepResult.errors``):
        ``(y_halves - y_whole) / dt``."""
        return ((y_halves - y_whole) / dt,)

    def __repr__(self) -> str:
        order = "" if self.error_order is None else f", error_order={self.error_order}"
        return f"StepDoubling({self.solver!r}{order})"


class _Resume(NamedTuple):
    """A stateful inner solver's state around one step (the reversible Heun method's second
    state): the loop hands a step's state on whether it was accepted or not, so the next step
    resumes from ``after`` when it starts from this step's ``end`` (accepted), else from
    ``before`` (the step is retried from ``start``)."""

    start: torch.Tensor
    before: Any
    end: torch.Tensor
    after: Any


def _resume(state: Any, y0: torch.Tensor) -> Any:
    """The inner solver's state for a step from ``y0``."""
    if not isinstance(state, _Resume):
        return state  # the inner solver's initial state
    return state.after if y0 is state.end else state.before


def adaptive_sde(solver: AbstractSolver, noise: str) -> AbstractSolver:
    """The solver an adaptive solve of an SDE with ``noise`` steps with: a fixed-step stochastic
    solver wrapped in :class:`StepDoubling`, a :class:`StepDoubling` with its error order
    filled in, anything else unchanged."""
    if isinstance(solver, StepDoubling):
        return solver.for_noise(noise)
    if isinstance(solver, AbstractSDESolver) and not solver.adaptive:
        return StepDoubling(solver).for_noise(noise)
    return solver
