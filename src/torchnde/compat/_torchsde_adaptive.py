"""The torchsde drop-in's adaptive stepping (``sdeint(adaptive=True, rtol, atol, dt_min)``),
as torchsde 0.2.6 does it, on torchnde's :class:`~torchnde.StepDoubling`:

- the error estimate of a step is the difference between one step and two half steps,
  :math:`\\operatorname{rms}\\big((y_{h/2,h/2} - y_h) / \\max(\\mathrm{rtol}\\max(|y_h|,
  |y_{h/2,h/2}|) + \\mathrm{atol}, 10^{-7})\\big)`, at least :math:`10^{-7}` (torchsde scales by
  the two estimates where :class:`~torchnde.PIDController` scales by the step's ends: the solver
  here hands the loop the error already scaled, and the controller a unit scale);
- the first step is ``dt``; after each step, with :math:`r = 0.9/\\mathrm{err}` and
  :math:`r_\\text{prev}` the last accepted step's (or the first step's, when none was accepted
  yet), the step is multiplied by
  :math:`r^{1/1.5}` clipped to :math:`[0.2, 1.4]` after a rejection, and by
  :math:`r^{1/4.5}(r/r_\\text{prev})^{0.13}` clipped to :math:`[1, 1.4]` after an acceptance;
- below ``dt_min`` the step is ``dt_min``. torchsde then accepts the step just taken whatever its
  size and error, with a warning; here a step above tolerance is accepted only when it is at most
  ``dt_min`` long (a longer one is retried at ``dt_min``), and the solve warns once with the count
  of such steps (``Stats.forced`` of :func:`torchnde.solve`).

Away from ``dt_min`` the drop-in takes torchsde's steps: the same times, the same Brownian
queries (midpoints :math:`(t_0 + t_1)/2`), the same decisions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..controllers import AbstractController, accept_at_dtmin
from ..solvers import AbstractSDESolver, StepDoubling

__all__ = ["TorchsdeDoubling", "TorchsdeSteps"]

_EPS = 1e-7  # torchsde's floor on the tolerance and on the error estimate


class TorchsdeDoubling(StepDoubling):
    """:class:`~torchnde.StepDoubling` with torchsde's scaling of the error (module docstring):
    the error it returns is already divided by torchsde's tolerance, so the controller's scale
    must be one (:class:`TorchsdeSteps` has ``rtol=0``, ``atol=1``)."""

    def __init__(self, solver: AbstractSDESolver, rtol: float, atol: float):
        super().__init__(solver, error_order=1.0)  # the exponents are torchsde's, not the order's
        self.tol = (float(rtol), float(atol))

    def error(self, y_whole: torch.Tensor, y_halves: torch.Tensor, dt: Any) -> tuple[torch.Tensor]:
        rtol, atol = self.tol
        scale = torch.maximum(y_whole.abs(), y_halves.abs()).mul_(rtol).add_(atol).clamp_min_(_EPS)
        return ((y_halves - y_whole) / scale / dt,)


class _Memory:
    """The last proposed step (torchsde grows and shrinks it, not the step shortened to land on
    the final time), the last accepted step's error ratio, and the forced steps."""

    __slots__ = ("forced", "forced_now", "ratio", "step")

    def __init__(self, step: float):
        self.step, self.ratio, self.forced, self.forced_now = step, None, 0, False


@dataclass(frozen=True)
class TorchsdeSteps(AbstractController):
    """torchsde 0.2.6's step-size rule (module docstring), first step ``dt0``, smallest step
    ``dtmin``. Global layout only (the drop-in solves one batch)."""

    dt0: float
    dtmin: float
    rtol: Any = 0.0  # the error arrives scaled (TorchsdeDoubling): a unit scale here
    atol: Any = 1.0
    on_dtmin: ClassVar[str] = "accept"

    def __post_init__(self) -> None:
        for name in ("dt0", "dtmin"):
            value = getattr(self, name)
            if not (isinstance(value, float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive float, got {value!r}")

    def start(self, solver: Any, func: Any, s0: Any, y0: torch.Tensor, f0: torch.Tensor,
              error_norm: Any) -> tuple[Any, Any]:  # fmt: skip
        return self.dt0, _Memory(self.dt0)

    def adapt(self, err: Any, h: Any, memory: Any, ok: Any = True) -> tuple[Any, Any]:
        m = memory
        err = max(err, _EPS)
        accept = err <= 1.0
        ratio = 0.9 / err
        prev = ratio if m.ratio is None else m.ratio  # a first step's ratio, even a rejected one's
        if accept:
            factor = min(1.4, max(1.0, ratio ** (1 / 4.5) * (ratio / prev) ** 0.13))
            m.ratio = ratio
        else:
            factor = min(1.4, max(0.2, ratio ** (1 / 1.5)))
            m.ratio = prev
        step = m.step * factor
        if step < self.dtmin:
            step, m.ratio = self.dtmin, None
        m.step = step
        return accept_at_dtmin(accept, err, h, self.dtmin, m), step
