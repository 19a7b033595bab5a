"""Event location for both layouts: the condition's sign watched at every accepted step's end,
a crossing located on the step's continuous extension by one Illinois iteration
(:func:`illinois`), and the event time and state made differentiable by one implementation of
the implicit function theorem (:meth:`_Watch.differentiable`); see :mod:`torchnde.events`.

The global layout is the batch-of-one case of the per-sample one: its watch keeps host floats
for the condition's last value (one host read per accepted step) and calls the same tensor
routines with ``[1]``-shaped times.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import torch

from ..events import Event
from ..solvers import AbstractSolver
from .problem import Problem
from .saving import interpolate

__all__ = ["EventWatch", "SampleEventWatch", "illinois"]

ROUNDS = 60


def illinois(
    phi: Callable[[torch.Tensor], torch.Tensor], g0: torch.Tensor, g1: torch.Tensor, tol: torch.Tensor,
    active: torch.Tensor, rounds: int = ROUNDS, early_exit: bool = False,
) -> torch.Tensor:  # fmt: skip
    """Roots ``theta`` in ``(0, 1]`` of ``phi`` (``phi(0) = g0``, ``phi(1) = g1`` of opposite
    signs, or ``g1 == 0``), elementwise over ``[B]`` where ``active``, by the Illinois variant of
    regula falsi (Dowell & Jarratt, BIT 11, 1971) to an interval of width ``tol``. Returns the
    end of the final bracket where the crossing has happened. ``early_exit`` reads the host
    once per round to stop when every bracket is closed (the global layout, which synchronises
    anyway); otherwise all ``rounds`` run without a host read."""
    lo, hi = torch.zeros_like(g0), torch.ones_like(g0)
    f_lo, f_hi = g0.clone(), g1.clone()
    side = torch.zeros_like(g0)
    with torch.no_grad():
        for _ in range(rounds):
            live = active & (hi - lo > tol) & (f_hi != 0) & (f_lo != 0)
            if early_exit and not bool(live.any()):
                break
            x = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
            x = torch.where((x > lo + tol) & (x < hi - tol), x, 0.5 * (lo + hi))  # degenerate secant
            fx = phi(x)
            upper = (fx > 0) == (f_hi > 0)
            new_hi, new_lo = live & upper, live & ~upper
            f_lo = torch.where(new_hi & (side == 1), 0.5 * f_lo, f_lo)
            f_hi = torch.where(new_lo & (side == -1), 0.5 * f_hi, f_hi)
            hi, f_hi = torch.where(new_hi, x, hi), torch.where(new_hi, fx, f_hi)
            lo, f_lo = torch.where(new_lo, x, lo), torch.where(new_lo, fx, f_lo)
            side = torch.where(new_hi, 1.0, torch.where(new_lo, -1.0, side))
    return torch.where(f_lo == 0, lo, hi)


class _Watch:
    """What both layouts share: the condition in the user's layout, its rate along the solution,
    the implicit-function-theorem event time and state, and the restart after a jump."""

    def __init__(self, problem: Problem, func: Callable, event: Event):
        self.problem, self.func, self.event = problem, func, event
        self.lead_of: Callable[[torch.Tensor], tuple[int, ...]] = (
            (lambda y: (y.shape[0],)) if problem.per_sample else (lambda y: ())
        )

    def g(self, s: Any, y: torch.Tensor) -> torch.Tensor:
        """The condition as ``[rows]`` (``rows = 1`` in the global layout)."""
        out = self.event.cond_fn(self.problem.user_time(s), self.problem.unflatten(y, self.lead_of(y)))
        rows = y.shape[0] if self.problem.per_sample else 1
        if not isinstance(out, torch.Tensor) or out.numel() != rows:
            got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
            if self.problem.per_sample:
                raise ValueError(
                    f"with per_sample=True, Event cond_fn must return one value per sample, shape [{rows}], got {got}"
                )
            raise ValueError(
                f"Event cond_fn returned {got}, but a global solve watches one scalar condition. For one "
                "event per sample of a batch, solve with per_sample=True (cond_fn then returns shape "
                "[B]); for one event of the whole solve, reduce it to a scalar (e.g. .min() or .sum())"
            )
        return out.reshape(rows)

    def rate(self, s_e: Any, y: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(dg/dt along the solution [rows], f = dy/dt)`` at ``(s_e, y)``; ``(None, None)`` when
        ``g`` depends on neither ``t`` nor ``y``."""
        problem, direction = self.problem, self.problem.direction
        rows = y.shape[0] if problem.per_sample else 1
        with torch.enable_grad():
            t_ = problem.user_time(s_e).detach().requires_grad_(True)
            y_ = y.detach().requires_grad_(True)
            g = self.event.cond_fn(t_, problem.unflatten(y_, self.lead_of(y))).reshape(-1)
            if not g.requires_grad:
                return None, None
            dg_dt, dg_dy = torch.autograd.grad(g.sum(), (t_, y_), allow_unused=True)
        with torch.no_grad():
            f_e = self.func(s_e, y.detach()) * direction
            rate = torch.zeros(rows, dtype=y.dtype, device=y.device)
            if dg_dy is not None:
                rate = rate + (dg_dy * f_e).reshape(rows, -1).sum(-1)
            if dg_dt is not None:
                rate = rate + dg_dt.reshape(rows, -1).sum(-1)
        return rate.to(torch.float64), f_e

    def differentiable(self, s_e: Any, y: torch.Tensor, mask: Any, strict: bool) -> tuple[Any, torch.Tensor]:
        """Event time and state carrying the implicit function theorem's derivatives:
        ``t_e = t - g / (dg/dt)`` with ``t`` and ``dg/dt`` held constant, ``y_e = y + f (t_e - t)``.
        ``strict``: a condition tangent to the solution is an error (else: no derivative)."""
        problem = self.problem
        t_const = s_e * problem.direction
        rate, f_e = self.rate(s_e, y)
        if strict and (rate is None or not bool((rate[mask] != 0).all())):
            raise ValueError("the event condition is tangent to the solution (dg/dt = 0 at the event)")
        if rate is None:
            return t_const, y
        rate = torch.where(mask & (rate != 0), rate, 1.0)
        g_val = self.g(s_e, y).to(torch.float64)
        t_e = t_const - torch.where(mask, g_val / rate, 0.0)
        if not problem.per_sample:
            t_e = t_e.reshape(())
        shift = (t_e - t_const).to(problem.dtype)
        return t_e, y + f_e * shift.view(-1, *([1] * (y.ndim - 1))) if problem.per_sample else y + f_e * shift

    def jumped(self, s_e: Any, t_e: Any, y: torch.Tensor) -> torch.Tensor:
        """The state after the event's ``jump``; later states depend on the restart time by
        ``dy/dt_e = -Phi f``, carried when ``t_e`` is differentiable."""
        problem, direction = self.problem, self.problem.direction
        lead = self.lead_of(y)
        t_user = problem.user_time(s_e) if problem.per_sample else t_e.to(problem.dtype)
        out = self.event.jump(t_user, problem.unflatten(y, lead))
        new = problem.flatten_out(out, lead) * direction  # flatten only (undo its time sign)
        if isinstance(t_e, torch.Tensor) and t_e.requires_grad:
            shift = (t_e - t_e.detach()).to(problem.dtype)
            if problem.per_sample:
                shift = shift.view(-1, *([1] * (y.ndim - 1)))
            with torch.no_grad():
                f_new = self.func(s_e, new) * direction
            new = new - shift * f_new
        return new

    def leaving(self, s_e: Any, y: torch.Tensor) -> torch.Tensor:
        """Where ``g`` heads from the zero it sits on, as a tiny signed value: a step that comes
        back through zero is then seen crossing (in time direction, as the solve runs)."""
        rate = self.rate(s_e, y)[0]
        rows = y.shape[0] if self.problem.per_sample else 1
        if rate is None:
            return torch.zeros(rows, dtype=torch.float64, device=y.device)
        return torch.sign(rate * self.problem.direction) * sys.float_info.min


class EventWatch(_Watch):
    """The event of a global solve: its condition's last value (a host float), the crossing
    location and the (differentiable) event times and states so far."""

    def __init__(self, problem: Problem, func: Callable, event: Event, s0: float, y0: torch.Tensor):
        super().__init__(problem, func, event)
        self.times: list[torch.Tensor] = []
        self.states: list[torch.Tensor] = []
        self.g_prev = self.value(s0, y0)

    def value(self, s: float, y: torch.Tensor) -> float:
        with torch.no_grad():
            return float(self.g(s, y)[0])

    def locate(self, solver: AbstractSolver, s: float, h: float, y: torch.Tensor, stages: torch.Tensor,
               g_new: float, y1: torch.Tensor) -> tuple[float, torch.Tensor]:  # fmt: skip
        """The crossing inside the step ``[s, s + h]`` on its continuous extension."""
        y_flat, st = y.reshape(1, -1), stages.reshape(1, -1, stages.shape[-1])
        hs = torch.tensor([[h]], dtype=torch.float64, device=y.device)

        def at(theta: torch.Tensor) -> torch.Tensor:
            return interpolate(solver, y_flat, st, hs, theta.unsqueeze(-1))[0, 0].view(y.shape)

        def phi(theta: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return self.g(s + float(theta) * h, at(theta)).to(torch.float64)

        tol = 4 * sys.float_info.epsilon * max(1.0, abs(s) + abs(h)) / abs(h)
        g0, g1, tol_ = (
            torch.tensor([v], dtype=torch.float64, device=y.device) for v in (self.g_prev, g_new, tol)
        )
        active = torch.ones(1, dtype=torch.bool, device=y.device)
        theta = float(illinois(phi, g0, g1, tol_, active, early_exit=True))
        if theta >= 1.0:
            return s + h, y1
        return s + theta * h, at(torch.tensor([theta], dtype=torch.float64, device=y.device))

    def fire(self, s_e: float, y_e: torch.Tensor) -> torch.Tensor:
        """Record the event at ``s_e``; return the state to continue from (after ``jump``)."""
        problem = self.problem
        t_e: Any = torch.tensor(s_e * problem.direction, dtype=torch.float64, device=problem.device)
        if torch.is_grad_enabled() and (y_e.requires_grad or self._depends_on_parameters(s_e, y_e)):
            mask = torch.ones(1, dtype=torch.bool, device=y_e.device)
            t_e, y_e = self.differentiable(s_e, y_e, mask, strict=True)
        self.times.append(t_e)
        self.states.append(y_e)
        if self.done:
            return y_e
        y_new = y_e if self.event.jump is None else self.jumped(s_e, t_e, y_e)
        self.g_prev = float(self.leaving(s_e, y_new)[0])
        return y_new

    @property
    def done(self) -> bool:
        """Whether the solve ends here: a terminal event fired, or ``max_events`` did."""
        limit = self.event.max_events
        return bool(self.times) and (self.event.terminal or (limit is not None and len(self.times) >= limit))

    def _depends_on_parameters(self, s_e: float, y_e: torch.Tensor) -> bool:
        with torch.enable_grad():
            return bool(self.g(s_e, y_e).requires_grad)


class SampleEventWatch(_Watch):
    """Per-sample events: every sample's condition, crossings located on its own step's
    continuous extension (a fixed number of Illinois rounds, no host reads), and per-sample
    (differentiable) event times and states."""

    def __init__(self, problem: Problem, func: Callable, event: Event, s0: torch.Tensor, y0: torch.Tensor):
        super().__init__(problem, func, event)
        self.g_prev = self.values(s0, y0)
        self.count = torch.zeros(y0.shape[0], dtype=torch.int64, device=y0.device)
        self.times: list[torch.Tensor] = []  # [B] per firing round, NaN where a sample did not fire
        self.states: list[torch.Tensor] = []

    def values(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.g(s, y).to(torch.float64)

    def locate(self, solver: AbstractSolver, s: torch.Tensor, h: torch.Tensor, y: torch.Tensor,
               stages: torch.Tensor, g_new: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        batch, n_state = y.shape[0], self.problem.numel
        y_flat = y.reshape(batch, n_state)
        st = stages.reshape(batch, n_state, stages.shape[-1])
        h_safe = torch.where(h > 0, h, 1.0).unsqueeze(-1)

        def at(theta: torch.Tensor) -> torch.Tensor:
            return interpolate(solver, y_flat, st, h_safe, theta.unsqueeze(-1))[:, 0].reshape(y.shape)

        def phi(theta: torch.Tensor) -> torch.Tensor:
            return self.g(s + theta * h, at(theta)).to(torch.float64)

        tol = 4 * sys.float_info.epsilon * (s.abs() + h.abs()).clamp(min=1.0) / h.abs().clamp(min=1e-300)
        theta = illinois(phi, self.g_prev, g_new, tol, mask)
        return s + theta * h, at(theta)

    def fire(self, s_e: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Record the events of the samples in ``mask`` at ``s_e``; return the states to continue
        from (jumped where an event fired)."""
        col = mask.view(-1, *([1] * (y.ndim - 1)))
        t_e: Any = s_e * self.problem.direction
        if torch.is_grad_enabled() and y.requires_grad:
            t_e, y = self.differentiable(s_e, y, mask, strict=False)
        self.times.append(torch.where(mask, t_e, math.nan))
        self.states.append(torch.where(col, y, math.nan))
        self.count = self.count + mask
        if self.event.terminal:
            return y
        if self.event.jump is not None:
            y = torch.where(col, self.jumped(s_e, t_e, y), y)
        self.g_prev = torch.where(mask, self.leaving(s_e, y), self.g_prev)
        return y

    def select(self, keep: torch.Tensor) -> None:
        """Follow a compacted batch (per-sample solves with events do not compact today)."""
        self.g_prev, self.count = self.g_prev[keep], self.count[keep]

    def padded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Event times ``[B, K]`` and states ``[B, K, N]``, each sample's events first, NaN padded."""
        problem = self.problem
        batch = self.count.shape[0]
        if not self.times:
            return (
                torch.empty(batch, 0, dtype=torch.float64),
                problem.y0.new_empty((batch, 0, problem.numel)),
            )
        times = torch.stack(self.times, 1)  # [B, rounds]
        states = torch.stack([x.reshape(batch, -1) for x in self.states], 1)  # [B, rounds, N]
        order = torch.argsort(torch.isnan(times).to(torch.int8), dim=1, stable=True)
        k = int(self.count.max())
        order = order[:, :k]
        return times.gather(1, order), states.gather(1, order.unsqueeze(-1).expand(-1, -1, states.shape[-1]))
