r"""Step-size controllers: constant steps and the PID controller, plus Hairer's initial step.

A controller owns its rule: the first step (:meth:`AbstractController.start`), and after each
step the accept/reject decision and the next step size (:meth:`AbstractController.adapt`). The
rule is written once for both layouts of the loop: in the global layout the error norm, step
size and decision are Python floats and bools, per sample they are ``[B]`` tensors. The helpers
:func:`clip` and :func:`where` work on either, so a user's subclass is layout-generic too::

    class MaxStep(nde.PIDController):
        def adapt(self, err, h, memory, ok=True):
            accept, dt = super().adapt(err, h, memory, ok)
            return accept, nde.controllers.clip(dt, 0.0, 0.05)

A controller turns the scaled error norm of a step into an accept/reject decision and the next
step size. The scaled error of a proposed step from :math:`y_0` to :math:`y_1` with embedded
error estimate :math:`e` is

.. math:: \|e\| = \operatorname{norm}\Bigl(\frac{e}{\mathrm{atol} + \mathrm{rtol}\,
          \max(|y_0|, |y_1|)}\Bigr),

with the root-mean-square norm by default; the step is accepted when it is at most 1.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ._names import checked_keywords, did_you_mean

__all__ = [
    "AbstractController",
    "ConstantStep",
    "PIDController",
    "channel_rms_norm",
    "clip",
    "rms_norm",
    "where",
    "with_times",
]

TimesLike = "torch.Tensor | Sequence[float] | None"


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """Root-mean-square over the last axis (the default error norm). The loop hands a norm the
    scaled error flattened to ``[N]`` (global) or ``[B, N]`` (per sample)."""
    return torch.linalg.vector_norm(x, dim=-1) / math.sqrt(x.shape[-1])


def channel_rms_norm(
    sizes: list[int], keep: list[bool] | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    r"""A norm for a 1-D ``x`` made of consecutive channels of ``sizes`` elements: the largest
    RMS norm over the channels (those where ``keep`` holds), :math:`\max_c \sqrt{\sum_{i \in c}
    x_i^2 / n_c}`, in six kernels whatever the number of channels (a squared sum per channel by
    ``index_add_``). Empty channels are skipped.

    ```python
    import torch
    from torchnde.controllers import channel_rms_norm
    norm = channel_rms_norm([2, 1])
    assert abs(float(norm(torch.tensor([3.0, 4.0, 1.0]))) - 12.5**0.5) < 1e-6  # max(sqrt(25 / 2), 1)
    ```
    """
    keep = [True] * len(sizes) if keep is None else list(keep)
    if len(keep) != len(sizes):
        raise ValueError(f"keep has {len(keep)} entries for {len(sizes)} channels")
    weights = [1.0 / n if k and n > 0 else 0.0 for n, k in zip(sizes, keep)]
    cache: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def norm(x: torch.Tensor) -> torch.Tensor:
        key = (x.dtype, x.device)
        found = cache.get(key)
        if found is None:
            with torch.inference_mode(False):
                channels = torch.repeat_interleave(torch.arange(len(sizes), device=x.device),
                                                   torch.tensor(sizes, device=x.device))  # fmt: skip
                found = cache[key] = (channels, torch.tensor(weights, dtype=x.dtype, device=x.device))
        channels, w = found
        sums = torch.zeros(len(sizes), dtype=x.dtype, device=x.device).index_add_(0, channels, x * x)
        return (sums * w).max().sqrt()

    return norm


def _times(name: str, value: Any) -> torch.Tensor | None:
    if value is None:
        return None
    out = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    if out.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of times, got shape {tuple(out.shape)}")
    if not torch.isfinite(out).all():
        raise ValueError(f"{name} must be finite")
    return torch.unique(out)  # sorted, deduplicated


def union_times(a: Any, b: Any) -> torch.Tensor | None:
    """The sorted union of two ``step_ts``/``jump_ts`` values (``None`` for none)."""
    if a is None or b is None:
        return a if b is None else _times("times", b)
    return torch.unique(torch.cat([_times("times", a), _times("times", b)]))  # type: ignore[list-item]


def with_times(ctrl: AbstractController, step_ts: Any = None, jump_ts: Any = None) -> AbstractController:
    """``ctrl`` with more times to land on (``step_ts``) and jumps (``jump_ts``) added to its
    own: a copy, ``ctrl`` itself when there is nothing to add (how ``solve`` adds a term's
    times, e.g. the knots of a CDE's control path)."""
    if step_ts is None and jump_ts is None:
        return ctrl
    merged = {"step_ts": union_times(ctrl.step_ts, step_ts), "jump_ts": union_times(ctrl.jump_ts, jump_ts)}
    if dataclasses.is_dataclass(ctrl):
        return dataclasses.replace(ctrl, **merged)
    out = copy.copy(ctrl)
    for name, value in merged.items():
        object.__setattr__(out, name, value)
    return out


def clip(x: Any, lo: float, hi: float) -> Any:
    """``x`` clipped to ``[lo, hi]``: a float in the global layout, a tensor per sample."""
    if x.__class__ is float:  # the global layout's hot path: no call but this one
        return lo if x < lo else (hi if x > hi else x)
    if isinstance(x, torch.Tensor):
        return x.clamp(lo, hi)
    return min(max(x, lo), hi)


def where(cond: Any, a: Any, b: Any) -> Any:
    """``a`` where ``cond`` holds, else ``b``: a bool in the global layout, a mask per sample."""
    if isinstance(cond, torch.Tensor):
        return torch.where(cond, a, b)
    return a if cond else b


class AbstractController(abc.ABC):
    """The base of every step-size controller. Subclass it (or :class:`PIDController`) to write
    your own rule; it is used by both layouts of the loop.

    - ``adaptive``: whether the loop computes the solver's error estimate and calls
      :meth:`adapt` (a non-adaptive controller keeps ``dt`` fixed, :class:`ConstantStep`).
    - ``step_ts``, ``jump_ts``: times steps must land on, and times where ``f`` jumps (the step
      ends just before the jump and ``f`` is re-evaluated after it); ``None`` or sorted 1-D
      float64 tensors.
    - ``rtol``, ``atol``, ``norm``: what the loop's scaled error norm uses; an adaptive
      controller must set ``rtol`` and ``atol``.
    - ``land_on_end``: whether the last step is shortened to end exactly on the final time
      (default). ``False`` takes it whole, past the final time, and interpolates the outputs
      back, as torchdiffeq does (global layout only, without events; ``f`` is then evaluated
      beyond the final time).
    """

    adaptive: ClassVar[bool] = True
    land_on_end: bool = True
    step_ts: Any = None
    jump_ts: Any = None
    # What the loop's error norm reads from an adaptive controller (dataclass fields override;
    # None on a controller without tolerances: implicit solvers then use their own defaults).
    rtol: Any = None
    atol: Any = None
    norm: Callable[[torch.Tensor], torch.Tensor] | None = None

    @abc.abstractmethod
    def start(self, solver: Any, func: Callable, s0: Any, y0: torch.Tensor, f0: torch.Tensor,
              error_norm: Any) -> tuple[Any, Any]:  # fmt: skip
        """``(dt, memory)``: the first step size (a float, or ``[B]`` float64 per sample) and
        the controller's per-solve memory, handed back to :meth:`adapt` after every step.
        ``error_norm.scale(y)`` and ``error_norm.norm(x)`` give the scaled norm in the layout."""

    @abc.abstractmethod
    def adapt(self, err: Any, h: Any, memory: Any, ok: Any = True) -> tuple[Any, Any]:
        """``(accept, dt)`` after a step of size ``h`` with scaled error norm ``err`` (accept when
        ``err <= 1`` for the built-in rules). ``ok`` is false where the solver's nonlinear
        solve failed: reject and retry smaller. Floats and bools in the global layout, ``[B]``
        tensors per sample."""

    def too_small(self, s: Any, dt: Any) -> Any:
        """Whether the next step ``dt`` from ``s`` is too small to continue (``Status.DT_MIN``)."""
        return s + dt == s


@checked_keywords
@dataclass(frozen=True)
class ConstantStep(AbstractController):
    """Fixed steps of size ``dt`` (the last step before ``t1``, or before a point of
    ``step_ts``/``jump_ts``, is shortened to land on it exactly).

    **Arguments:**

    - ``dt``: the step size, a positive float (its sign follows the direction of integration).
    - ``step_ts``: times the solver must step onto exactly.
    - ``jump_ts``: known discontinuities of ``f`` in time: stepped onto, and ``f`` is re-evaluated
      just after them (no first-same-as-last reuse across a jump).

    ```python
    import torch, torchnde as nde
    sol = nde.solve(lambda t, y: -y, torch.ones(2), torch.linspace(0, 1, 5),
                    solver="rk4", controller=nde.ConstantStep(0.01))
    ```
    """

    dt: float
    step_ts: Any = None
    jump_ts: Any = None

    adaptive: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if isinstance(self.dt, torch.Tensor):
            object.__setattr__(self, "dt", float(self.dt))
        if not isinstance(self.dt, (int, float)) or not math.isfinite(self.dt) or self.dt <= 0:
            raise ValueError(f"ConstantStep(dt) needs a positive finite float, got {self.dt!r}")
        object.__setattr__(self, "step_ts", _times("step_ts", self.step_ts))
        object.__setattr__(self, "jump_ts", _times("jump_ts", self.jump_ts))

    def start(self, solver: Any, func: Callable, s0: Any, y0: torch.Tensor, f0: torch.Tensor,
              error_norm: Any) -> tuple[Any, Any]:  # fmt: skip
        return (torch.full_like(s0, self.dt) if isinstance(s0, torch.Tensor) else self.dt), None

    def adapt(self, err: Any, h: Any, memory: Any, ok: Any = True) -> tuple[Any, Any]:
        return ok, self.dt


def _check_tolerance(name: str, value: Any, ok: Callable[[Any], Any], rule: str) -> None:
    """A tolerance is a finite float, a tensor, or a tuple of tensors (tuple states)."""
    parts = list(value) if isinstance(value, (tuple, list)) else [value]
    for part in parts:
        if isinstance(part, bool) or not isinstance(part, (int, float, torch.Tensor)):
            raise ValueError(f"{name} must be a float or a tensor, got {part!r}")
        if isinstance(part, torch.Tensor):  # checked where it lives: one read, at construction
            finite, valid = bool(torch.isfinite(part).all()), bool(ok(part).all())
        else:
            finite, valid = math.isfinite(part), bool(ok(part))
        if not finite:
            raise ValueError(f"{name} must be finite, got {value!r}")
        if not valid:
            raise ValueError(f"{name} must be {rule}")


class _Memory:
    """A PID controller's memory of one solve: the inverse errors of the last two accepted
    steps and whether the last step was rejected (floats, or ``[B]`` tensors per sample); with
    ``on_dtmin="accept"``, whether the last step was accepted at ``dtmin`` above tolerance
    (``forced_now``) and how many were (``forced``, global layout; the per-sample loop counts
    ``forced_now`` per sample itself)."""

    __slots__ = ("after_reject", "beta1", "beta2", "beta3", "forced", "forced_now", "inv1", "inv2")

    def __init__(self, betas: tuple[float, float, float], inv: Any, after_reject: Any):
        self.beta1, self.beta2, self.beta3 = betas
        self.inv1 = self.inv2 = inv
        self.after_reject = after_reject
        self.forced_now = after_reject  # False, or a [B] mask of False
        self.forced = 0

    def select(self, keep: torch.Tensor) -> None:
        """Follow a compacted per-sample batch."""
        self.inv1, self.inv2, self.after_reject = self.inv1[keep], self.inv2[keep], self.after_reject[keep]
        self.forced_now = self.forced_now[keep]


ON_DTMIN = ("fail", "accept")


def accept_at_dtmin(accept: Any, err: Any, h: Any, dtmin: float, memory: Any, ok: Any = True) -> Any:
    """The ``on_dtmin="accept"`` decision: a step of size at most ``dtmin`` (to a relative
    ``1e-12``) whose error is above tolerance is accepted anyway, flagged in
    ``memory.forced_now`` and counted in ``memory.forced`` (global layout). A larger step above
    tolerance is still rejected (the caller proposes no step below ``dtmin``), and a step with a
    non-finite error or a failed nonlinear solve is never forced. Layout-generic (floats and
    bools, or ``[B]`` tensors)."""
    forced = (h <= dtmin * (1 + 1e-12)) & (err > 1.0)  # NaN > 1 is false: never forced
    if ok is not True:
        forced = forced & ok
    memory.forced_now = forced
    if forced is True:
        memory.forced += 1
    return accept | forced


@checked_keywords
@dataclass(frozen=True)
class PIDController(AbstractController):
    r"""Adaptive step size from the embedded error estimate, with a PID rule on the error history.

    With inverse errors :math:`\varepsilon_n = 1 / \|e_n\|` and :math:`k` the solver's error order,
    the step is multiplied by

    .. math:: \mathrm{safety}\; \varepsilon_n^{\beta_1}\, \varepsilon_{n-1}^{\beta_2}\,
              \varepsilon_{n-2}^{\beta_3},\quad
              \beta_1 = \frac{P + I + D}{k},\ \beta_2 = -\frac{P + 2D}{k},\ \beta_3 = \frac{D}{k},

    clipped to ``[factor_min, factor_max]`` (and to at most 1 after a rejection). The default
    ``P = D = 0, I = 1`` is the classical integral controller, :math:`0.9\,\|e\|^{-1/k}`.
    Söderlind & Wang's PI(D) controllers, e.g. ``pcoeff=0.4, icoeff=0.3``, are smoother on
    problems at the edge of stability.

    **Arguments:**

    - ``rtol``, ``atol``: relative and absolute tolerances; floats or tensors broadcastable to the
      state (per-component tolerances; tuples of tensors for tuple states).
    - ``pcoeff``, ``icoeff``, ``dcoeff``: the PID coefficients.
    - ``safety``, ``factor_min``, ``factor_max``: the safety factor and the clip on the change.
    - ``dtmin``: smallest step allowed; below it the solve fails with ``Status.DT_MIN``
      (``on_dtmin="fail"``, the default). The step also fails if it no longer changes the time
      in float64.
    - ``on_dtmin``: ``"fail"`` (default), or ``"accept"``: steps of ``dtmin`` whose error is above
      tolerance are accepted anyway (torchsde's adaptive stepping does this), counted in
      ``sol.stats.forced`` and reported by one ``RuntimeWarning`` per solve. A larger step above
      tolerance is still rejected and retried at no less than ``dtmin``. Needs ``dtmin``.
    - ``dtmax``: largest step allowed.
    - ``dt0``: the first step; by default chosen by Hairer's algorithm (one extra evaluation).
    - ``norm``: reduces the scaled error over its last axis (default :func:`rms_norm`).
    - ``step_ts``, ``jump_ts``: as for :class:`ConstantStep`.

    ??? cite "References"
        G. Söderlind, L. Wang, Adaptive time-stepping and computational stability,
        *J. Comput. Appl. Math.* 185 (2006) 225–243.
        E. Hairer, S. P. Nørsett, G. Wanner, *Solving ODEs I*, Section II.4 (initial step).

    ```python
    import torch, torchnde as nde
    ctrl = nde.PIDController(rtol=1e-8, atol=1e-10, pcoeff=0.4, icoeff=0.3)
    sol = nde.solve(lambda t, y: -y, torch.ones(2), torch.linspace(0, 1, 5), controller=ctrl)
    ```
    """

    rtol: Any = 1e-6
    atol: Any = 1e-8
    pcoeff: float = 0.0
    icoeff: float = 1.0
    dcoeff: float = 0.0
    safety: float = 0.9
    factor_min: float = 0.2
    factor_max: float = 10.0
    dtmin: float | None = None
    dtmax: float | None = None
    dt0: float | None = None
    norm: Callable[[torch.Tensor], torch.Tensor] | None = None
    step_ts: Any = None
    jump_ts: Any = None
    on_dtmin: str = "fail"

    adaptive: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_tolerance("rtol", self.rtol, lambda x: x > 0, "> 0: e.g. rtol=1e-6")
        _check_tolerance("atol", self.atol, lambda x: x >= 0, ">= 0: e.g. atol=1e-8 (0 is allowed)")
        if not 0 < self.safety <= 1:
            raise ValueError(f"safety must be in (0, 1], got {self.safety}")
        if not 0 < self.factor_min < 1 < self.factor_max:
            raise ValueError(
                f"need 0 < factor_min < 1 < factor_max, got {self.factor_min}, {self.factor_max}"
            )
        for name in ("dtmin", "dtmax", "dt0"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value <= 0):
                raise ValueError(f"{name} must be a positive float or None, got {value!r}")
        if self.dtmin is not None and self.dtmax is not None and self.dtmin > self.dtmax:
            raise ValueError(f"dtmin {self.dtmin} exceeds dtmax {self.dtmax}")
        if self.on_dtmin not in ON_DTMIN:
            raise ValueError(
                f"unknown on_dtmin {self.on_dtmin!r}; valid: {', '.join(map(repr, ON_DTMIN))}."
                f"{did_you_mean(self.on_dtmin, ON_DTMIN)}"
            )
        if self.on_dtmin == "accept" and self.dtmin is None:
            raise ValueError(
                "on_dtmin='accept' takes steps of dtmin where the error is too large: pass dtmin=..."
            )
        object.__setattr__(self, "step_ts", _times("step_ts", self.step_ts))
        object.__setattr__(self, "jump_ts", _times("jump_ts", self.jump_ts))

    def exponents(self, error_order: int) -> tuple[float, float, float]:
        """``(beta1, beta2, beta3)`` for a solver whose error estimate has ``error_order``."""
        k = float(error_order)
        p, i, d = self.pcoeff, self.icoeff, self.dcoeff
        return (p + i + d) / k, -(p + 2 * d) / k, d / k

    def start(self, solver: Any, func: Callable, s0: Any, y0: torch.Tensor, f0: torch.Tensor,
              error_norm: Any) -> tuple[Any, Any]:  # fmt: skip
        batched = isinstance(s0, torch.Tensor)
        if self.dt0 is not None:
            dt = torch.full_like(s0, self.dt0) if batched else self.dt0
        else:
            with torch.no_grad():
                scale = error_norm.scale(y0)
                dt = initial_step_size(func, s0, y0, f0, solver.error_order, scale, error_norm.norm)
        dt = clip(dt, self._dtmin if self.on_dtmin == "accept" else 0.0, self._dtmax)
        one = torch.ones_like(s0) if batched else 1.0
        after_reject = torch.zeros_like(s0, dtype=torch.bool) if batched else False
        return dt, _Memory(self.exponents(solver.error_order), one, after_reject)

    def adapt(self, err: Any, h: Any, memory: Any, ok: Any = True) -> tuple[Any, Any]:
        """The PID rule (see the class docstring); no growth right after a rejection, a quarter
        of the step where the nonlinear solve failed (``ok`` false)."""
        m = memory
        accept = err <= 1.0  # NaN compares false: a non-finite step is never accepted
        if ok is not True:
            accept = accept & ok
        inv = 1.0 / clip(err, 1e-300, math.inf)
        factor = self.safety * inv**m.beta1
        if m.beta2:
            factor = factor * m.inv1**m.beta2
        if m.beta3:
            factor = factor * m.inv2**m.beta3
        factor = clip(factor, self.factor_min, self.factor_max)
        if ok is not True:
            factor = where(ok, factor, 0.25)
        forcing = self.on_dtmin == "accept"
        if forcing:
            accept = accept_at_dtmin(accept, err, h, self._dtmin, m, ok)
        grow = accept & ~m.after_reject if isinstance(accept, torch.Tensor) else accept and not m.after_reject
        if grow is not True:  # (True only in the global layout, where it is the common case)
            factor = where(grow, factor, clip(factor, 0.0, 1.0))
        if m.beta2 or m.beta3:
            m.inv2, m.inv1 = where(accept, m.inv1, m.inv2), where(accept, inv, m.inv1)
        m.after_reject = ~accept if isinstance(accept, torch.Tensor) else not accept
        dt = h * factor  # >= 0
        if forcing:  # no step below dtmin is proposed
            dt = clip(dt, self._dtmin, math.inf)
        return accept, (dt if self.dtmax is None else clip(dt, 0.0, self.dtmax))

    def too_small(self, s: Any, dt: Any) -> Any:
        return (dt < self._dtmin) | (s + dt == s)

    @functools.cached_property
    def _dtmax(self) -> float:
        return math.inf if self.dtmax is None else self.dtmax

    @functools.cached_property
    def _dtmin(self) -> float:
        return 0.0 if self.dtmin is None else self.dtmin


def initial_step_size(
    func: Callable[[Any, torch.Tensor], torch.Tensor],
    t0: Any,
    y0: torch.Tensor,
    f0: torch.Tensor,
    error_order: int,
    scale: torch.Tensor,
    norm: Callable[[torch.Tensor], Any],
) -> Any:
    r"""Hairer's initial step (Solving ODEs I, II.4), one extra evaluation of ``f``.

    With :math:`d_0 = \|y_0\|`, :math:`d_1 = \|f_0\|` (norms scaled by
    ``scale = atol + rtol |y0|``), a trial Euler step of :math:`h_0 = 0.01\,d_0/d_1` gives
    :math:`d_2 = \|f(t_0 + h_0, y_0 + h_0 f_0) - f_0\| / h_0`; the step is
    :math:`\min(100 h_0, (0.01 / \max(d_1, d_2))^{1/k})` with :math:`k` the order of the error
    estimate (5 for Dopri5, as in Hairer's HINIT and scipy).

    Works in both layouts: with ``norm`` returning a Python float it returns a float; per sample
    (``y0`` of shape ``[B, ...]``, ``t0`` a ``[B]`` tensor, ``norm`` returning float64 ``[B]``) it
    returns ``[B]``.
    """
    d0, d1 = norm(y0 / scale), norm(f0 / scale)
    small = (d0 < 1e-5) | (d1 < 1e-5)
    h0 = where(small, 1e-6, 0.01 * d0 / where(small, 1.0, d1))
    if isinstance(h0, torch.Tensor):
        y1 = torch.addcmul(y0, h0.to(y0.dtype).view(-1, *([1] * (y0.ndim - 1))), f0)
    else:
        y1 = torch.add(y0, f0, alpha=h0)
    d2 = norm((func(t0 + h0, y1) - f0) / scale) / h0
    dmax = where(d1 > d2, d1, d2)
    tiny = dmax <= 1e-15
    h_tiny = (h0 * 1e-3).clamp(min=1e-6) if isinstance(h0, torch.Tensor) else max(h0 * 1e-3, 1e-6)
    h1 = where(tiny, h_tiny, (0.01 / where(tiny, 1.0, dmax)) ** (1.0 / error_order))
    return where(100 * h0 < h1, 100 * h0, h1)
