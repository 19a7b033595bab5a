"""The problem as the loop sees it: the user's inputs checked, times made forward, a tuple state
flattened, and the vector field wrapped once into the loop's layout (:meth:`Problem.func`).

Integration backwards in time is integration forwards in ``s = -t`` of ``-f(-s, y)``: the
problem stores ``direction`` and every time the loop reads is ``s``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .._solution import Solution, Stats, Status
from ..solvers.jacobian import COPIES_ANY_SHAPE, COPIES_MAX, StateCopies
from .inputs import COMPLEX, NOT_MONOTONIC, all_finite, empty_state, first_few, not_monotonic
from .raw import Raw

__all__ = ["NOT_MONOTONIC", "Problem", "check_times", "not_monotonic", "tuple_like"]


class _NoCount:
    """A counter that keeps nothing (``Problem.func(count=False)``): a traced call adds no guard
    on a changing integer, as a list's item would."""

    def __getitem__(self, i: int) -> int:
        return 0

    def __setitem__(self, i: int, value: int) -> None:
        pass


_NO_COUNT = _NoCount()


def tuple_like(y: Any) -> bool:
    return isinstance(y, (tuple, list))


@dataclass
class Problem:
    f: Callable
    is_tuple: bool
    shapes: list[torch.Size]  # per-component shapes (per sample: without the batch axis)
    sizes: list[int]
    dtype: torch.dtype
    device: torch.device
    per_sample: bool
    batch: int
    direction: float  # +1 forwards, -1 backwards
    t_eval: torch.Tensor  # as given by the user
    s_eval_: torch.Tensor | None  # float64 forward times, [n] or [B, n]; see ``s_eval``
    s_host: list[float] | None  # the same on the host, for 1-D t_eval
    y0: torch.Tensor  # the loop's state: y0 itself, or a tuple flattened to [N] or [B, N]
    n_out: int
    nfe_counter: list[int]
    jacobian: Callable | None = None  # the user's df/dy(t, y) (an implicit solver's option)
    sde: Any = None  # an SDE term's diffusion and noise, bound by _loop.sde.bind_sde
    control: Any = None  # a CDE term's field and increments for a reversible solver (_loop.reversible)

    @staticmethod
    def build(f: Callable, y0: Any, t_eval: Any, per_sample: bool) -> Problem:
        if not callable(f):
            raise TypeError(f"f must be callable as f(t, y), got {type(f).__name__}")
        is_tuple = tuple_like(y0)
        parts = list(y0) if is_tuple else [y0]
        if not parts or not all(isinstance(p, torch.Tensor) for p in parts):
            raise TypeError("y0 must be a tensor or a non-empty tuple of tensors")
        dtype, device = parts[0].dtype, parts[0].device
        for p in parts:
            if p.is_complex():
                raise TypeError(COMPLEX.format(dtype=p.dtype))
            if not p.is_floating_point():
                raise TypeError(
                    f"y0 has dtype {p.dtype}: states must be floating point, e.g. y0.to(torch.float32)"
                )
            if p.dtype != dtype:
                raise TypeError(
                    f"all parts of a tuple state must share one dtype, got {dtype} and {p.dtype}: "
                    "cast them, e.g. tuple(y.to(torch.float64) for y in y0)"
                )
            if p.device != device:
                raise ValueError(
                    f"all parts of a tuple state must be on one device, got {device} and {p.device}"
                )
        if per_sample:
            if any(p.ndim == 0 for p in parts):
                raise ValueError("per_sample=True needs a leading batch axis on y0, got a 0-d tensor")
            batch = parts[0].shape[0]
            if any(p.shape[0] != batch for p in parts):
                raise ValueError("per_sample=True needs every part of y0 to share the leading batch size")
            shapes = [p.shape[1:] for p in parts]
        else:
            batch = 1
            shapes = [p.shape for p in parts]
        sizes = [math.prod(s) for s in shapes]
        if batch == 0 or 0 in sizes:
            raise ValueError(empty_state(parts, is_tuple, per_sample))
        t, s_eval, direction, s_host = check_times(t_eval, per_sample, batch, device)
        # The loop's state: a single tensor keeps its own shape (so f is called on it directly);
        # a tuple is concatenated into one flat vector per sample.
        if not is_tuple:
            state = y0
        elif per_sample:
            state = torch.cat([p.reshape(batch, -1) for p in parts], 1)
        else:
            state = torch.cat([p.reshape(-1) for p in parts])
        return Problem(f, is_tuple, shapes, sizes, dtype, device, per_sample, batch, direction,
                        t, s_eval, s_host, state, t.shape[-1], [0])  # fmt: skip

    def check_finite(self) -> None:
        """Reject a NaN or infinite initial state, saying where (one host read)."""
        if all_finite(self.y0):
            return
        bad = (~torch.isfinite(self.y0)).nonzero()
        if self.per_sample:
            where = f"sample(s) {first_few(bad[:, 0].unique().tolist())}"
            fix = "fix how y0 is made, or drop those samples: y0 = y0[torch.isfinite(y0).flatten(1).all(1)]"
        else:
            flat = " of the parts concatenated" if self.is_tuple else ""
            where = f"index {first_few([tuple(i) for i in bad.tolist()])}{flat}"
            fix = "fix how y0 is made (torch.isfinite(y0) shows where)"
        raise ValueError(f"y0 is NaN or infinite at {where}: the solve needs a finite initial state; {fix}")

    @property
    def s_eval(self) -> torch.Tensor:
        """The forward times as float64 on the state's device, ``[n]`` or ``[B, n]``; for 1-D
        ``t_eval`` in the global layout built on first use (the loop itself reads ``s_host``)."""
        if self.s_eval_ is None:
            self.s_eval_ = torch.tensor(self.s_host, dtype=torch.float64, device=self.device)
        return self.s_eval_

    # -- the vector field in the loop's layout -----------------------------------------------

    def unflatten(self, y: torch.Tensor, lead: tuple[int, ...]) -> Any:
        if not self.is_tuple:
            return y.view((*lead, *self.shapes[0]))
        pieces = torch.split(y, self.sizes, dim=-1)
        return tuple(p.reshape((*lead, *s)) for p, s in zip(pieces, self.shapes))

    def user_time(self, s: Any) -> torch.Tensor:
        if self.per_sample:
            t = (s if self.direction > 0 else -s).to(self.dtype)
            return t.view(-1, *([1] * len(self.shapes[0])))  # -1: compaction may shrink the batch
        if isinstance(s, torch.Tensor):  # e.g. a time being differentiated (Rosenbrock's df/dt)
            return (s * self.direction).to(self.dtype)
        return torch.scalar_tensor(s * self.direction, dtype=self.dtype, device=self.device)

    def checked_f0(self) -> torch.Tensor:
        """Evaluate ``f`` once at the initial point, checking what it returns."""
        lead = (self.batch,) if self.per_sample else ()
        s0 = self.s_eval[:, 0] if self.per_sample else self.s_host[0]
        out = self.f(self.user_time(s0), self.unflatten(self.y0, lead))
        self.nfe_counter[0] += 1
        if type(out) is torch.Tensor and out.shape == self.y0.shape and out.dtype == self.dtype:
            return out if self.direction > 0 else -out  # a single tensor, as it should be
        outs = list(out) if tuple_like(out) else [out]
        if tuple_like(out) != self.is_tuple or len(outs) != len(self.shapes):
            raise TypeError(
                f"f must return the same structure as y0 ({'a tuple of ' + str(len(self.shapes)) if self.is_tuple else 'a tensor'}), "
                f"got {type(out).__name__}"
            )
        for i, (o, shape) in enumerate(zip(outs, self.shapes)):
            want = torch.Size(lead) + shape
            where = f"part {i} of " if self.is_tuple else ""
            if not isinstance(o, torch.Tensor):
                raise TypeError(f"f returned {type(o).__name__} for {where}dy/dt: return a tensor")
            if o.shape != want:
                raise ValueError(
                    f"f returned shape {tuple(o.shape)} for {where}dy/dt but y has shape {tuple(want)}: "
                    "f(t, y) must return a tensor shaped like y"
                )
            if o.dtype != self.dtype:
                raise TypeError(
                    f"f returned dtype {o.dtype} for {where}dy/dt but y is {self.dtype}: cast inside f, "
                    f"e.g. return out.to(y.dtype)"
                )
        return self.flatten_out(out, lead)

    @property
    def numel(self) -> int:
        """Elements per sample (global: of the whole state)."""
        return sum(self.sizes)

    def flatten_out(self, out: Any, lead: tuple[int, ...]) -> torch.Tensor:
        flat = torch.cat([o.reshape((*lead, -1)) for o in out], -1) if self.is_tuple else out
        return flat if self.direction > 0 else -flat

    def func(self, count: bool = True, host_time: bool = True) -> Callable[[Any, torch.Tensor], torch.Tensor]:
        """``func(s, y) -> dy/ds`` in the loop's layout, counting evaluations unless
        ``count=False`` (a compiled step counts them itself). A field marked ``host_time`` (a
        lowered CDE term) is handed the global layout's float time itself, unless
        ``host_time=False`` (a traced step, where a float would be a guard)."""
        f, lead = self.f, ((self.batch,) if self.per_sample else ())
        counter: Any = self.nfe_counter if count else _NO_COUNT
        user_time, flatten = self.user_time, self.flatten_out
        if not self.is_tuple and self.direction > 0:
            if self.per_sample:

                def fast(s: Any, y: torch.Tensor) -> torch.Tensor:
                    counter[0] += 1
                    return f(user_time(s), y)

                return self._with_jacobian(fast, counter)
            scalar, dtype, device = torch.scalar_tensor, self.dtype, self.device
            host = host_time and getattr(f, "host_time", False)

            def fastest(s: float, y: torch.Tensor) -> torch.Tensor:  # the hot path
                counter[0] += 1
                if isinstance(s, torch.Tensor):
                    return f(s.to(dtype), y)
                if host:
                    return f(float(s), y)
                return f(scalar(s, dtype=dtype, device=device), y)

            return self._with_jacobian(fastest, counter)
        unflatten, per_sample = self.unflatten, self.per_sample

        def general(s: Any, y: torch.Tensor) -> torch.Tensor:
            counter[0] += 1
            rows = (y.shape[0],) if per_sample else lead
            return flatten(f(user_time(s), unflatten(y, rows)), rows)

        return self._with_jacobian(general, counter)

    def _with_jacobian(self, func: Callable, counter: Any) -> Callable:
        """Tag the loop's ``func`` with the user's Jacobian in the loop's layout (``func.jacobian(s,
        y)``: ``[N, N]``, per sample ``[B, N, N]``), or with ``"fd"`` (finite differences of
        ``func``), which :func:`solvers.jacobian.jacobians` uses instead of autograd. Only this problem's own field carries it: a field that wraps ``func``
        (a reversible grid) falls back to autograd, and the adjoint solves its augmented system
        with a copy of the solver without the option (``gradients.adjoint._adjoint_solver``).
        For autograd and ``"fd"`` on a 1-D state, ``func.copies`` (a
        :class:`~torchnde.solvers.jacobian.StateCopies`) evaluates the user's ``f`` on stacked
        states, counting into ``counter`` as ``func`` does."""
        if self.sde is not None:  # the stochastic solvers read the diffusion and noise here
            func.sde = self.sde  # type: ignore[attr-defined]
        user = self.jacobian
        if user is None or user == "fd":  # autograd or forward differences (solvers.jacobian)
            if not self.is_tuple and self.numel <= (
                COPIES_MAX if len(self.shapes[0]) <= 1 else COPIES_ANY_SHAPE
            ):
                f, user_time, sign = self.f, self.user_time, self.direction

                def call(s: Any, stack: torch.Tensor) -> torch.Tensor:
                    out = f(user_time(s), stack)
                    return out if sign > 0 else -out

                def count(k: int) -> None:
                    counter[0] += k

                func.copies = StateCopies(call, count)  # type: ignore[attr-defined]
            if user == "fd":
                func.jacobian = user  # type: ignore[attr-defined]
            return func
        per_sample, n, sign = self.per_sample, self.numel, self.direction
        user_time, unflatten = self.user_time, self.unflatten

        def jacobian(s: Any, y: torch.Tensor) -> torch.Tensor:
            lead = (y.shape[0],) if per_sample else ()
            out = user(user_time(s), unflatten(y, lead))
            want = (*lead, n, n)
            if not isinstance(out, torch.Tensor) or out.shape != want or out.dtype != y.dtype:
                got = (
                    f"{tuple(out.shape)} {out.dtype}" if isinstance(out, torch.Tensor) else type(out).__name__
                )
                raise ValueError(
                    f"the solver's jacobian(t, y) must return df/dy over the flattened state as a "
                    f"{y.dtype} tensor of shape {want}{' (one matrix per sample)' if per_sample else ''}, "
                    f"got {got}; for a tuple state, order rows and columns as the parts concatenated"
                )
            return out if sign > 0 else -out

        func.jacobian = jacobian  # type: ignore[attr-defined]
        return func

    # -- results ------------------------------------------------------------------------------

    def trivial_solution(self, dense: bool) -> Solution:
        ys = self.y0.unsqueeze(0)
        lead = (1, self.batch) if self.per_sample else (1,)
        status: Any = torch.zeros(self.batch, dtype=torch.int64) if self.per_sample else Status.SUCCESS
        return Solution(self.t_eval, self.unflatten(ys, lead), Stats(), status)

    def solution(self, raw: Raw) -> Solution:
        if self.per_sample:
            ys = raw.ys.permute(1, 0, 2)  # [n, B, N]
            lead: tuple[int, ...] = (self.n_out, self.batch)
        else:
            ys, lead = raw.ys, (self.n_out,)
        step_ts = step_ys = None
        if raw.step_s is not None:
            step_ts = raw.step_s * self.direction
            step_ys = self.unflatten(raw.step_y, tuple(raw.step_s.shape))
        evaluate = None
        if raw.dense is not None:
            evaluate = self._evaluator(raw.dense)
        sol = Solution(
            self.t_eval, self.unflatten(ys, lead), raw.stats, raw.status, step_ts, step_ys, evaluate
        )
        if raw.events is not None and self.per_sample:  # [B, K] and [B, K, N], NaN padded
            times, states = raw.events
            sol.event_ts = times
            sol.event_ys = self.unflatten(states, tuple(times.shape))
        elif raw.events is not None:
            times, states = raw.events
            sol.event_ts = torch.stack(times) if times else torch.empty(0, dtype=torch.float64)
            stacked = torch.stack(states) if states else self.y0.new_empty((0, *self.y0.shape))
            sol.event_ys = self.unflatten(stacked, (len(states),))
        return sol

    def _evaluator(self, dense: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Any], Any]:
        def evaluate(t: Any) -> Any:
            t = torch.as_tensor(t, dtype=torch.float64, device=self.device)
            flat = dense(t * self.direction)  # [*lead, numel]
            return self.unflatten(flat, tuple(flat.shape[:-1]))

        return evaluate


def check_times(
    t_eval: Any, per_sample: bool, batch: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None, float, list[float] | None]:
    """The user's times, forward times ``s = direction * t`` as float64 on the state's device
    (``None`` for 1-D ``t_eval`` in the global layout: see ``Problem.s_eval``), the direction,
    and (for 1-D ``t_eval``) ``s`` as a host list."""
    if not isinstance(t_eval, torch.Tensor):
        try:
            t_eval = torch.as_tensor(t_eval, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"t_eval must be a 1-D tensor of times, got {type(t_eval).__name__}") from err
    if t_eval.is_complex() or t_eval.dtype == torch.bool:
        raise TypeError(f"t_eval must be real, got dtype {t_eval.dtype}")
    allowed = (1, 2) if per_sample else (1,)
    if t_eval.ndim not in allowed:
        shape = "[n] or [batch, n]" if per_sample else "[n] (1-D)"
        raise ValueError(f"t_eval must have shape {shape}, got {tuple(t_eval.shape)}")
    if t_eval.shape[-1] < 1:
        raise ValueError("t_eval must contain at least the initial time")
    if per_sample and t_eval.ndim == 2 and t_eval.shape[0] != batch:
        raise ValueError(f"per-sample t_eval has {t_eval.shape[0]} rows but y0 has batch {batch}")
    if t_eval.ndim == 1:  # the common case: check on the host, one transfer
        host = list(map(float, t_eval.detach().tolist()))
        if not all(map(math.isfinite, host)):
            raise ValueError("t_eval must be finite")
        later = host[1:]
        rising = all(map(operator.lt, host, later))
        if not rising and not all(map(operator.gt, host, later)):
            raise ValueError(not_monotonic(host))
        direction = 1.0 if rising else -1.0
        host = [v * direction for v in host]
        if not per_sample:  # the loop reads ``host``; the tensor is built on first use
            return t_eval, None, direction, host
        s = torch.tensor(host, dtype=torch.float64, device=device).expand(batch, -1).contiguous()
        return t_eval, s, direction, host
    s = t_eval.detach().to(device=device, dtype=torch.float64)
    if not bool(torch.isfinite(s).all()):
        raise ValueError("t_eval must be finite")
    diffs = s.diff(dim=-1)
    direction = 1.0
    if diffs.numel():
        if bool((diffs > 0).all()):
            direction = 1.0
        elif bool((diffs < 0).all()):
            direction = -1.0
        else:
            rows = sorted({i for i, d in enumerate(diffs) if not bool((d > 0).all() or (d < 0).all())})
            raise ValueError(
                f"per-sample t_eval row(s) {first_few(rows)}: " + not_monotonic(s[rows[0]].tolist())
            )
    return t_eval, (s * direction).contiguous(), direction, None
