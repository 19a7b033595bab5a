"""The per-sample layout (``per_sample=True``): the leading axis indexes independent problems,
each with its own step size, accept/reject decision, status, statistics and (optionally) time
span. The state is ``[B, N]``, times are float64 ``[B]`` tensors, and every decision is a masked
tensor operation. The loop synchronises once per step, to read ``(max outputs passed, any
sample running)``; finished samples leave the working batch (:mod:`.compaction`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .._solution import Stats, Status
from ..controllers import AbstractController
from ..solvers import AbstractSolver
from .compaction import Compaction, Samples, verified_rows
from .diagnostics import stiffness_ratio
from .error_norm import ErrorNorm
from .problem import Problem
from .raw import LoopOptions, Raw
from .saving import interpolate, per_sample_dense
from .stepping import STRETCH, Progress, jump_sides, prepared
from .watch import SampleEventWatch

__all__ = ["loop_per_sample"]


class _Stops:
    """Where each sample's next step must end: ``t1``, or the next ``step_ts``/``jump_ts`` point;
    a step ends just short of a jump, so that no stage sees its far side."""

    def __init__(self, ctrl: AbstractController, direction: float, device: torch.device, dtype: torch.dtype):
        times = [ctrl.step_ts, ctrl.jump_ts]
        times = [None if x is None else torch.sort(x.to(device) * direction).values for x in times]
        present = [x for x in times if x is not None]
        self.stop_t = torch.cat(present).sort().values if present else None
        self.jump_t = times[1]
        if self.jump_t is not None:  # each jump's neighbours in the state's dtype
            self.jump_end, self.jump_after = jump_sides(self.jump_t, dtype)

    def next(self, s: torch.Tensor, s1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(the stop, the step's end)`` per sample."""
        if self.stop_t is None:
            return s1, s1
        idx = torch.searchsorted(self.stop_t, s, right=True)
        nxt = self.stop_t[idx.clamp(max=self.stop_t.numel() - 1)]
        s_stop = torch.where((idx < self.stop_t.numel()) & (nxt < s1), nxt, s1)
        if self.jump_t is None:
            return s_stop, s_stop
        end = self.jump_end[self._jump_index(s_stop)]
        end = torch.where(end > s, end, torch.nextafter(s_stop, s_stop - 1))  # started past it
        return s_stop, torch.where(torch.isin(s_stop, self.jump_t), end, s_stop)

    def after_jump(self, s: torch.Tensor) -> torch.Tensor:
        """``s``, moved just past a jump it sits on (where ``f`` is evaluated after it)."""
        if self.jump_t is None:
            return s
        return torch.where(torch.isin(s, self.jump_t), self.jump_after[self._jump_index(s)], s)

    def _jump_index(self, s: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(self.jump_t, s).clamp(max=self.jump_t.numel() - 1)


def loop_per_sample(
    problem: Problem, solver: AbstractSolver, ctrl: AbstractController, opts: LoopOptions
) -> Raw:
    run = _Run(problem, solver, ctrl, opts)
    w, any_running, it = run.w, bool(run.w.running.any()), 0
    while any_running:
        it += 1
        any_running = run.step()
        if opts.progress:
            run.bar.update(float(((w.s - w.s_eval[:, 0]) / w.span).min()), it)
    if opts.progress:
        run.bar.update(1.0, it, force=True)
    return run.finish()


class _Run:
    """One per-sample solve: its set-up, one step of every running sample, and the result."""

    def __init__(self, problem: Problem, solver: AbstractSolver, ctrl: AbstractController, opts: LoopOptions):
        self.problem, self.solver, self.ctrl, self.opts = problem, solver, ctrl, opts
        self.func = func = problem.func()
        self.step_fn, self.dense_stages, self.derivative = prepared(problem, solver, opts, func)
        dev = problem.device
        s_eval = problem.s_eval  # [B, n]
        batch, n = s_eval.shape
        self.n, self.N = n, problem.numel
        s, y = s_eval[:, 0].clone(), problem.y0
        # the event's condition first: a condition of the wrong shape fails before f is called
        self.watch = SampleEventWatch(problem, func, opts.event, s, y) if opts.event is not None else None
        f0 = problem.checked_f0()
        self.stops = _Stops(ctrl, problem.direction, dev, problem.dtype)
        self.fsal = solver.fsal and self.stops.jump_t is None
        self.error_norm = ErrorNorm(problem, solver, ctrl) if ctrl.adaptive else None
        dt, self.memory = ctrl.start(solver, func, s, y, f0, self.error_norm)
        self.solver_state = solver.init_state(ctrl)
        ys = y.new_full((batch, n + 1, self.N), math.nan)  # slot n is a dump slot for masked scatters
        ys[:, 0] = y.reshape(batch, self.N)
        z = torch.zeros(batch, dtype=torch.int64, device=dev)
        fail_t = torch.full((batch,), math.nan, dtype=torch.float64, device=dev)
        s1 = s_eval[:, -1]
        self.w = Samples(s=s, y=y, f0=f0, dt=dt, s1=s1, s_eval=s_eval, span=(s1 - s).clamp(min=1e-300),
                         ys=ys, ptr=z + 1, status=z.clone(), running=s < s1, nfe=z + problem.nfe_counter[0],
                         steps=z.clone(), acc=z.clone(), forced=z.clone(), fail_t=fail_t,
                         fail_dt=fail_t.clone())  # fmt: skip
        self.ones_tail = [1] * (y.ndim - 1)
        self.step_s: list[torch.Tensor] = []
        self.step_y: list[torch.Tensor] = []
        self.dense_pieces: list[tuple[torch.Tensor, ...]] = []
        self.arange_cache: dict[int, torch.Tensor] = {}
        self.bar = Progress(0.0, 1.0, opts.progress)
        # an SDE's samples keep their rows of the Brownian motion (a checkpointed step replays its
        # increments by row in the backward pass): no compaction
        enabled = not opts.dense and not opts.save_steps and opts.event is None and problem.sde is None
        self.compaction = Compaction(enabled, batch, dev)
        for helper in (self.error_norm, self.memory):
            self.compaction.register(helper)

    def col(self, v: torch.Tensor) -> torch.Tensor:  # a [B] mask or value against the state
        return v.view(-1, *self.ones_tail)

    def decide(self, h: torch.Tensor, res: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(accept, non-finite)`` per sample; the controller sets the next step sizes."""
        w, ctrl = self.w, self.ctrl
        if ctrl.adaptive:
            err = self.error_norm(w.y, res.y1, res.errors, h)
            ok = res.converged  # an implicit solve failed for some samples: retry smaller
            accept, w.dt = ctrl.adapt(err, h, self.memory, ok)
            forced = getattr(self.memory, "forced_now", False)
            if forced is not False:  # PIDController(on_dtmin="accept"): count per sample
                w.forced = w.forced + (forced & w.running)
            nonfinite = w.running & ~torch.isfinite(err)
            if ok is not True:
                nonfinite = nonfinite & ok
            return accept & w.running, nonfinite
        finite = torch.isfinite(res.y1.reshape(-1, self.N)).all(-1)
        if res.converged is not True:
            finite = finite & res.converged  # constant steps: a failed Newton solve ends the sample
        return w.running & finite, w.running & ~finite

    def step(self) -> bool:
        """One step of every running sample; whether any sample is still running."""
        w, problem = self.w, self.problem
        counted = problem.nfe_counter[0]
        s_stop, end = self.stops.next(w.s, w.s1)
        land = w.s + w.dt * STRETCH >= s_stop
        h = torch.where(land, end - w.s, w.dt).mul_(w.running)  # finished samples stand still
        if not self.fsal:
            w.f0 = self.derivative(self.stops.after_jump(w.s), w.y)
        res = self.step_fn(self.func, w.s, w.y, w.f0, h, self.ctrl.adaptive, self.solver_state)
        self.solver_state = res.state
        w.steps.add_(w.running)
        accept, nonfinite = self.decide(h, res)
        w.acc.add_(accept)
        s_new = torch.where(accept, torch.where(land, s_stop, w.s + h), w.s)
        y_end, crossed, n_crossed = res.y1, None, 0
        if self.watch is not None:
            s_new, y_end, crossed, n_crossed = self._events(h, res, accept, s_new)
        still, n_still, m_out, m_interior, new_ptr, counts = self._progress(h, s_new, nonfinite, crossed)
        w.nfe.add_(w.running, alpha=problem.nfe_counter[0] - counted)  # batched calls while running
        stages = self._stages(h, res, accept, s_new, m_interior)
        if m_out > 0:
            self._save(h, s_new, y_end, stages, counts, m_out)
            w.ptr = torch.where(accept, new_ptr, w.ptr)
        if self.opts.save_steps:
            self.step_s.append(torch.where(accept, s_new, math.nan))
            self.step_y.append(torch.where(self.col(accept), res.y1, math.nan))
        w.y = torch.where(self.col(accept), y_end, w.y)
        if self.fsal:
            w.f0 = torch.where(self.col(accept), res.f1, w.f0)
        if n_crossed:
            still, n_still = self._fire(s_new, crossed, still, n_still)
        w.s, w.running = s_new, still
        self.compaction.maybe(w, n_still, self._verify)
        return n_still > 0

    def _verify(self, keep: torch.Tensor) -> torch.Tensor | None:
        w = self.w
        return verified_rows(self.func, w.s[keep], w.y[keep], w.f0[keep] if self.fsal else None, self.problem)

    def _progress(self, h: torch.Tensor, s_new: torch.Tensor, nonfinite: torch.Tensor, crossed: Any) -> tuple:
        """Outputs passed, which samples go on and which fail; the one host read of a step."""
        w, ctrl = self.w, self.ctrl
        new_ptr = torch.searchsorted(w.s_eval, s_new.unsqueeze(-1), right=True).squeeze(-1)
        counts = new_ptr - w.ptr
        interior = torch.searchsorted(w.s_eval, s_new.unsqueeze(-1)).squeeze(-1) - w.ptr  # strictly inside
        unfinished = w.running & (s_new < w.s1)
        limit = w.steps >= self.opts.max_steps
        if ctrl.adaptive:
            limit = limit | ctrl.too_small(s_new, w.dt)
        flagged = nonfinite | (unfinished & limit)
        still = unfinished & ~flagged
        if crossed is not None and self.watch is not None and self.watch.event.terminal:
            still = still & ~crossed  # each sample stops at its own event
        sync = torch.stack([counts.max(), interior.max(), still.sum(), flagged.any()])
        m_out, m_interior, n_still, any_flagged = sync.tolist()  # the one sync of a step
        self.interior = interior
        if any_flagged:  # rare: record why those samples stopped
            small = (
                (flagged & ~nonfinite & (w.steps < self.opts.max_steps)) if ctrl.adaptive else flagged & False
            )
            w.status = torch.where(nonfinite, Status.NONFINITE, w.status)
            w.status = torch.where(small & ~nonfinite, Status.DT_MIN, w.status)
            w.status = torch.where(flagged & ~nonfinite & ~small, Status.MAX_STEPS, w.status)
            w.fail_t = torch.where(flagged, s_new, w.fail_t)
            w.fail_dt = torch.where(flagged, h, w.fail_dt)
        return still, n_still, m_out, m_interior, new_ptr, counts

    def _end_derivative(self, s_new: torch.Tensor, res: Any, accept: torch.Tensor) -> torch.Tensor:
        f1 = res.f1
        if self.solver.needs_end_derivative and (f1 is None or not self.solver.f1_exact):
            f1 = self.derivative(s_new, torch.where(self.col(accept), res.y1, self.w.y))
        return f1

    def _stages(self, h: torch.Tensor, res: Any, accept: torch.Tensor, s_new: torch.Tensor,
                m_interior: int) -> torch.Tensor | None:  # fmt: skip
        """The continuous extension's stages, when an output lies inside a step or dense=True."""
        w, dense = self.w, self.opts.dense
        if not (m_interior > 0 or dense):
            return None
        counted = self.problem.nfe_counter[0]
        stages = self.dense_stages(self.func, w.s, w.y, h, res, self._end_derivative(s_new, res, accept))
        # charged to the samples that needed the continuous extension, as if solved alone
        w.nfe.add_(w.running if dense else self.interior > 0, alpha=self.problem.nfe_counter[0] - counted)
        if dense:
            batch = w.y.shape[0]
            self.dense_pieces.append(
                (w.s, h, w.y.reshape(batch, self.N), stages.reshape(batch, self.N, -1), accept)
            )
        return stages

    def _save(self, h: torch.Tensor, s_new: torch.Tensor, y_end: torch.Tensor, stages: torch.Tensor | None,
              counts: torch.Tensor, m_out: int) -> None:  # fmt: skip
        """Scatter the outputs each sample passed in this step into its rows of ``ys``."""
        w, N, n = self.w, self.N, self.n
        ar = self.arange_cache.get(m_out)
        if ar is None:
            ar = self.arange_cache[m_out] = torch.arange(m_out, device=self.problem.device)
        valid = ar < counts.unsqueeze(-1)  # [B, m]
        idx = torch.where(valid, w.ptr.unsqueeze(-1) + ar, n)
        s_out = w.s_eval.gather(1, idx.clamp(max=n - 1))
        y1_flat = y_end.reshape(-1, 1, N)
        if stages is None:  # every output lies on a step's end
            vals = y1_flat.expand(-1, m_out, N)
        else:
            h_safe = torch.where(h > 0, h, 1.0).unsqueeze(-1)
            theta = ((s_out - w.s.unsqueeze(-1)) / h_safe).clamp_(0.0, 1.0)
            vals = interpolate(
                self.solver, w.y.reshape(-1, N), stages.reshape(-1, N, stages.shape[-1]), h_safe, theta
            )
            vals = torch.where((s_out == s_new.unsqueeze(-1)).unsqueeze(-1), y1_flat, vals)
        w.ys.scatter_(1, idx.unsqueeze(-1).expand(-1, m_out, N), vals)

    def _events(self, h: torch.Tensor, res: Any, accept: torch.Tensor, s_new: torch.Tensor) -> tuple:
        """The event's condition at the step's end; crossings located inside the step."""
        w, watch = self.w, self.watch
        assert watch is not None
        g_new = watch.values(s_new, res.y1)
        crossed = accept & watch.event.crossed(watch.g_prev, g_new)
        n_crossed = int(crossed.sum())  # a second host read per step while events are watched
        y_end = res.y1
        if n_crossed:
            stages = self.dense_stages(self.func, w.s, w.y, h, res, self._end_derivative(s_new, res, accept))
            s_e, y_e = watch.locate(self.solver, w.s, h, w.y, stages, g_new, crossed)
            s_new = torch.where(crossed, s_e, s_new)
            y_end = torch.where(self.col(crossed), y_e, res.y1)
        watch.g_prev = torch.where(accept, g_new, watch.g_prev)
        return s_new, y_end, crossed, n_crossed

    def _fire(self, s_new: torch.Tensor, crossed: torch.Tensor, still: torch.Tensor, n_still: int) -> tuple:
        """Record the events; after a jump, restart those samples."""
        w, watch = self.w, self.watch
        assert watch is not None
        w.y = watch.fire(s_new, w.y, crossed)
        if self.fsal and not watch.event.terminal:
            w.f0 = torch.where(self.col(crossed), self.derivative(s_new, w.y), w.f0)
        limit = watch.event.max_events
        if watch.event.terminal:  # those samples end at their event (``_progress`` stopped them)
            w.status = torch.where(crossed, Status.EVENT, w.status)
        elif limit is not None:  # those that reached max_events end there
            stop = crossed & (watch.count >= limit)
            w.status = torch.where(stop, Status.EVENT, w.status)
            still = still & ~stop
            n_still = int(still.sum())
        return still, n_still

    def finish(self) -> Raw:
        problem, w = self.problem, self.w
        r = self.compaction.results(w)  # every sample's results, in the original order
        stats = Stats(r["nfe"], r["steps"], r["acc"], r["steps"] - r["acc"], r["forced"])
        raw = Raw(r["ys"][:, : self.n], stats, r["status"], r["fail_t"] * problem.direction, r["fail_dt"])
        mean_dt = (r["s"] - problem.s_eval[:, 0]) / r["acc"].clamp(min=1)
        func, s_end, y_end = self.func, r["s"], r["y"]
        raw.stiff_check = lambda: stiffness_ratio(func, s_end, y_end, True) * mean_dt > 1.0
        if self.opts.save_steps:
            raw.step_s = torch.stack(self.step_s, 0) if self.step_s else w.s.new_empty((0, problem.batch))
            raw.step_y = torch.stack(self.step_y, 0) if self.step_y else w.y.new_empty((0, *w.y.shape))
        if self.opts.dense:
            raw.dense = per_sample_dense(self.solver, self.dense_pieces, w.s_eval)
        if self.watch is not None:
            raw.events = self.watch.padded()
        return raw
