"""What both layouts share around a step: where steps must end (``step_ts``, ``jump_ts``,
the final time), the step function prepared once per solve (compiled, checkpointed), and the
progress bar."""

from __future__ import annotations

import math
import sys
import time as _time
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from ..solvers import AbstractSolver
from ..solvers.explicit_rk import ExplicitRungeKutta
from .graph_rewrites import inductor_backend
from .problem import Problem
from .raw import LoopOptions

__all__ = [
    "BACKEND",
    "dynamo_config",
    "STRETCH",
    "Progress",
    "checkpointed",
    "compile_cached",
    "compiled_step",
    "jump_sides",
    "prepared",
    "stops",
]

# A step that would end within a relative 1e-8 of a stop is stretched onto it, so that float
# rounding in ``s + dt`` never leaves a sliver of a step before an output or grid time.
STRETCH = 1.0 + 1e-8


def prepared(
    problem: Problem, solver: AbstractSolver, opts: LoopOptions, func: Callable
) -> tuple[Callable, Callable, Callable]:
    """``(step, dense_stages, derivative)`` for one solve: the solver's step (compiled when
    ``opts.compile``) and the extra evaluations, each under checkpointing when ``opts.checkpoint``."""
    step = compiled_step(problem, solver) if opts.compile else solver.step
    checkpoint_ = opts.checkpoint
    return (
        checkpointed(step, checkpoint_),
        checkpointed(solver.dense_stages, checkpoint_),
        checkpointed(func, checkpoint_),
    )


def stops(
    ctrl: Any, direction: float, s0: float, s1: float, dtype: torch.dtype
) -> tuple[list[float], dict[float, tuple[float, float]]]:
    """The global layout's grid and jump times strictly inside ``(s0, s1)``, in forward time; each
    jump maps to its ``jump_sides`` in the state's dtype. A jump at ``s0`` is in the jumps too
    (not the grid): the solve starts from its far side (a backward solve from a kink). So is a
    jump at ``s1``: the last step ends just short of it, so that no stage sees the far side of a
    kink the solve ends on (a CDE on a linear path stopped at an interior knot)."""
    stops: set[float] = set()
    jumps: dict[float, tuple[float, float]] = {}
    for name in ("step_ts", "jump_ts"):
        times = getattr(ctrl, name)
        if times is None:
            continue
        for t in (times * direction).tolist():
            if s0 < t < s1:
                stops.add(t)
            if name == "jump_ts" and s0 <= t <= s1:
                jumps[t] = jump_sides(t, dtype)
    return sorted(stops), jumps


def jump_sides(s_jump: Any, dtype: torch.dtype) -> tuple[Any, Any]:
    """``(where a step landing on the jump at forward time s_jump ends, where f is evaluated
    after it)``: the jump's neighbours in the state's (real) dtype, as float64 forward times
    exact in that dtype. ``f`` sees time in that dtype, so a neighbour in float64 would round
    onto the jump itself in float32 and the step before it would see its far side. Floats for
    a float, float64 tensors for a tensor of jumps."""
    real = torch.empty(0, dtype=dtype).real.dtype if dtype.is_complex else dtype
    if not real.is_floating_point:
        real = torch.float64
    j = torch.as_tensor(s_jump, dtype=torch.float64).to(real)
    inf = torch.full_like(j, math.inf)
    sides = torch.nextafter(j, -inf).double(), torch.nextafter(j, inf).double()
    if isinstance(s_jump, torch.Tensor):
        return sides
    return float(sides[0]), float(sides[1])


def checkpointed(fn: Callable, enabled: bool) -> Callable:
    """``fn`` under non-reentrant activation checkpointing when ``enabled`` and autograd is
    recording: its saved tensors are dropped after the call and recomputed by the backward pass,
    so the graph keeps only ``fn``'s inputs (a step's state and derivative, and the solver's
    state, which is an explicit argument: the replay is exact without a snapshot)."""
    if not enabled or not torch.is_grad_enabled():
        return fn

    def call(*args: Any) -> Any:
        # f is assumed deterministic (the RNG state would cost ~5 kB per step to keep)
        return checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=False)

    return call


_COMPILED: dict[tuple, Callable] = {}
_COMPILED_MAX = 16
# The backend ``torch.compile`` runs a step with (a test that checks tracing and guards, not
# code generation, sets "eager": it traces in a fraction of inductor's time).
BACKEND = "inductor"
_DYNAMO_CONFIG: list[Any] = []


def dynamo_config() -> Any:
    """The context a compiled step or block runs in: an integer attribute of an ``nn.Module`` (a
    call counter, ``self.nfe += 1``) is a traced input, not a constant; otherwise every call of the
    field changes a guarded value and each solve recompiles until dynamo's recompile limit, then
    runs eager. Built on first use: importing ``torch._dynamo`` costs over a second, which
    ``import torchnde`` does not pay unless something compiles."""
    if not _DYNAMO_CONFIG:  # torch loads its _dynamo submodule on first access
        _DYNAMO_CONFIG.append(torch._dynamo.config.patch(allow_unspec_int_on_nn_module=True))
    return _DYNAMO_CONFIG[0]


def compile_cached(
    key: tuple, problem: Problem, solver: AbstractSolver, build: Callable[[], tuple], dynamic: bool,
    inductor: dict[str, Any] | None = None,
) -> tuple:  # fmt: skip
    """The functions ``build()`` returns under ``torch.compile`` (when the backend is inductor:
    the graph rewrites of :mod:`.graph_rewrites`, then inductor with the ``inductor`` options),
    cached under ``key`` (which
    must hold everything their trace depends on); the solver's constants are built first
    (:meth:`AbstractSolver.prepare`), so that no trace records their construction. The cache
    holds at most ``_COMPILED_MAX`` entries (oldest evicted), since an entry keeps its vector
    field alive. Call them under :func:`dynamo_config`."""
    key = (*key, BACKEND)
    compiled = _COMPILED.get(key)
    if compiled is None:
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.pop(next(iter(_COMPILED)))
        solver.prepare(problem.y0)
        backend = inductor_backend(inductor) if BACKEND == "inductor" else BACKEND
        compiled = _COMPILED[key] = tuple(
            _Watched(torch.compile(_own_code(fn), dynamic=dynamic, backend=backend), fn.__name__)
            for fn in build()
        )
    return compiled


def _own_code(fn: Callable) -> Callable:
    """``fn`` with a code object of its own: dynamo keeps its compiled graphs, and counts them
    against its recompile limit, per code object, which every cache entry's closure of the same
    function would otherwise share (after eight fields or shapes, a ninth would run eager)."""
    return types.FunctionType(
        fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )


RECOMPILED = (
    "solve(compile=True) compiled its {name!r} function again for a solve of the same shapes: the "
    "trace depends on a Python value that changed since, typically a counter in f kept in a global "
    "variable, which a trace reads as a constant. Every such solve recompiles (seconds) until "
    "torch's recompile limit, then runs eager. Keep the counter on the field (an attribute of its "
    "nn.Module or object, self.nfe += 1) or in a closure, or read sol.stats.nfe."
)


class _Watched:
    """A compiled function that warns once (``RECOMPILED``) when a call compiles a new graph for
    calls like one it already compiled for (the same flags, grad mode, shapes and inputs that
    require grad): a guard that re-triggers on every solve would otherwise cost seconds per
    solve without a word. ``seen`` holds the kinds of call that compiled (empty before the first
    call); a call that compiles nothing costs two dictionary reads."""

    def __init__(self, compiled: Callable, name: str):
        self.compiled, self.name, self.seen, self.warned = compiled, name, set(), False

    def __call__(self, *args: Any) -> Any:
        stats = torch._dynamo.utils.counters["stats"]  # loaded with torch.compile
        graphs = stats["unique_graphs"]
        out = self.compiled(*args)
        if stats["unique_graphs"] != graphs:
            kind = (torch.is_grad_enabled(), *((a.shape, a.requires_grad) if isinstance(a, torch.Tensor) else a
                                               for a in args if isinstance(a, (bool, torch.Tensor))))  # fmt: skip
            if kind in self.seen and not self.warned:
                self.warned = True
                warnings.warn(RECOMPILED.format(name=self.name), RuntimeWarning, stacklevel=3)
            self.seen.add(kind)
        return out


def compiled_step(problem: Problem, solver: AbstractSolver) -> Callable:
    """``solver.step`` under ``torch.compile``, cached by everything the trace depends on.

    The step traces as one graph (see :func:`compile_cached`), and a field's integer attributes
    are unspecialised (:func:`dynamo_config`), so a field that counts its calls compiles once.
    """
    key = (type(solver), id(problem.f), problem.per_sample, problem.direction, problem.is_tuple,
           tuple(problem.shapes), problem.batch, problem.dtype, problem.device)  # fmt: skip

    def build() -> tuple[Callable]:
        uncounted = problem.func(count=False, host_time=False)

        def step(s: Any, y: torch.Tensor, f0: torch.Tensor, h: Any, need_error: bool, state: Any) -> Any:
            return solver.step(uncounted, s, y, f0, h, need_error, state)

        return (step,)

    (compiled,) = compile_cached(key, problem, solver, build, dynamic=True)  # floats s, h: symbolic
    evals = solver.evaluations_per_step or 0
    counter = problem.nfe_counter
    # A float step size that reaches an operator's scalar argument is specialised by inductor (a
    # recompile for every new value): the explicit Runge–Kutta engine takes 0-d tensors instead.
    tensor_time = isinstance(solver, ExplicitRungeKutta)

    def call(_func: Callable, s: Any, y: torch.Tensor, f0: torch.Tensor, h: Any, need_error: bool,
             state: Any = None) -> Any:  # fmt: skip
        counter[0] += evals
        if tensor_time and not isinstance(h, torch.Tensor):  # global layout: 0-d tensors, which a
            s, h = as_scalar(s, y.device), as_scalar(h, y.device)  # trace never specialises on
        with dynamo_config():
            return compiled(s, y, f0, h, need_error, state)

    return call


def as_scalar(x: float, device: torch.device) -> torch.Tensor:
    """``x`` as a float64 0-d tensor on ``device``."""
    return torch.tensor(x, dtype=torch.float64, device=device)


class Progress:
    """A dependency-free progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, s0: float, s1: float, enabled: bool):
        self.s0, self.span, self.enabled, self.last = s0, max(s1 - s0, 1e-300), enabled, 0.0

    def update(self, s: float, steps: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = _time.perf_counter()
        if not force and now - self.last < 0.1:
            return
        self.last = now
        frac = min(max((s - self.s0) / self.span, 0.0), 1.0)
        bar = "#" * int(30 * frac)
        sys.stderr.write(f"\rsolve [{bar:<30}] {100 * frac:5.1f}%  steps={steps}")
        if force:
            sys.stderr.write("\n")
        sys.stderr.flush()
